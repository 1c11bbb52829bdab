"""The replay engine: a session's events as trials, in the recorded or another order.

Non-finite frames (NaN, inf): a voxel non-finite in more than ``MAX_NONFINITE_FRACTION`` (0.1) of a
session's frames is masked for the whole replay (0.0 in every trial's frames; its scores are
reported NaN). Every other non-finite value stays NaN: the encoder drops any frame that still holds
one from scoring and learning, and counts it. A session with every voxel masked, or with more than
half of its frames non-finite after masking, is refused (``StoreError``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.signal import resample_poly

from .checks import invalid_value
from .clock import Pacer
from .ordering import event_order
# The policy's scan lives beside validate(), which applies it too; the constant is re-exported here.
from .store import MAX_NONFINITE_FRACTION, _scan_nonfinite

DEFAULT_TAIL_S = 6.0  # hemodynamic tail kept after each sound (covers an fUS/BOLD response)


@dataclass(frozen=True)
class Trial:
    """One sound and the brain frames that belong to it.

    ``frames`` run from the sound's onset to ``duration_s + tail_s`` later (clipped to the
    recording), so they include the hemodynamic tail after the sound; masked voxels are 0.0, other
    non-finite values stay NaN (the module's policy).
    """

    index: int            # position in the replay
    event: int            # position in the recorded order
    stimulus: int
    name: str
    category: str
    repeat: int
    onset_s: float
    duration_s: float
    offset_s: float       # where the sound starts within the first of ``frames``
    waveform: np.ndarray  # float32, at the requested sample rate
    sample_rate: int
    frames: np.ndarray    # (n_frames, n_voxels) float32
    frame_rate: float


def resample(wave: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Polyphase resampling (scipy) to ``rate_out``; float32 out.

    >>> resample(np.ones(16000, np.float32), 16000, 8000).shape
    (8000,)
    """
    if rate_in == rate_out:
        return np.asarray(wave, dtype=np.float32)
    g = math.gcd(int(rate_in), int(rate_out))
    return resample_poly(wave, int(rate_out) // g, int(rate_in) // g).astype(np.float32)


def frame_window(onset_s: float, duration_s: float, tail_s: float, frame_rate: float,
                 n_frames: int) -> slice:
    """Frames of a trial: from the onset's frame for ``duration + tail`` seconds, clipped.

    >>> frame_window(7.0, 10.0, 6.0, 1.0, 100)
    slice(7, 23, None)
    """
    start = int(math.floor(onset_s * frame_rate + 1e-9))
    stop = start + int(math.ceil((duration_s + tail_s) * frame_rate - 1e-9))
    return slice(start, min(stop, n_frames))


def nonfinite_voxels(recording, subject: str, session: str,
                     max_fraction: float = MAX_NONFINITE_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """The voxels the module's policy masks, and each voxel's number of non-finite frames.

    Returns ``(mask, counts)``, bool and int64 arrays (n_voxels,); reads the responses chunk by
    chunk. Raises ``StoreError`` for a session the policy refuses.

    >>> import tempfile
    >>> from replay.store import RecordingWriter, open_recording
    >>> Y = np.ones((20, 3), np.float32); Y[:, 0] = np.nan; Y[4, 1] = np.inf
    >>> tmp = tempfile.TemporaryDirectory()
    >>> with RecordingWriter(tmp.name + "/rec.zarr") as w:
    ...     w.write_stimuli([np.ones(8)], sample_rate=4)
    ...     w.write_voxels("s1", np.zeros((3, 3)))
    ...     w.write_session("s1", 0, Y, 1.0, dict(onset_s=[0.0], stimulus=[0], duration_s=[2.0], repeat=[0]))
    >>> mask, counts = nonfinite_voxels(open_recording(tmp.name + "/rec.zarr"), "s1", 0)
    >>> mask.tolist(), counts.tolist()
    ([True, False, False], [20, 1, 0])
    >>> tmp.cleanup()
    """
    if not (isinstance(max_fraction, (int, float)) and 0 <= max_fraction < 1):
        raise invalid_value("max_fraction", "numbers in [0, 1)", max_fraction)
    responses = recording.responses(subject, session)
    return _scan_nonfinite(responses, f"{recording.name}/{responses.path}", max_fraction)


def _voxel_mask(masked_voxels, recording, subject, session, n_voxels) -> np.ndarray:
    """``masked_voxels`` checked, or the policy's mask when it is None."""
    if masked_voxels is None:
        return nonfinite_voxels(recording, subject, session)[0]
    mask = np.asarray(masked_voxels)
    if mask.dtype != bool or mask.shape != (n_voxels,):
        raise invalid_value("masked_voxels", f"boolean arrays of shape ({n_voxels},)",
                            got=f"an array of dtype {mask.dtype} and shape {mask.shape}")
    return mask


def _masked(frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
    # np.where builds a new array: what zarr returned (or any caller's buffer) is never written to.
    return np.where(mask, np.float32(0.0), frames) if mask.any() else frames


class RunningVoxelMask:
    """The module's non-finite policy for a stream of unknown length (a live session).

    A stored session's mask is decided over all its frames; a live one can only look back. Frames
    that arrived (rows with at least one finite value; a row lost whole is the acquisition's, and
    counted there) are counted per voxel, and once ``min_frames`` have arrived a voxel non-finite
    in more than ``max_fraction`` of them is masked for the rest of the session: 0.0 in every
    later frame (the frames before were dropped by the encoder as usual).

    >>> masker = RunningVoxelMask(2, min_frames=2)
    >>> masker.apply(np.array([[np.nan, 1.0], [np.nan, 2.0], [np.nan, np.nan]])).tolist()
    [[0.0, 1.0], [0.0, 2.0], [0.0, nan]]
    >>> masker.mask.tolist()
    [True, False]
    """

    def __init__(self, n_voxels: int, max_fraction: float = MAX_NONFINITE_FRACTION,
                 min_frames: int = 10):
        self.max_fraction, self.min_frames = float(max_fraction), int(min_frames)
        self.mask = np.zeros(int(n_voxels), dtype=bool)
        self.counts = np.zeros(int(n_voxels), dtype=np.int64)
        self.frames = 0

    def apply(self, frames: np.ndarray) -> np.ndarray:
        """``frames`` (n, n_voxels) with the voxels masked so far, and those it masks, at 0.0."""
        bad = ~np.isfinite(frames)
        arrived = ~bad.all(axis=1)
        self.counts += bad[arrived].sum(axis=0)
        self.frames += int(arrived.sum())
        if self.frames >= self.min_frames:
            self.mask |= self.counts > self.max_fraction * self.frames
        return _masked(frames, self.mask)


def replay_session(recording, subject: str, session: str, order: str = "recorded", seed: int = 0,
                   sample_rate: int | None = None, tail_s: float = DEFAULT_TAIL_S,
                   speed: float | None = None, start: int = 0, masked_voxels=None):
    """Yield the session's :class:`Trial` objects in ``order``.

    ``sample_rate`` resamples waveforms to the model's rate; ``speed`` paces the replay at real
    time times ``speed`` (None: as fast as possible); ``start`` skips the first trials of the
    replay order (resuming). ``masked_voxels`` (bool, (n_voxels,)) are set to 0.0 in every
    trial's frames; None masks those of `nonfinite_voxels`, which scans the session once first.
    """
    events = recording.events(subject, session)
    if len(events) == 0:
        raise ValueError(f"subject {subject!r} session {session!r} has no events to replay")
    responses = recording.responses(subject, session)
    mask = _voxel_mask(masked_voxels, recording, subject, session, responses.shape[1])
    rate = recording.frame_rate(subject, session)
    sr_in = recording.sample_rate
    sr_out = sample_rate or sr_in
    categories = [recording.categories[int(s)] for s in events.stimulus]
    idx = event_order(len(events), order, seed, categories)
    # Each trial is released when its last frame would have been acquired: its span in the
    # recording (onset to the next onset), summed over the trials replayed before it.
    spans = np.diff(np.append(events.onset_s, events.onset_s[-1] + events.duration_s[-1] + tail_s))
    release = np.cumsum(spans[idx]) - spans[idx] + events.duration_s[idx] + tail_s
    pacer = Pacer(speed)
    for i in range(start, len(idx)):
        e = int(idx[i])
        window = frame_window(events.onset_s[e], events.duration_s[e], tail_s, rate, responses.shape[0])
        pacer.wait_until(release[i] - release[start] if speed else 0.0)
        s = int(events.stimulus[e])
        yield Trial(index=i, event=e, stimulus=s, name=recording.stimulus_names[s],
                    category=recording.categories[s], repeat=int(events.repeat[e]),
                    onset_s=float(events.onset_s[e]), duration_s=float(events.duration_s[e]),
                    offset_s=float(events.onset_s[e] - window.start / rate),
                    waveform=resample(recording.audio(s), sr_in, sr_out), sample_rate=sr_out,
                    frames=_masked(np.asarray(responses[window], dtype=np.float32), mask),
                    frame_rate=rate)


def repeated_responses(recording, subject: str, session: str, tail_s: float = DEFAULT_TAIL_S,
                       masked_voxels=None):
    """Brain frames of repeated presentations, for noise ceilings.

    Returns ``(responses, stimuli)``: ``responses`` is (n_sounds, n_repeats, n_frames, n_voxels)
    float32 for the sounds presented at least ``n_repeats`` times (their first ``n_repeats``
    presentations, in recorded order), where ``n_repeats`` is the smallest number of presentations
    among sounds heard more than once; windows are cut like trials' (`frame_window`) and trimmed
    to the shortest. ``stimuli`` lists the sounds. None when no sound is repeated.
    ``masked_voxels`` are 0.0, as in `replay_session`; other non-finite values stay NaN where they
    are, so a ceiling computed from ``responses`` must skip or refuse them.
    """
    events = recording.events(subject, session)
    data = recording.responses(subject, session)
    rate = recording.frame_rate(subject, session)
    counts = np.bincount(events.stimulus, minlength=recording.n_stimuli)
    if counts.max(initial=0) < 2:
        return None
    n_repeats = int(counts[counts >= 2].min())
    stimuli = np.flatnonzero(counts >= n_repeats)
    windows = {s: [frame_window(events.onset_s[e], events.duration_s[e], tail_s, rate, data.shape[0])
                   for e in np.flatnonzero(events.stimulus == s)[:n_repeats]] for s in stimuli}
    length = min(w.stop - w.start for ws in windows.values() for w in ws)
    if length < 1:  # a presentation cut off by the end of the recording
        return None
    mask = _voxel_mask(masked_voxels, recording, subject, session, data.shape[1])
    out = np.empty((len(stimuli), n_repeats, length, data.shape[1]), dtype=np.float32)
    for i, s in enumerate(stimuli):
        for j, w in enumerate(windows[s]):
            out[i, j] = data[w.start:w.start + length]
    out[..., mask] = 0.0  # out is ours: zeroing it in place touches nothing stored
    return out, stimuli
