"""Live trials: stimulus events paired with brain frames as they arrive from an acquisition.

An acquisition sends brain frames with their acquisition timestamps, and stimulus events (onset,
duration, stimulus) on the same clock. `TrialAssembler` files each frame on the session's frame
grid and releases a trial once the last frame of its window (the sound plus its hemodynamic
tail, cut as a stored replay cuts it, `replay.trials.frame_window`) is in, in the order the sounds
were played: a short sound's trial waits for a longer earlier one, so the learner hears the
sounds in the animal's order. The policy, counted in `AssemblyCounts`:

- **jitter**: a frame's index is its timestamp on the grid ``t0 + k / frame_rate``, rounded; a
  frame more than ``max_jitter`` of a period off the grid is still filed, and counted;
- **duplicates**: a second frame of an index already filed is dropped (the first one stands);
- **out of order**: a frame older than the newest one is filed where it belongs; a trial waits
  ``reorder_frames`` frames past its end before it is released, for such stragglers;
- **late**: a frame for an index whose trials have all been released is dropped;
- **gaps and drops**: a frame of a trial's window that never came is NaN in the trial (the
  encoder neither scores nor learns from it, docs/protocol.md) and counted as missing;
- **memory**: only the last ``history_frames`` frames are kept; an event that starts before them
  gets NaN for the frames already forgotten (counted as missing).

Nothing here waits on a clock: `flush` releases what is pending at the end of a stream.

>>> asm = TrialAssembler(frame_rate=1.0, n_voxels=2, tail_s=1.0, reorder_frames=0)
>>> asm.add_event(onset_s=1.0, duration_s=2.0, stimulus=4)
[]
>>> done = [t for k in range(5) for t in asm.add_frames(np.full((1, 2), k, np.float32), [float(k)])]
>>> [(t.stimulus, t.frames[:, 0].tolist()) for t in done]
[(4, [1.0, 2.0, 3.0])]
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .checks import invalid_value
from .trials import frame_window


@dataclass(frozen=True)
class LiveEvent:
    """A stimulus event of the acquisition: its place in the session and what was played."""

    index: int          # events in arrival order: 0, 1, 2, ...
    stimulus: int
    onset_s: float      # on the acquisition clock, from the session's start t0
    duration_s: float


@dataclass(frozen=True)
class LiveTrial:
    """An event with its frames (n_frames, n_voxels) float32; NaN rows never arrived."""

    event: LiveEvent
    frames: np.ndarray
    first_frame: int    # grid index of frames[0]
    offset_s: float     # where the sound starts within the first frame
    missing: int        # rows of frames that are NaN because no frame came

    @property
    def stimulus(self) -> int:
        return self.event.stimulus


@dataclass
class AssemblyCounts:
    """What the policy did, over the stream so far."""

    frames: int = 0          # frames received
    jittered: int = 0        # filed although more than max_jitter of a period off the grid
    duplicates: int = 0      # dropped: their index was already filed
    out_of_order: int = 0    # filed behind a newer frame
    late: int = 0            # dropped: every trial they belonged to was released
    missing: int = 0         # rows of released trials that no frame filled (NaN)
    events: int = 0
    trials: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class _Pending:
    event: LiveEvent
    window: slice
    offset_s: float
    filled: set = field(default_factory=set)


class TrialAssembler:
    """Pair stimulus events with frames on a fixed frame grid (policy in the module docstring).

    Parameters
    ----------
    frame_rate : float
        Frames per second of the acquisition (1 for the ferret fUS design, 1 / TR for fMRI).
    n_voxels : int
    tail_s : float
        Seconds kept after each sound, as in a stored replay (``data.tail_s``).
    t0 : float | None
        Timestamp of frame 0; None takes the first frame's timestamp.
    reorder_frames : int
        Frames a trial waits past its last one for out-of-order stragglers.
    history_frames : int
        Frames kept for events that arrive after their frames.
    max_jitter : float
        Fraction of a frame period off the grid beyond which a frame is counted as jittered.
    """

    def __init__(self, frame_rate: float, n_voxels: int, tail_s: float, t0: float | None = None,
                 reorder_frames: int = 2, history_frames: int = 600, max_jitter: float = 0.25):
        checks = (("frame_rate", frame_rate, "numbers > 0", lambda v: v > 0),
                  ("n_voxels", n_voxels, "integers >= 1", lambda v: int(v) == v and v >= 1),
                  ("tail_s", tail_s, "numbers >= 0", lambda v: v >= 0),
                  ("reorder_frames", reorder_frames, "integers >= 0",
                   lambda v: int(v) == v and v >= 0),
                  ("history_frames", history_frames, "integers >= 1",
                   lambda v: int(v) == v and v >= 1),
                  ("max_jitter", max_jitter, "numbers in (0, 0.5]", lambda v: 0 < v <= 0.5))
        for name, value, allowed, ok in checks:
            if not (isinstance(value, (int, float)) and not isinstance(value, bool)
                    and math.isfinite(value) and ok(value)):
                raise invalid_value(name, allowed, value)
        self.frame_rate, self.n_voxels, self.tail_s = float(frame_rate), int(n_voxels), float(tail_s)
        self.t0 = t0
        self.reorder_frames, self.history_frames = int(reorder_frames), int(history_frames)
        self.max_jitter = float(max_jitter)
        self.counts = AssemblyCounts()
        self._frames: dict[int, np.ndarray] = {}   # grid index -> frame, the last history_frames
        self._newest = -1                           # highest grid index filed
        self._pending: list[_Pending] = []
        self._released_until = 0                    # the end of the last released window

    def add_event(self, onset_s: float, duration_s: float, stimulus: int) -> list[LiveTrial]:
        """File one stimulus event (acquisition clock, seconds from t0); return trials released."""
        if not (math.isfinite(onset_s) and math.isfinite(duration_s) and duration_s >= 0
                and onset_s >= 0):
            raise invalid_value("event", "an onset >= 0 and a duration >= 0, finite, in seconds",
                                got=f"onset {onset_s!r} and duration {duration_s!r}")
        event = LiveEvent(self.counts.events, int(stimulus), float(onset_s), float(duration_s))
        self.counts.events += 1
        # No end clip: a live session has no known length (flush clips to what arrived).
        window = frame_window(onset_s, duration_s, self.tail_s, self.frame_rate, 2 ** 62)
        offset_s = onset_s - window.start / self.frame_rate
        self._pending.append(_Pending(event, window, offset_s,
                                      {k for k in self._frames if window.start <= k < window.stop}))
        return self._release()

    def add_frames(self, frames, timestamps) -> list[LiveTrial]:
        """File frames (n, n_voxels) acquired at ``timestamps`` (n,); return trials released."""
        frames = np.asarray(frames, dtype=np.float32)
        timestamps = np.asarray(timestamps, dtype=np.float64).reshape(-1)
        if frames.ndim != 2 or frames.shape[1] != self.n_voxels or len(frames) != len(timestamps):
            raise invalid_value("frames", f"arrays (n_frames, {self.n_voxels}) with one timestamp "
                                "per frame", got=f"frames of shape {frames.shape} and "
                                f"{len(timestamps)} timestamps")
        if not np.isfinite(timestamps).all():
            raise invalid_value("timestamps", "finite numbers (seconds)", timestamps)
        if self.t0 is None and len(timestamps):
            self.t0 = float(timestamps[0])
        for frame, ts in zip(frames, timestamps):
            self._file(frame, float(ts))
        return self._release()

    def _file(self, frame: np.ndarray, ts: float) -> None:
        self.counts.frames += 1
        position = (ts - self.t0) * self.frame_rate
        k = int(round(position))
        if abs(position - k) > self.max_jitter:
            self.counts.jittered += 1
        if k in self._frames:
            self.counts.duplicates += 1
            return
        if k < 0 or (k < self._released_until and not self._needed(k)):
            self.counts.late += 1  # its trials are released: no use for it any more
            return
        if k < self._newest:
            self.counts.out_of_order += 1
        self._frames[k] = frame.copy()  # the caller's buffer may be reused for the next message
        self._newest = max(self._newest, k)
        for p in self._pending:
            if p.window.start <= k < p.window.stop:
                p.filled.add(k)
        for old in [i for i in self._frames if i <= self._newest - self.history_frames]:
            del self._frames[old]

    def _needed(self, k: int) -> bool:
        return any(p.window.start <= k < p.window.stop for p in self._pending)

    def _release(self, everything: bool = False) -> list[LiveTrial]:
        out = []
        while self._pending:
            p = self._pending[0]
            complete = len(p.filled) == p.window.stop - p.window.start
            if not everything and not (complete or self._newest >= p.window.stop - 1 +
                                       self.reorder_frames):
                break
            self._pending.pop(0)
            out.append(self._trial(p, everything))
            self._released_until = max(self._released_until, p.window.stop)
        return out

    def _trial(self, p: _Pending, at_end: bool) -> LiveTrial:
        stop = min(p.window.stop, self._newest + 1) if at_end else p.window.stop
        stop = max(stop, p.window.start + 1)
        frames = np.full((stop - p.window.start, self.n_voxels), np.nan, dtype=np.float32)
        missing = 0
        for k in range(p.window.start, stop):  # a trial's frames (tens), not voxels
            if k in self._frames:
                frames[k - p.window.start] = self._frames[k]
            else:
                missing += 1
        self.counts.missing += missing
        self.counts.trials += 1
        return LiveTrial(p.event, frames, p.window.start, p.offset_s, missing)

    def flush(self) -> list[LiveTrial]:
        """Release every pending trial (the stream ended), cut at the last frame received."""
        return self._release(everything=True)
