"""Live acquisition sources: brain frames and stimulus events in, the same trials as a replay out.

`LiveSource` is what every source shares: it files what arrives into a
`replay.assembly.TrialAssembler` (its policy: jitter, drops, duplicates, reordering, gaps), turns
each released `LiveTrial` into the `Trial` a stored replay would give (waveform, repeat count,
index), counts bad messages and reports. A transport only says how messages come in:
`ZmqSource` here, `replay.lsl.LslSource` for the Lab Streaming Layer.

Over ZeroMQ the acquisition (a scanner's bridge, or ``cortexreplay fake-scanner``) connects a PUSH
socket to the PULL socket a `ZmqSource` binds, and sends, in this order (docs/protocol.md,
"Acquisition"):

- ``session``: ``frame_rate`` (Hz), ``n_voxels``, ``t0`` (the timestamp of frame 0);
- any number of ``frames`` (arrays ``frames`` (n, n_voxels) float32 and ``timestamps`` (n,)
  float64, on the acquisition clock) and ``event`` (``onset_s`` from t0, ``duration_s``,
  ``stimulus``: an index into the stimuli the source was given);
- ``end``.

PUSH/PULL is lossless: ZeroMQ queues up to its high-water mark, then the sender waits. A malformed
message is counted (``bad_messages``) and skipped: a live run never stops on one. A message before
``session`` cannot be placed and is counted the same way.
"""
from __future__ import annotations

import time

import zmq

from . import wire
from .assembly import LiveTrial, TrialAssembler
from .security import ServerCurve, check_bind
from .trials import DEFAULT_TAIL_S, Trial, resample

ACQUISITION_KINDS = ("session", "frames", "event", "end")
MAX_REASONS = 10  # the first few bad messages' reasons are kept for the report
POLL_S = 0.2      # the longest a source waits for a message before it looks at `stop` again


class LiveSource:
    """The trials of a live session, whatever the transport (subclasses say how messages come).

    A subclass implements `_receive` (one round of what arrived: the trials it released, or None
    once the stream is over or quiet) and `_close`; it calls `_start` once the frame grid is
    known, `_event` and ``self.assembler.add_frames`` as messages arrive, and `_bad` for a
    message it cannot use.

    Parameters
    ----------
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

    def __init__(self, stimuli, sample_rate: int | None = None, tail_s: float = DEFAULT_TAIL_S,
                 timeout_s: float | None = None, reorder_frames: int = 2,
                 history_frames: int = 600):
        self.stimuli, self.tail_s, self.timeout_s = stimuli, tail_s, timeout_s
        self.sample_rate = sample_rate or stimuli.sample_rate
        self._assembler_options = {"reorder_frames": reorder_frames,
                                   "history_frames": history_frames}
        self.assembler: TrialAssembler | None = None
        self.frame_rate: float | None = None
        self.bad_messages = 0
        self.reasons: list[str] = []   # the first few, for the report
        self.ended = False             # True after the end of the session; False if it went quiet
        self._repeats: dict[int, int] = {}
        self._released = 0
        self._closed = False
        self.where = ""                # where the session comes from, for the results (subclasses)
        self.stopped = False           # set by `stop`: the iteration ends at its next look

    def __iter__(self):
        """Trials in release order, until the session's end (or the timeout, or `stop`)."""
        while not self.ended and not self.stopped:
            released = self._receive()
            if released is None:
                break  # quiet for timeout_s: release what is pending and stop
            yield from (self._trial(live) for live in released)
        if self.assembler is not None:
            yield from (self._trial(live) for live in self.assembler.flush())

    def stop(self) -> None:
        """End the iteration from another thread (Ctrl-C): within ``POLL_S`` it stops taking
        messages and releases what is pending, cut at the last frame received."""
        self.stopped = True

    def _receive(self) -> list[LiveTrial] | None:
        """One round of what arrived, waiting at most ``POLL_S``: the trials it released, or
        None once the stream is over or has been quiet for ``timeout_s``."""
        raise NotImplementedError

    def _start(self, frame_rate: float, n_voxels: int, t0: float | None) -> None:
        """The frame grid is known: from here on frames and events can be placed."""
        if self.assembler is not None:
            raise ValueError("a second 'session' message in one stream")
        self.assembler = TrialAssembler(float(frame_rate), n_voxels, self.tail_s, t0=t0,
                                        **self._assembler_options)
        self.frame_rate = float(frame_rate)

    def _event(self, onset_s, duration_s, stimulus) -> list[LiveTrial]:
        """File a stimulus event (onset in seconds from t0); the trials it released."""
        if not (wire.is_int(stimulus) and 0 <= stimulus < self.stimuli.n_stimuli):
            raise ValueError(f"event for stimulus {stimulus!r:.20}, but the stimuli are 0-"
                             f"{self.stimuli.n_stimuli - 1}")
        return self.assembler.add_event(float(onset_s), float(duration_s), stimulus)

    def _bad(self, err: Exception | str) -> None:
        """Count a message that could not be used, keep the first reasons, and go on."""
        self.bad_messages += 1
        if len(self.reasons) < MAX_REASONS:
            self.reasons.append(str(err)[:200])

    def _trial(self, live: LiveTrial) -> Trial:
        s = live.stimulus
        repeat = self._repeats.get(s, 0)
        self._repeats[s] = repeat + 1
        index, self._released = self._released, self._released + 1
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
        """Release the transport (a second call does nothing)."""
        if not self._closed:
            self._closed = True
            self._close()

    def _close(self) -> None:
        raise NotImplementedError


