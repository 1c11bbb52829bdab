"""The training modes of a run, as in "Don't stop the training", and the learner each one needs.

| mode         | network                                              | learns during the replay |
|--------------|------------------------------------------------------|--------------------------|
| `frozen`     | the pretrained checkpoint (the study's "Pretrained") | no                       |
| `continuous` | the checkpoint                                       | after every sound, kept  |
| `reset`      | the checkpoint                                       | on every sound, undone before the next |
| `random`     | untrained weights of the same architecture (null)    | no                       |
| `offline`    | the checkpoint fine-tuned on all the recording's sounds for `learning.offline_epochs` epochs, in a seeded order | no |

`offline` has heard every sound, but not in the animal's history; `reset` has only transient
adaptation; `random` says what architecture alone explains.
"""
from __future__ import annotations

import numpy as np

from replay.trials import resample

from .learner import Learner
from .model import autocast_forwards, freeze_except, init_model, subset_optimizer_state
from .pretrain import load_checkpoint

RUN_MODES = ("frozen", "continuous", "reset", "random", "offline")


def build_learner(cfg: dict, seed: int, recording=None, log=None) -> Learner:
    """The learner of a run's resolved config, prepared for its mode (``offline`` fine-tunes on
    ``recording``'s sounds here, before the replay starts)."""
    model, optimizer_state, _ = load_checkpoint(cfg["model"]["checkpoint"])
    mode = cfg["mode"]
    if mode == "random":
        temperature = model.quantizer.temperature
        model = init_model(model.config, seed)
        model.set_gumbel_temperature(temperature)
        optimizer_state = None
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
