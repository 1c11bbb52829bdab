"""The training modes of a run, as in "Don't stop the training", and the learner each one needs.

| mode         | network                                              | learns during the replay |
|--------------|------------------------------------------------------|--------------------------|
| `frozen`     | the pretrained checkpoint (the study's "Pretrained") | no                       |
| `continuous` | the checkpoint                                       | after every sound, kept  |
| `reset`      | the checkpoint                                       | on every sound, undone before the next |
| `random`     | untrained weights of the same architecture (null)    | no                       |
| `offline`    | the checkpoint fine-tuned on all the recording's sounds for `learning.offline_epochs` epochs, in a seeded order | no |

| `brain-aligned` | the checkpoint fine-tuned on the brain: from `alignment.train_from` to `alignment.layer` plus a causal temporal head, MSE on the frames of the subject's other sessions, AdamW, early stopping on validation sounds | no |
| `brain-continuous` | the checkpoint | after every trial, `steps_per_sound` supervised steps on that trial's frames (closed loop) |

`offline` has heard every sound, but not in the animal's history; `reset` has only transient
adaptation; `random` says what architecture alone explains. `brain-aligned` also scores its head
on the replayed (held-out) session against the same head trained on the frozen network and on a
random-init one (R² per voxel, simulator.brain_tuning). The self-supervised modes (`continuous`,
`reset`, `offline`) need wav2vec 2.0's pretraining loss; SoundNet (simulator.soundnet) takes the
others.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from replay.trials import replay_session, resample

from .brain_tuning import BrainAligner, BrainLearner, heldout_sums, train_offline
from .learner import Learner
from .model import (autocast_forwards, freeze_except, init_model, names_its_layers,
                    subset_optimizer_state)
from .pretrain import load_checkpoint
from .soundnet import build_soundnet, is_soundnet_file, load_soundnet

RUN_MODES = ("frozen", "continuous", "reset", "random", "offline", "brain-aligned",
             "brain-continuous")
BRAIN_MODES = ("brain-aligned", "brain-continuous")
SELF_SUPERVISED = ("continuous", "reset", "offline")  # modes that need wav2vec 2.0's loss
# The networks whose held-out R² a brain-aligned run reports, its own first.
HELDOUT_NETWORKS = ("brain-aligned", "frozen", "random")


def load_network(checkpoint: str):
    """``(model, optimizer state or None)`` of ``model.checkpoint``: a SoundNet weights file, or
    a wav2vec 2.0 checkpoint directory."""
    if is_soundnet_file(checkpoint):
        return load_soundnet(checkpoint), None
    model, optimizer_state, _ = load_checkpoint(checkpoint)
    return model, optimizer_state


def random_network(model, seed: int):
    """Untrained weights of ``model``'s architecture, deterministic from ``seed``."""
    if names_its_layers(model):
        return build_soundnet(seed, heads=model.heads)
    temperature = model.quantizer.temperature
    model = init_model(model.config, seed)
    model.set_gumbel_temperature(temperature)
    return model


def build_learner(cfg: dict, seed: int, recording=None, log=None, subject: str | None = None) -> Learner:
    """The learner of a run's resolved config, prepared for its mode (``offline`` fine-tunes on
    ``recording``'s sounds here, before the replay starts; ``brain-aligned`` fine-tunes on the
    frames of ``subject``'s training sessions and leaves its held-out scores in the learner's
    ``heldout`` and ``alignment`` attributes)."""
    model, optimizer_state = load_network(cfg["model"]["checkpoint"])
    mode = cfg["mode"]
    if mode in BRAIN_MODES:
        return _brain_learner(cfg, seed, model, recording, subject, log)
    if mode == "random":
        model, optimizer_state = random_network(model, seed), None
    optimizer_state = subset_optimizer_state(
        optimizer_state, freeze_except(model, cfg["model"].get("trainable_layers", ["all"])))
    model.to(cfg["model"]["device"])
    autocast_forwards(model, cfg["model"]["autocast"])
    learning = cfg["learning"]
    learner = Learner(model, {"random": "frozen", "offline": "continuous"}.get(mode, mode),
                      lr=learning["lr"], steps_per_sound=learning["steps_per_sound"],
                      retention=learning["retention"], weight_decay=learning["weight_decay"],
                      optimizer_state=optimizer_state, seed=seed,
                      mask_prob=learning["mask_prob"], mask_span=learning["mask_span"])
    if mode == "offline":
        fine_tune(learner, recording, learning["offline_epochs"], seed, cfg["model"]["sample_rate"], log)
        learner.mode = "frozen"
    return learner