class ZmqSource(LiveSource):
    """Binds a PULL socket and yields a live session's trials as their last frames arrive.

    Parameters
    ----------
    bind : str
        Endpoint to bind (loopback unless ``curve`` is given, as for every socket of ours).
    stimuli, sample_rate, tail_s, timeout_s, reorder_frames, history_frames : as in `LiveSource`.
    context : zmq.Context | None
    curve : ServerCurve | None
        CurveZMQ keys, needed to bind beyond loopback.
    """

    def __init__(self, bind: str, stimuli, sample_rate: int | None = None,
                 tail_s: float = DEFAULT_TAIL_S, timeout_s: float | None = None,
                 reorder_frames: int = 2, history_frames: int = 600,
                 context: zmq.Context | None = None, curve: ServerCurve | None = None):
        endpoint = check_bind(bind, curve)
        super().__init__(stimuli, sample_rate, tail_s, timeout_s, reorder_frames, history_frames)
        self.socket = (context or zmq.Context.instance()).socket(zmq.PULL)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.authenticator = None
        try:
            if curve is not None:
                self.authenticator = curve.apply(self.socket)
            self.socket.bind(endpoint)
        except zmq.ZMQError as err:  # a port in use, an address not of this machine
            self.close()
            raise ValueError(f"cannot listen on {bind!r}: {err.strerror}; choose another "
                             "endpoint") from None
        except BaseException:
            self.close()
            raise
        self.endpoint = self.where = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._heard = time.monotonic()  # when the last message came

    def _receive(self) -> list[LiveTrial] | None:
        # Short polls, so that `stop` is seen; the quiet time is counted across them.
        if not self.socket.poll(POLL_S * 1000):
            quiet = time.monotonic() - self._heard
            return None if self.timeout_s is not None and quiet > self.timeout_s else []
        self._heard = time.monotonic()
        try:
            return self._dispatch(wire.recv(self.socket))
        except (ValueError, KeyError, TypeError) as err:  # includes wire.ProtocolError
            self._bad(err)
            return []

    def _dispatch(self, msg: wire.Message) -> list[LiveTrial]:
        h = msg.header
        if msg.kind not in ACQUISITION_KINDS:
            raise ValueError(f"an acquisition stream does not carry {msg.kind!r} messages")
        if msg.kind == "session":
            rate, n_voxels, t0 = h["frame_rate"], h["n_voxels"], h["t0"]
            if not (wire.is_int(n_voxels) and all(isinstance(x, (int, float))
                                                  and not isinstance(x, bool) for x in (rate, t0))):
                raise ValueError("a 'session' message needs frame_rate and t0 (numbers) and "
                                 f"n_voxels (an integer), but got {rate!r:.20}, {t0!r:.20} and "
                                 f"{n_voxels!r:.20}")
            self._start(rate, n_voxels, float(t0))
            return []
        if self.assembler is None:
            raise ValueError(f"a {msg.kind!r} message before the 'session' message")
        if msg.kind == "frames":
            return self.assembler.add_frames(msg.arrays["frames"], msg.arrays["timestamps"])
        if msg.kind == "event":
            return self._event(h["onset_s"], h["duration_s"], h["stimulus"])
        self.ended = True  # 'end'
        return []

    def _close(self) -> None:
        self.socket.close()
        if self.authenticator is not None:
            self.authenticator.stop()
