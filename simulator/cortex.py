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

The defaults are the ferret fUS design (one session, 1 frame/s, a gamma kernel);
``CortexSettings.fmri()`` is an fMRI one: parcels at a TR of 1.49 s through the canonical (Glover)
HRF, and the sounds split across several sessions, which the teacher hears in order.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from scipy.signal import lfilter
from scipy.stats import gamma

from encoders.hrf import glover_kernel
from replay.checks import check_choice, invalid_value
from replay.store import RecordingWriter, StoreError
from replay.trials import frame_window

from .learner import Learner
from .model import layer_names
from .pretrain import load_checkpoint
from .sounds import make_sound_set

# Teacher streams live in their own seed range so no learner seed can share them.
TEACHER_SEED_OFFSET = 7_000_001
MODALITIES = ("fus", "fmri")
KERNELS = ("gamma", "glover")
FMRI_TR_S = 1.49  # the Courtois NeuroMod TR (Freteault et al. 2025)


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
    modality: str = "fus"      # the store's; "fmri" labels the units as parcels
    hrf: str = "gamma"         # "gamma" (hrf_peak_s, hrf_length_s) or "glover" (canonical BOLD)
    sessions: int = 1          # per subject; the sounds are split between them

    @classmethod
    def fmri(cls, **changes) -> CortexSettings:
        """An fMRI design: TR 1.49 s, the Glover HRF, 4 sessions of their own sounds, and 6 s of
        silence before and 14 s after each sound: 20 s from one sound's end to the next one's
        start, after which the response and its undershoot are under 2.5% of their peak (16 s
        would leave 7-13%). ``changes`` override any of these.

        >>> s = CortexSettings.fmri(sessions=2)
        >>> s.modality, round(1 / s.frame_rate_hz, 2), s.hrf, s.sessions, s.pre_s, s.post_s
        ('fmri', 1.49, 'glover', 2, 6.0, 14.0)
        """
        return replace(cls(modality="fmri", hrf="glover", frame_rate_hz=1.0 / FMRI_TR_S,
                           sessions=4, pre_s=6.0, post_s=14.0), **changes)


def hrf_kernel(frame_rate: float, peak_s: float = 4.0, length_s: float = 6.0) -> np.ndarray:
    """Gamma-shaped hemodynamic kernel sampled at the frame rate, peak at ``peak_s``, sum 1.

    >>> np.round(hrf_kernel(1.0), 2)
    array([0.  , 0.01, 0.12, 0.27, 0.32, 0.28], dtype=float32)
    """
    t = np.arange(int(round(length_s * frame_rate))) / frame_rate
    shape = 6.0  # gamma with mode (shape - 1) * scale == peak_s
    k = gamma.pdf(t, shape, scale=peak_s / (shape - 1))
    return (k / k.sum()).astype(np.float32)


def response_kernel(settings: CortexSettings) -> np.ndarray:
    """The hemodynamic kernel of ``settings`` at its frame rate: the gamma one of `hrf_kernel`,
    or the Glover HRF the encoder's ``hrf="glover"`` design assumes (`encoders.hrf`)."""
    check_choice("hrf", settings.hrf, KERNELS)
    if settings.hrf == "glover":
        return glover_kernel(settings.frame_rate_hz)
    return hrf_kernel(settings.frame_rate_hz, settings.hrf_peak_s, settings.hrf_length_s)


def session_sounds(n_sounds: int, sessions: int) -> list[np.ndarray]:
    """The sounds of each session: consecutive blocks of the stimulus indices, as equal as can be
    (the sound set's categories are already in a random order, so each block mixes them).

    >>> [s.tolist() for s in session_sounds(7, 3)]
    [[0, 1, 2], [3, 4], [5, 6]]
    """
    if not (isinstance(sessions, int) and 1 <= sessions <= n_sounds):
        raise invalid_value("sessions", f"integers from 1 to the number of sounds ({n_sounds}), "
                            "so that each session hears its own sounds", sessions)
    return np.array_split(np.arange(n_sounds), sessions)


