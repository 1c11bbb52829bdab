"""A fake scanner: a stored session sent as a live acquisition, at real pace times a speed.

`stream_session` sends what `replay.live.ZmqSource` reads (docs/protocol.md, "Acquisition"):
``session``, then one ``frames`` message per frame at its acquisition time and each ``event``
when its sound starts, then ``end``. Injected faults rehearse a real acquisition and test the
live path, all drawn from one seeded generator: timestamp jitter (uniform, in seconds), dropped
frames and duplicated frames (probabilities).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import zmq

from . import wire
from .clock import Pacer


@dataclass(frozen=True)
class Faults:
    """What a fake scanner injects: ``jitter_s`` (timestamps move uniformly within ± that),
    ``drop`` and ``duplicate`` (each frame's probability of being lost or sent twice)."""

    jitter_s: float = 0.0
    drop: float = 0.0
    duplicate: float = 0.0
    seed: int = 0

    def __post_init__(self):
        for name in ("drop", "duplicate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"Invalid value for the {name!r} parameter. Allowed values are "
                                 f"probabilities in [0, 1], but got {getattr(self, name)!r} "
                                 "instead.")
        if not self.jitter_s >= 0.0:
            raise ValueError(f"Invalid value for the 'jitter_s' parameter. Allowed values are "
                             f"seconds >= 0, but got {self.jitter_s!r} instead.")


@dataclass
class SentCounts:
    frames: int = 0
    dropped: int = 0
    duplicated: int = 0
    events: int = 0


def stream_session(socket: zmq.Socket, recording, subject: str, session: str,
                   speed: float | None = 1.0, faults: Faults = Faults(),
                   t0: float = 0.0) -> SentCounts:
    """Send one stored session over ``socket`` (a connected PUSH); return what was sent.

    ``speed`` is real time times that (None or 0: as fast as the socket takes it). Frames are read
    one chunk at a time, so a long session never sits whole in memory.
    """
    responses = recording.responses(subject, session)
    rate = recording.frame_rate(subject, session)
    events = recording.events(subject, session)
    n_frames, n_voxels = responses.shape
    rng = np.random.default_rng(faults.seed)
    # Each event goes out with the frame its sound starts in (the frame grid's floor).
    by_frame: dict[int, list[int]] = {}
    for e in np.argsort(events.onset_s, kind="stable"):
        by_frame.setdefault(int(np.floor(events.onset_s[e] * rate + 1e-9)), []).append(int(e))
    sent, pacer, seq = SentCounts(), Pacer(speed), 0

    def send(kind, fields=None, arrays=None):
        nonlocal seq
        seq += 1
        wire.send(socket, kind, fields, arrays, seq=seq)

    send("session", {"frame_rate": rate, "n_voxels": int(n_voxels), "t0": float(t0)})
    step = responses.chunks[0]
    for start in range(0, n_frames, step):
        block = np.asarray(responses[start:start + step], dtype=np.float32)
        for i, frame in enumerate(block):  # one message per frame, as a scanner sends them
            k = start + i
            pacer.wait_until(k / rate)
            for e in by_frame.get(k, []):
                send("event", {"onset_s": float(events.onset_s[e]),
                               "duration_s": float(events.duration_s[e]),
                               "stimulus": int(events.stimulus[e])})
                sent.events += 1
            if rng.random() < faults.drop:
                sent.dropped += 1
                continue
            ts = t0 + k / rate + (rng.uniform(-faults.jitter_s, faults.jitter_s)
                                  if faults.jitter_s else 0.0)
            copies = 2 if rng.random() < faults.duplicate else 1
            for _ in range(copies):
                send("frames", arrays={"frames": frame[None], "timestamps": np.array([ts])})
            sent.frames += 1
            sent.duplicated += copies - 1
    send("end")
    return sent
