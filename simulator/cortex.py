"""`cortexreplay synth`: a synthetic recording whose ground truth is known.

Each voxel reads out a *teacher* wav2vec 2.0's activations (at one layer, taken before the teacher
learns from the sound), through a hemodynamic kernel at the brain's frame rate, plus noise. The
teacher starts from the learner's checkpoint. With ``plasticity > 0`` it keeps learning along the
subject's presentation order: ``teacher_steps`` self-supervised steps per sound at rate
``plasticity`` with its own mask randomness, then relaxes toward its starting weights
(``theta <- theta0 + retention (theta - theta0)``). The relaxation makes its state reflect its
*recent* history, so the order of presentation matters (without it the drift is generic and a
shuffled learner gains as much as a matched one; see docs/synthetic.md). ``plasticity == 0`` is a
static cortex.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.signal import lfilter
from scipy.stats import gamma

from replay.checks import check_choice
from replay.store import RecordingWriter, StoreError
from replay.trials import frame_window

from .learner import Learner
from .model import layer_names
from .pretrain import load_checkpoint
from .sounds import make_sound_set

# Teacher streams live in their own seed range so no learner seed can share them.
TEACHER_SEED_OFFSET = 7_000_001


@dataclass(frozen=True)
class CortexSettings:
    """Design of the synthetic experiment (defaults mirror the ferret fUS study)."""

    seed: int = 0
    sounds: int = 320
    duration_s: float = 10.0
    subjects: int = 2
    voxels: int = 1000
    repeats: int = 2
    plasticity: float = 3e-3   # teacher learning rate; 0: static cortex
    retention: float = 0.9
    snr: float = 1.0           # signal variance / noise variance per voxel
    teacher_steps: int = 3
    read_layer: str = "layer_3"
    rank: int = 16             # rank of the layer-to-voxel read-out
    frame_rate_hz: float = 1.0
    pre_s: float = 7.0         # silence before each sound
    post_s: float = 3.0        # silence after each sound
    hrf_peak_s: float = 4.0
    hrf_length_s: float = 6.0


def hrf_kernel(frame_rate: float, peak_s: float = 4.0, length_s: float = 6.0) -> np.ndarray:
    """Gamma-shaped hemodynamic kernel sampled at the frame rate, peak at ``peak_s``, sum 1.

    >>> np.round(hrf_kernel(1.0), 2)
    array([0.  , 0.01, 0.12, 0.27, 0.32, 0.28], dtype=float32)
    """
    t = np.arange(int(round(length_s * frame_rate))) / frame_rate
    shape = 6.0  # gamma with mode (shape - 1) * scale == peak_s
    k = gamma.pdf(t, shape, scale=peak_s / (shape - 1))
    return (k / k.sum()).astype(np.float32)


def presentation_order(n_sounds: int, repeats: int, rng: np.random.Generator):
    """(stimulus, repeat) per trial: every sound ``repeats`` times, in a random order."""
    stimulus = rng.permutation(np.repeat(np.arange(n_sounds), repeats))
    repeat = np.zeros_like(stimulus)
    seen = np.zeros(n_sounds, dtype=np.int64)
    for t, s in enumerate(stimulus):
        repeat[t], seen[s] = seen[s], seen[s] + 1
    return stimulus, repeat


def synthesize(out: str | Path, checkpoint: str | Path, settings: CortexSettings = CortexSettings(),
               overwrite: bool = False, log=print) -> Path:
    """Write a synthetic recording store at ``out`` and return its path."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest, and the caller's is restored
    try:
        return _synthesize(out, checkpoint, settings, overwrite, log)
    finally:
        torch.set_num_threads(threads)


def _synthesize(out, checkpoint, settings: CortexSettings, overwrite: bool, log) -> Path:
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise StoreError(f"{out} already exists; pass --force (overwrite=True) to replace it")
    names = layer_names(load_checkpoint(checkpoint)[0])
    check_choice("read_layer", settings.read_layer, names)
    # Written beside the target and renamed into place at the end: an interrupted synth never
    # leaves something that looks like a finished store.
    partial = out.with_name(out.name + ".partial")
    _write_store(partial, checkpoint, settings, log)
    if out.exists():
        shutil.rmtree(out)
    os.replace(partial, out)
    return out