def fine_tune(learner: Learner, recording, epochs: int, seed: int, sample_rate: int, log=None) -> None:
    """``epochs`` passes of the learner's update over every stimulus, each pass in a seeded order."""
    if recording is None:
        raise ValueError("the 'offline' mode needs the recording whose sounds it fine-tunes on")
    rng = np.random.default_rng([seed, 0x0FF11E])
    # Fine-tuning accumulates: relaxing after every sound would leave mostly the last few sounds.
    retention, learner.retention = learner.retention, 1.0
    try:
        for epoch in range(epochs):
            for s in rng.permutation(recording.n_stimuli):
                learner.learn(resample(recording.audio(int(s)), recording.sample_rate, sample_rate))
            if log:
                log(f"offline: epoch {epoch + 1}/{epochs} done")
    finally:
        learner.retention = retention


def _on_device(cfg: dict, model):
    """``model`` on the run's device, its forward passes under the run's autocast (SoundNet
    takes none: `simulator.run` refuses it)."""
    model.to(cfg["model"]["device"])
    if not names_its_layers(model):
        autocast_forwards(model, cfg["model"]["autocast"])
    return model


def _aligner(cfg: dict, model, n_voxels: int, learn_network: bool = True) -> BrainAligner:
    al, learning = cfg["alignment"], cfg["learning"]
    return BrainAligner(model, n_voxels, al["layer"], al["train_from"], learn_network, al["kernel"],
                        learning["lr"], al["head_lr"], learning["weight_decay"],
                        cfg["model"]["sample_rate"])


def _brain_learner(cfg: dict, seed: int, model, recording, subject, log) -> Learner:
    learning = cfg["learning"]
    # On the device before the learner copies any weight (its buffers must live beside them).
    model = _on_device(cfg, model)
    if cfg["mode"] == "brain-continuous":  # a live run (no subject) sizes the head at its first trial
        n_voxels = None if subject is None else recording.responses(
            subject, cfg["data"]["session"]).shape[1]
        return BrainLearner(model, lambda n: _aligner(cfg, model, n), n_voxels,
                            learning["steps_per_sound"], learning["retention"], seed)
    if recording is None or subject is None:
        raise ValueError("the brain-aligned mode trains on a stored recording's sessions before "
                         "the replay; a live run can use brain-continuous")
    n_voxels = recording.responses(subject, cfg["data"]["session"]).shape[1]
    train, validation, heldout = alignment_trials(cfg, recording, subject, seed)
    al = cfg["alignment"]
    sums, history = {}, {}
    networks = {"brain-aligned": model,
                "frozen": _on_device(cfg, load_network(cfg["model"]["checkpoint"])[0]),
                "random": _on_device(cfg, random_network(model, seed))}
    for name in HELDOUT_NETWORKS:
        aligner = _aligner(cfg, networks[name], n_voxels, learn_network=name == "brain-aligned")
        history[name] = train_offline(aligner, train, validation, al["epochs"], al["patience"],
                                      seed, log, name)
        sums[name] = heldout_sums(aligner, heldout)
    for p in model.parameters():
        p.requires_grad_(True)
    learner = Learner(model, "frozen", seed=seed)
    learner.heldout = {"sse": np.stack([sums[n]["sse"] for n in HELDOUT_NETWORKS]),
                       **{k: sums["frozen"][k] for k in ("sum_y", "sum_y2", "count")},
                       "stimulus": np.array([t.stimulus for t in heldout], dtype=np.int64),
                       "event": np.array([t.event for t in heldout], dtype=np.int64)}
    learner.alignment = {"networks": list(HELDOUT_NETWORKS), "history": history,
                         "sessions": alignment_sessions(cfg, recording, subject),
                         "train_trials": len(train), "validation_trials": len(validation)}
    return learner


