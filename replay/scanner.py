"""A fake scanner: a stored session sent as a live acquisition, at real pace times a speed.

`play_session` plays the session into a sender: ``session``, then one frame at a time at its
acquisition time and each event when its sound starts, then the end. `stream_session` sends it
as what `replay.live.ZmqSource` reads (docs/protocol.md, "Acquisition"), `stream_session_lsl`
as the LSL streams `replay.lsl.LslSource` reads ("Acquisition over LSL"). Injected faults
rehearse a real acquisition and test the live path, all drawn from one seeded generator:
timestamp jitter (uniform, in seconds), dropped frames and duplicated frames (probabilities).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import zmq

from . import wire
from .clock import Pacer
from .lsl import LslSender


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


class ZmqSender:
    """How a fake scanner's session goes out over ZeroMQ: the messages of docs/protocol.md,
    "Acquisition", on a connected PUSH socket, numbered by ``seq``."""

    def __init__(self, socket: zmq.Socket):
        self.socket, self.seq = socket, 0

    def _send(self, kind, fields=None, arrays=None):
        self.seq += 1
        wire.send(self.socket, kind, fields, arrays, seq=self.seq)

    def session(self, frame_rate: float, n_voxels: int, t0: float) -> None:
        self._send("session", {"frame_rate": frame_rate, "n_voxels": n_voxels, "t0": t0})

    def event(self, onset_s: float, duration_s: float, stimulus: int) -> None:
        self._send("event", {"onset_s": onset_s, "duration_s": duration_s, "stimulus": stimulus})

    def frame(self, frame: np.ndarray, timestamp: float) -> None:
        self._send("frames", arrays={"frames": frame[None], "timestamps": np.array([timestamp])})

    def end(self, timestamp: float) -> None:
        self._send("end")


def play_session(sender, recording, subject: str, session: str, speed: float | None = 1.0,
                 faults: Faults = Faults(), t0: float = 0.0) -> SentCounts:
    """Play one stored session into ``sender`` (`ZmqSender`, `replay.lsl.LslSender`); return
    what was sent.

    The sender gets ``session(frame_rate, n_voxels, t0)``, then ``event(onset_s, duration_s,
    stimulus)`` when each sound starts (before the frame it starts in) and ``frame(frame,
    timestamp)`` for each frame at its acquisition time (timestamps ``t0 + k / frame_rate`` plus
    the injected jitter), then ``end(timestamp)`` with the time just after the last frame.
    ``speed`` is real time times that (None or 0: as fast as the sender takes it). Frames are
    read one chunk at a time, so a long session never sits whole in memory.
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
    sent, pacer = SentCounts(), Pacer(speed)
    sender.session(rate, int(n_voxels), float(t0))
    step = responses.chunks[0]
    for start in range(0, n_frames, step):
        block = np.asarray(responses[start:start + step], dtype=np.float32)
        for i, frame in enumerate(block):  # one message per frame, as a scanner sends them
            k = start + i
            pacer.wait_until(k / rate)
            for e in by_frame.get(k, []):
                sender.event(float(events.onset_s[e]), float(events.duration_s[e]),
                             int(events.stimulus[e]))
                sent.events += 1
            if rng.random() < faults.drop:
                sent.dropped += 1
                continue
            ts = t0 + k / rate + (rng.uniform(-faults.jitter_s, faults.jitter_s)
                                  if faults.jitter_s else 0.0)
            copies = 2 if rng.random() < faults.duplicate else 1
            for _ in range(copies):
                sender.frame(frame, ts)
            sent.frames += 1
            sent.duplicated += copies - 1
    sender.end(t0 + n_frames / rate)
    return sent


def stream_session(socket: zmq.Socket, recording, subject: str, session: str,
                   speed: float | None = 1.0, faults: Faults = Faults(),
                   t0: float = 0.0) -> SentCounts:
    """Send one stored session over ``socket`` (a connected PUSH); return what was sent
    (`play_session` says how)."""
    return play_session(ZmqSender(socket), recording, subject, session, speed, faults, t0)


def stream_session_lsl(recording, subject: str, session: str, speed: float | None = 1.0,
                       faults: Faults = Faults(), name: str = "cortexreplay",
                       t0: float | None = None, wait_s: float = 30.0,
                       linger_s: float = 5.0) -> SentCounts:
    """Publish one stored session as the LSL streams ``name`` and ``name-markers``; return what
    was sent. ``t0`` (None: this machine's LSL clock now, in whole seconds) is frame 0's
    timestamp; the outlets wait up to ``wait_s`` for a source and, after the end, up to
    ``linger_s`` for it to leave (`replay.lsl.LslSender`)."""
    with LslSender(name, recording.modality, wait_s=wait_s, linger_s=linger_s) as sender:
        start = sender.clock() if t0 is None else float(t0)
        return play_session(sender, recording, subject, session, speed, faults, start)
