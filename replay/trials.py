"""The replay engine: a session's events as trials, in the recorded or another order."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.signal import resample_poly

from .clock import Pacer
from .ordering import event_order

DEFAULT_TAIL_S = 6.0  # hemodynamic tail kept after each sound (covers an fUS/BOLD response)


@dataclass(frozen=True)
class Trial:
    """One sound and the brain frames that belong to it.

    ``frames`` run from the sound's onset to ``duration_s + tail_s`` later (clipped to the
    recording), so they include the hemodynamic tail after the sound.
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


def replay_session(recording, subject: str, session: str, order: str = "recorded", seed: int = 0,
                   sample_rate: int | None = None, tail_s: float = DEFAULT_TAIL_S,
                   speed: float | None = None, start: int = 0):
    """Yield the session's :class:`Trial` objects in ``order``.

    ``sample_rate`` resamples waveforms to the model's rate; ``speed`` paces the replay at real
    time times ``speed`` (None: as fast as possible); ``start`` skips the first trials of the
    replay order (resuming).
    """
    events = recording.events(subject, session)
    if len(events) == 0:
        raise ValueError(f"subject {subject!r} session {session!r} has no events to replay")
    responses = recording.responses(subject, session)
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
                    frames=np.asarray(responses[window], dtype=np.float32), frame_rate=rate)


def repeated_responses(recording, subject: str, session: str, tail_s: float = DEFAULT_TAIL_S):
    """Brain frames of repeated presentations, for noise ceilings.

    Returns ``(responses, stimuli)``: ``responses`` is (n_sounds, n_repeats, n_frames, n_voxels)
    float32 for the sounds presented at least ``n_repeats`` times (their first ``n_repeats``
    presentations, in recorded order), where ``n_repeats`` is the smallest number of presentations
    among sounds heard more than once; windows are cut like trials' (`frame_window`) and trimmed
    to the shortest. ``stimuli`` lists the sounds. None when no sound is repeated.
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
    out = np.empty((len(stimuli), n_repeats, length, data.shape[1]), dtype=np.float32)
    for i, s in enumerate(stimuli):
        for j, w in enumerate(windows[s]):
            out[i, j] = data[w.start:w.start + length]
    return out, stimuli