def _write_store(out: Path, checkpoint, settings: CortexSettings, log) -> None:
    sounds = make_sound_set(settings.sounds, settings.duration_s, seed=settings.seed)
    ceiling = float(np.sqrt(settings.snr / (1.0 + settings.snr)))
    with RecordingWriter(out, modality="fus", overwrite=True) as writer:
        writer.write_stimuli(list(sounds.audio), sounds.sample_rate, sounds.names, sounds.categories)
        writer.attrs["synthetic"] = {**asdict(settings), "checkpoint": str(checkpoint),
                                     "noise_ceiling_r": ceiling}
        for k in range(settings.subjects):
            subject = f"sub-{k + 1:02d}"
            rng = np.random.default_rng([settings.seed, k])
            responses, events = _simulate_subject(sounds, checkpoint, settings, k, rng, log)
            coords = np.stack(np.unravel_index(np.arange(settings.voxels), (10, 10, -(-settings.voxels // 100))),
                              axis=1).astype(np.float32)
            writer.write_voxels(subject, coords, ["synthetic"] * settings.voxels)
            writer.write_session(subject, "0", responses, settings.frame_rate_hz, events)


def _simulate_subject(sounds, checkpoint, settings: CortexSettings, k: int, rng, log):
    model, opt_state, _ = load_checkpoint(checkpoint)
    mode = "continuous" if settings.plasticity > 0 else "frozen"
    teacher = Learner(model, mode, lr=settings.plasticity or 1e-3, steps_per_sound=settings.teacher_steps,
                      retention=settings.retention, optimizer_state=opt_state,
                      seed=TEACHER_SEED_OFFSET + 1000 * settings.seed + k)
    fr, sr = settings.frame_rate_hz, sounds.sample_rate

    def read(wave, offset=0.0):
        return teacher.features(wave, sr, fr, offset)[settings.read_layer]

    # z-score the read-out layer with the starting teacher's statistics over the stimuli.
    start = np.concatenate([read(w) for w in sounds.audio])
    mu, sd = start.mean(0), start.std(0) + 1e-6

    stimulus, repeat = presentation_order(settings.sounds, settings.repeats, rng)
    period = settings.pre_s + settings.duration_s + settings.post_s
    onset_s = np.arange(len(stimulus)) * period + settings.pre_s
    n_frames = int(np.ceil(len(stimulus) * period * fr))
    timeline = np.zeros((n_frames, start.shape[1]), dtype=np.float32)
    for t, s in enumerate(stimulus):
        # The same frame grid as the replay: the sound starts `offset` into frame `i`.
        i = frame_window(onset_s[t], 0.0, 0.0, fr, n_frames).start
        f = (read(sounds.audio[s], onset_s[t] - i / fr) - mu) / sd
        timeline[i:i + len(f)] = f[: n_frames - i]
        teacher.learn(sounds.audio[s])
        if log and (t + 1) % max(1, len(stimulus) // 4) == 0:
            log(f"synth: subject {k + 1}/{settings.subjects} trial {t + 1}/{len(stimulus)}")

    readout = rng.standard_normal((start.shape[1], settings.rank)) @ rng.standard_normal(
        (settings.rank, settings.voxels)) / np.sqrt(start.shape[1] * settings.rank)
    signal = lfilter(hrf_kernel(fr, settings.hrf_peak_s, settings.hrf_length_s), [1.0],
                     timeline @ readout, axis=0)
    signal = (signal - signal.mean(0)) / (signal.std(0) + 1e-12)
    noise = rng.standard_normal(signal.shape) / np.sqrt(settings.snr)
    responses = (signal + noise).astype(np.float32)
    events = {"onset_s": onset_s, "stimulus": stimulus, "repeat": repeat,
              "duration_s": np.full(len(stimulus), settings.duration_s)}
    return responses, events
