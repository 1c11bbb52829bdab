"""A live acquisition over ZeroMQ: brain frames and stimulus events in, the same trials as a replay out.

The acquisition (a scanner's bridge, or ``cortexreplay fake-scanner``) connects a PUSH socket to
the PULL socket a `ZmqSource` binds, and sends, in this order (docs/protocol.md, "Acquisition"):

- ``session``: ``frame_rate`` (Hz), ``n_voxels``, ``t0`` (the timestamp of frame 0);
- any number of ``frames`` (arrays ``frames`` (n, n_voxels) float32 and ``timestamps`` (n,)
  float64, on the acquisition clock) and ``event`` (``onset_s`` from t0, ``duration_s``,
  ``stimulus``: an index into the stimuli the source was given);
- ``end``.

PUSH/PULL is lossless: ZeroMQ queues up to its high-water mark, then the sender waits. Frames
become trials through `replay.assembly.TrialAssembler` (its policy: jitter, drops, duplicates,
reordering, gaps). A malformed message is counted (``bad_messages``) and skipped: a live run never
stops on one. A message before ``session`` cannot be placed and is counted the same way.
"""
from __future__ import annotations

import zmq

from . import wire
from .assembly import TrialAssembler
from .security import ServerCurve, check_bind
from .trials import DEFAULT_TAIL_S, Trial, resample

ACQUISITION_KINDS = ("session", "frames", "event", "end")


class ZmqSource:
    """Binds a PULL socket and yields a live session's trials as their last frames arrive.

    Parameters
    ----------
    bind : str
        Endpoint to bind (loopback unless ``curve`` is given, as for every socket of ours).
    stimuli : Recording
        Where the sounds the events name are (a recording store's ``audio``, names, categories).
    sample_rate : int | None
        The model's sample rate (sounds are resampled to it).
    tail_s : float
        Seconds kept after each sound, as in a stored replay.
    timeout_s : float | None
        Stop (releasing what is pending) after this long without a message; None waits forever.
    reorder_frames, history_frames : as in `TrialAssembler`.
    """

    def __init__(self, bind: str, stimuli, sample_rate: int | None = None,
                 tail_s: float = DEFAULT_TAIL_S, timeout_s: float | None = None,
                 reorder_frames: int = 2, history_frames: int = 600,
                 context: zmq.Context | None = None, curve: ServerCurve | None = None):
        endpoint = check_bind(bind, curve)
        self.stimuli, self.tail_s, self.timeout_s = stimuli, tail_s, timeout_s
        self.sample_rate = sample_rate or stimuli.sample_rate
        self._assembler_options = {"reorder_frames": reorder_frames,
                                   "history_frames": history_frames}
        self.socket = (context or zmq.Context.instance()).socket(zmq.PULL)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.authenticator = None
        try:
            if curve is not None:
                self.authenticator = curve.apply(self.socket)
            self.socket.bind(endpoint)
        except BaseException:
            self.close()
            raise
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.assembler: TrialAssembler | None = None
        self.bad_messages = 0
        self.reasons: list[str] = []   # the first few, for the report
        self.ended = False             # True after 'end'; False if the stream timed out
        self._repeats: dict[int, int] = {}

    def __iter__(self):
        """Trials in release order, until ``end`` (or the timeout)."""
        index = 0
        while not self.ended:
            if not self.socket.poll(None if self.timeout_s is None else self.timeout_s * 1000):
                break  # the acquisition went quiet: release what is pending and stop
            for live in self._handle():
                yield self._trial(index, live)
                index += 1
        if self.assembler is not None:
            for live in self.assembler.flush():
                yield self._trial(index, live)
                index += 1

    def _handle(self) -> list:
        try:
            msg = wire.recv(self.socket)
            return self._dispatch(msg)
        except (ValueError, KeyError, TypeError) as err:  # includes wire.ProtocolError
            self.bad_messages += 1
            if len(self.reasons) < 10:
                self.reasons.append(str(err)[:200])
            return []

    def _dispatch(self, msg: wire.Message) -> list:
        h = msg.header
        if msg.kind not in ACQUISITION_KINDS:
            raise ValueError(f"an acquisition stream does not carry {msg.kind!r} messages")
        if msg.kind == "session":
            if self.assembler is not None:
                raise ValueError("a second 'session' message in one stream")
            rate, n_voxels, t0 = h["frame_rate"], h["n_voxels"], h["t0"]
            if not (wire.is_int(n_voxels) and all(isinstance(x, (int, float))
                                                  and not isinstance(x, bool) for x in (rate, t0))):
                raise ValueError("a 'session' message needs frame_rate and t0 (numbers) and "
                                 f"n_voxels (an integer), but got {rate!r:.20}, {t0!r:.20} and "
                                 f"{n_voxels!r:.20}")
            self.assembler = TrialAssembler(float(rate), n_voxels, self.tail_s, t0=float(t0),
                                            **self._assembler_options)
            self.frame_rate = float(rate)
            return []
        if self.assembler is None:
            raise ValueError(f"a {msg.kind!r} message before the 'session' message")
        if msg.kind == "frames":
            return self.assembler.add_frames(msg.arrays["frames"], msg.arrays["timestamps"])
        if msg.kind == "event":
            stimulus = h["stimulus"]
            if not (wire.is_int(stimulus) and 0 <= stimulus < self.stimuli.n_stimuli):
                raise ValueError(f"event for stimulus {stimulus!r}, but the stimuli are 0-"
                                 f"{self.stimuli.n_stimuli - 1}")
            return self.assembler.add_event(float(h["onset_s"]), float(h["duration_s"]), stimulus)
        self.ended = True  # 'end'
        return []

    def _trial(self, index: int, live) -> Trial:
        s = live.stimulus
        repeat = self._repeats.get(s, 0)
        self._repeats[s] = repeat + 1
        audio = self.stimuli.audio(s)
        return Trial(index=index, event=live.event.index, stimulus=s,
                     name=self.stimuli.stimulus_names[s], category=self.stimuli.categories[s],
                     repeat=repeat, onset_s=live.event.onset_s, duration_s=live.event.duration_s,
                     offset_s=live.offset_s,
                     waveform=resample(audio, self.stimuli.sample_rate, self.sample_rate),
                     sample_rate=self.sample_rate, frames=live.frames, frame_rate=self.frame_rate)

    def report(self) -> dict:
        """The policy's counts, the bad messages, and whether the stream ended or went quiet."""
        counts = self.assembler.counts.as_dict() if self.assembler is not None else {}
        return {**counts, "bad_messages": self.bad_messages, "ended": self.ended,
                "reasons": list(self.reasons)}

    def close(self) -> None:
        self.socket.close()
        if self.authenticator is not None:
            self.authenticator.stop()