def unit_labels(settings: CortexSettings) -> list[str]:
    """One region label per unit: ``"synthetic"`` for fUS voxels, ``"parcel-001"``, ... for fMRI
    parcels (at least three digits, as many as the count needs)."""
    if settings.modality == "fmri":
        width = max(3, len(str(settings.voxels)))
        return [f"parcel-{i + 1:0{width}d}" for i in range(settings.voxels)]
    return ["synthetic"] * settings.voxels


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
    check_choice("modality", settings.modality, MODALITIES)
    response_kernel(settings)
    session_sounds(settings.sounds, settings.sessions)
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
    with RecordingWriter(out, modality=settings.modality, overwrite=True) as writer:
        writer.write_stimuli(list(sounds.audio), sounds.sample_rate, sounds.names, sounds.categories)
        writer.attrs["synthetic"] = {**asdict(settings), "checkpoint": str(checkpoint),
                                     "noise_ceiling_r": ceiling}
        for k in range(settings.subjects):
            subject = f"sub-{k + 1:02d}"
            rng = np.random.default_rng([settings.seed, k])
            sessions = _simulate_subject(sounds, checkpoint, settings, k, rng, log)
            coords = np.stack(np.unravel_index(np.arange(settings.voxels), (10, 10, -(-settings.voxels // 100))),
                              axis=1).astype(np.float32)
            writer.write_voxels(subject, coords, unit_labels(settings))
            for name, (responses, events) in enumerate(sessions):
                writer.write_session(subject, str(name), responses, settings.frame_rate_hz, events)


def _simulate_subject(sounds, checkpoint, settings: CortexSettings, k: int, rng, log):
    """``[(responses, events)]`` of each of subject ``k``'s sessions, heard in order by one
    teacher. The draws from ``rng`` come in the same order whatever the number of sessions (every
    presentation order, the read-out, every session's noise), so one session is the design of
    before sessions existed, draw for draw."""
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

    period = settings.pre_s + settings.duration_s + settings.post_s
    n_trials, done = settings.sounds * settings.repeats, 0
    timelines, events = [], []
    for heard in session_sounds(settings.sounds, settings.sessions):
        order, repeat = presentation_order(len(heard), settings.repeats, rng)
        stimulus = heard[order]
        onset_s = np.arange(len(stimulus)) * period + settings.pre_s  # each session its own clock
        n_frames = int(np.ceil(len(stimulus) * period * fr))
        timeline = np.zeros((n_frames, start.shape[1]), dtype=np.float32)
        for t, s in enumerate(stimulus):
            # The same frame grid as the replay: the sound starts `offset` into frame `i`.
            i = frame_window(onset_s[t], 0.0, 0.0, fr, n_frames).start
            f = (read(sounds.audio[s], onset_s[t] - i / fr) - mu) / sd
            timeline[i:i + len(f)] = f[: n_frames - i]
            teacher.learn(sounds.audio[s])  # across sessions too: one teacher per subject
            done += 1
            if log and done % max(1, n_trials // 4) == 0:
                log(f"synth: subject {k + 1}/{settings.subjects} trial {done}/{n_trials}")
        timelines.append(timeline)
        events.append({"onset_s": onset_s, "stimulus": stimulus, "repeat": repeat,
                       "duration_s": np.full(len(stimulus), settings.duration_s)})

    readout = rng.standard_normal((start.shape[1], settings.rank)) @ rng.standard_normal(
        (settings.rank, settings.voxels)) / np.sqrt(start.shape[1] * settings.rank)
    kernel = response_kernel(settings)
    out = []
    for timeline, session_events in zip(timelines, events):
        signal = lfilter(kernel, [1.0], timeline @ readout, axis=0)
        # Unit variance per session, as fMRI runs are normalised one by one.
        signal = (signal - signal.mean(0)) / (signal.std(0) + 1e-12)
        noise = rng.standard_normal(signal.shape) / np.sqrt(settings.snr)
        out.append(((signal + noise).astype(np.float32), session_events))
    return out