def alignment_sessions(cfg: dict, recording, subject: str) -> list[str]:
    """The sessions a brain mode trains on: ``alignment.sessions``, or every session of
    ``subject`` but the replayed one (``["others"]``); one-line errors for any other choice."""
    wanted, heldout = cfg["alignment"]["sessions"], cfg["data"]["session"]
    have = recording.sessions(subject)
    sessions = [s for s in have if s != heldout] if wanted == ["others"] else list(wanted)
    unknown = sorted(set(sessions) - set(have))
    if unknown:
        raise ValueError(f"alignment.sessions names {unknown}, but subject {subject!r} has "
                         f"sessions {have}")
    if heldout in sessions:
        raise ValueError(f"alignment.sessions includes data.session ({heldout!r}): the replayed "
                         "session is the held-out one and must not be trained on")
    if not sessions:
        raise ValueError(f"the brain-aligned mode trains on sessions other than data.session "
                         f"({heldout!r}), but subject {subject!r} has only {have}; record or "
                         "import more sessions, or replay another one")
    return sessions


def alignment_trials(cfg: dict, recording, subject: str, seed: int):
    """``(train, validation, heldout)`` trials of a brain-aligned run: the training sessions'
    trials split by sound (``alignment.validation_fraction`` of their sounds validate, drawn by
    ``seed``), and the replayed session's, in recorded order; each session's frames z-scored
    (`zscored`)."""
    def trials(session):
        return zscored(list(replay_session(recording, subject, session, "recorded",
                                           sample_rate=cfg["model"]["sample_rate"],
                                           tail_s=cfg["data"]["tail_s"])))

    pool = [t for s in alignment_sessions(cfg, recording, subject) for t in trials(s)]
    held = validation_sounds(cfg, [t.stimulus for t in pool], seed)
    train = [t for t in pool if t.stimulus not in held]
    validation = [t for t in pool if t.stimulus in held]
    return train, validation, trials(cfg["data"]["session"])


def zscored(trials: list) -> list:
    """``trials`` of one session with their frames z-scored per voxel over the session's trial
    frames, as fMRI encoding studies z-score each run: a session's offset and gain (scanner
    drift, a ferret's slice) are not what a head trained on other sessions should be blamed for.
    Non-finite values stay so; a constant voxel becomes 0."""
    Y = np.concatenate([t.frames for t in trials]).astype(np.float64)
    mean, sd = np.nanmean(Y, axis=0), np.nanstd(Y, axis=0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    return [replace(t, frames=((t.frames - mean) / sd).astype(np.float32)) for t in trials]


def validation_sounds(cfg: dict, stimuli, seed: int) -> set[int]:
    """The training sessions' sounds kept for validation: ``alignment.validation_fraction`` of
    the distinct ``stimuli``, drawn by ``seed``; a one-line error when no sound, or every one,
    would be."""
    sounds = np.unique(np.asarray(stimuli, dtype=np.int64))
    fraction = cfg["alignment"]["validation_fraction"]
    n_val = int(round(fraction * len(sounds)))
    if not 0 < n_val < len(sounds):
        raise ValueError(f"alignment.validation_fraction={fraction} leaves {n_val} of the "
                         f"training sessions' {len(sounds)} sounds to validate on; choose a "
                         "fraction that leaves sounds on both sides")
    return set(np.random.default_rng([seed, 0x5A1]).permutation(sounds)[:n_val].tolist())
