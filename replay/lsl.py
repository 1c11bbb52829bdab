"""A live acquisition over the Lab Streaming Layer: a frames stream and a markers stream in, the
same trials as a replay out (docs/protocol.md, "Acquisition over LSL").

Many labs already publish their acquisition on LSL. `LslSource` resolves two streams by name:

- **frames** (``name``): one sample per brain frame, ``channel_count`` = n_voxels, a numeric
  channel format (float32; others are converted), ``nominal_srate`` = the frame rate; each
  sample's timestamp is the frame's acquisition time. The frame grid starts at a ``t0`` element
  of the stream's ``desc``, or else at the first frame's timestamp.
- **markers** (``markers``, by default ``name + "-markers"``): one string channel, irregular
  rate; each sample is a JSON object, ``{"stimulus": 3, "duration_s": 10.0}`` for a sound that
  starts at the marker's timestamp, ``{"end": true}`` when the session is over.

It pulls both, maps the markers' timestamps onto the frames' clock, and feeds the
`replay.live.LiveSource` machinery shared with `replay.live.ZmqSource`: the same
`replay.assembly.TrialAssembler` policy, the same trials, ``report()`` and ``close()``. A
marker that is not such an object is counted in ``bad_messages`` and skipped. After ``{"end":
true}`` the frames still in flight are taken (until the last frame before the end marker's
timestamp is in, or 1 s without a frame), then the trials are released. Silence on both
streams beyond ``timeout_s`` stops the source too.

`LslSender` is the other side, the outlets of ``cortexreplay fake-scanner --lsl NAME``.

pylsl (with the liblsl it bundles) is an optional dependency, imported on first use:
``pip install 'cortexreplay[lsl]'``. Before liblsl loads, ``LSLAPICFG`` is pointed at
`LOOPBACK_CONFIG` (this package's ``lsl_api.cfg``) unless it is already set, so that stream
discovery and data stay on this machine's loopback interface.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np

from .assembly import LiveTrial
from .live import LiveSource
from .trials import DEFAULT_TAIL_S

LOOPBACK_CONFIG = Path(__file__).with_name("lsl_api.cfg")
MARKERS_SUFFIX = "-markers"
END_WAIT_S = 1.0    # after the end marker: how long to wait for frames still in flight
BUFFER_S = 3600.0   # inlet buffers: the frames a slow learner may leave unread, in seconds


class LslError(ValueError):
    """The LSL path cannot go on: pylsl is missing, a stream was not found or has the wrong
    shape, no live source connected. A ValueError, so that a command reports it in one line."""


def markers_name(name: str) -> str:
    """The markers stream that goes with the frames stream ``name``.

    >>> markers_name("scanner")
    'scanner-markers'
    """
    return name + MARKERS_SUFFIX


def load_pylsl():
    """pylsl, imported with discovery confined to this machine (unless LSLAPICFG is set)."""
    os.environ.setdefault("LSLAPICFG", str(LOOPBACK_CONFIG))  # read when liblsl first needs it
    try:
        import pylsl
    except (ImportError, OSError, RuntimeError) as err:  # no pylsl, or no liblsl for it
        raise LslError(f"the LSL path needs pylsl and its liblsl ({err}): "
                       "pip install 'cortexreplay[lsl]'") from None
    return pylsl


class LslSender:
    """The outlets of a fake scanner: what `replay.scanner.play_session` plays goes out as a
    frames stream ``name`` and a markers stream ``markers_name(name)`` (module docstring).

    `session` opens both outlets and waits up to ``wait_s`` for a source to connect to each;
    `end` sends the end marker and waits up to ``linger_s`` for the source to leave, so that
    nothing it has not read is thrown away with the outlets.
    """

    def __init__(self, name: str, stream_type: str = "fus", wait_s: float = 30.0,
                 linger_s: float = 5.0):
        self.lsl = load_pylsl()
        self.name, self.stream_type = name, stream_type
        self.wait_s, self.linger_s = wait_s, linger_s
        self.frames = self.markers = None
        self.t0 = 0.0

    def clock(self) -> float:
        """This machine's LSL clock, in whole seconds (so whole-second onsets add exactly)."""
        return float(math.floor(self.lsl.local_clock()))

    def session(self, frame_rate: float, n_voxels: int, t0: float) -> None:
        lsl, self.t0 = self.lsl, t0
        info = lsl.StreamInfo(self.name, self.stream_type, n_voxels, frame_rate, "float32",
                              f"cortexreplay-{self.name}")
        info.desc().append_child_value("t0", repr(float(t0)))
        marks = lsl.StreamInfo(markers_name(self.name), "Markers", 1, lsl.IRREGULAR_RATE,
                               "string", f"cortexreplay-{markers_name(self.name)}")
        self.frames = lsl.StreamOutlet(info, max_buffered=int(BUFFER_S))
        self.markers = lsl.StreamOutlet(marks, max_buffered=int(BUFFER_S))
        deadline = time.monotonic() + self.wait_s
        for outlet, name in ((self.frames, self.name), (self.markers, markers_name(self.name))):
            if not outlet.wait_for_consumers(max(0.0, deadline - time.monotonic())):
                raise LslError(f"no live source connected to the LSL stream {name!r} within "
                               f"{self.wait_s:g} s")

    def event(self, onset_s: float, duration_s: float, stimulus: int) -> None:
        self.marker({"stimulus": stimulus, "duration_s": duration_s}, self.t0 + onset_s)

    def marker(self, value, timestamp: float) -> None:
        """One marker: a JSON object, or any text as it is (to rehearse a bad one)."""
        self.markers.push_sample([value if isinstance(value, str) else json.dumps(value)],
                                 timestamp)

    def frame(self, frame: np.ndarray, timestamp: float) -> None:
        self.frames.push_chunk(frame[None], timestamp)  # one sample: its own timestamp

    def end(self, timestamp: float) -> None:
        self.marker({"end": True}, timestamp)
        deadline = time.monotonic() + self.linger_s
        while time.monotonic() < deadline and (self.frames.have_consumers()
                                                or self.markers.have_consumers()):
            time.sleep(0.02)

    def close(self) -> None:
        self.frames = self.markers = None  # destroys the outlets

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class LslSource(LiveSource):
    """Resolves a frames and a markers stream and yields a live session's trials.

    Parameters
    ----------
    stimuli, sample_rate, tail_s, timeout_s, reorder_frames, history_frames :
        as in `replay.live.LiveSource`.
    name : str
        The frames stream's name.
    markers : str | None
        The markers stream's name (None: ``markers_name(name)``).
    resolve_timeout_s : float
        How long to look for each stream before giving up (`LslError`).
    poll_s : float
        The longest a pull waits for a frame before it looks at the markers again.
    """

    def __init__(self, stimuli, name: str = "cortexreplay", markers: str | None = None,
                 sample_rate: int | None = None, tail_s: float = DEFAULT_TAIL_S,
                 timeout_s: float | None = None, resolve_timeout_s: float = 10.0,
                 reorder_frames: int = 2, history_frames: int = 600, poll_s: float = 0.05,
                 chunk_frames: int = 32):
        super().__init__(stimuli, sample_rate, tail_s, timeout_s, reorder_frames, history_frames)
        self.lsl = load_pylsl()
        self.name, self.markers_name = name, markers or markers_name(name)
        self.where = f"lsl:{self.name}"
        self.poll_s, self.chunk_frames = poll_s, chunk_frames
        self.frames = self.markers = None
        try:
            self.frames, info = self._inlet(self.name, resolve_timeout_s)
            self.markers, marks = self._inlet(self.markers_name, resolve_timeout_s)
            self._check(info, marks)
            self.hostnames = (info.hostname(), marks.hostname())
            t0 = info.desc().child_value("t0")
            self._start(info.nominal_srate(), info.channel_count(), float(t0) if t0 else None)
        except BaseException:
            self.close()
            raise
        self._buffer = np.empty((chunk_frames, info.channel_count()), self.frames.np_dtype)
        self._early: list = []           # sounds' markers that came before t0 was known
        self._end_ts: float | None = None
        self._newest_ts = -math.inf      # the latest frame timestamp received
        self._heard = time.monotonic()   # when something last arrived

    def _inlet(self, name: str, timeout_s: float):
        """An open inlet for the stream ``name`` and its full description."""
        found = self.lsl.resolve_byprop("name", name, 1, timeout_s)
        if not found:
            raise LslError(f"no LSL stream named {name!r} found within {timeout_s:g} s (the "
                           "search stays on this machine unless LSLAPICFG says otherwise)")
        newest = max(found, key=lambda info: info.created_at())
        inlet = self.lsl.StreamInlet(newest, max_buflen=int(BUFFER_S))
        try:
            inlet.open_stream(timeout_s)
            return inlet, inlet.info(timeout_s)
        except BaseException:
            inlet.close_stream()
            raise

    def _check(self, info, marks) -> None:
        lsl = self.lsl
        if info.channel_format() == lsl.cf_string or not info.nominal_srate() > 0:
            raise LslError(f"the LSL stream {self.name!r} is not a frames stream: it needs a "
                           "numeric channel format and a nominal rate > 0 (the frame rate), but "
                           f"has format {info.channel_format()} and rate {info.nominal_srate():g}")
        if marks.channel_format() != lsl.cf_string or marks.channel_count() != 1:
            raise LslError(f"the LSL stream {self.markers_name!r} is not a markers stream: it "
                           "needs one string channel, but has format "
                           f"{marks.channel_format()} and {marks.channel_count()} channels")

    def _receive(self) -> list[LiveTrial] | None:
        frames_inlet, markers_inlet = self.frames, self.markers
        if frames_inlet is None or markers_inlet is None:
            return None  # closed (by another thread, say): stop
        try:
            frames, stamps = frames_inlet.pull_chunk(self.poll_s, self.chunk_frames,
                                                     dest_obj=self._buffer, min_samples=1,
                                                     as_numpy=True)
            # Markers after frames: a marker sent before a frame is then in hand before it.
            values, times = markers_inlet.pull_chunk(0.0, 64, as_numpy=True)
        except self.lsl.util.LostError:
            self.close()
            return None
        now = time.monotonic()
        if len(stamps) or len(times):
            self._heard = now
        if len(stamps):
            self._newest_ts = max(self._newest_ts, float(stamps.max()))
            if self.assembler.t0 is None:
                self.assembler.t0 = float(stamps[0])  # the grid starts at the first frame
        for value, ts in zip(values[:, 0], times):
            self._early += self._parse(value, float(ts))
        released = []
        if self.assembler.t0 is not None:  # events wait for the grid's start
            for event in self._early:
                released += self._place(*event)
            self._early = []
        if len(stamps):
            released += self.assembler.add_frames(frames, stamps)
        if self._end_ts is not None and (self._last_frame_in() or now - self._heard > END_WAIT_S):
            self.ended = True
            self.close()  # the sender sees its source leave and closes its outlets
        elif self.timeout_s is not None and now - self._heard > self.timeout_s:
            self.close()
            return None  # quiet: nothing arrived in this round, so nothing was released
        return released

    def _parse(self, value: bytes, ts: float) -> list[tuple]:
        """[(stimulus, duration_s, timestamp, marker)] for a sound's marker; [] for the end
        marker (noted) and for a bad one (counted)."""
        try:
            marker = json.loads(value.decode("utf-8"))
            if not isinstance(marker, dict):
                raise ValueError(f"a marker is a JSON object, but got {marker!r:.40}")
            if marker.get("end") is True:
                self._end_ts = self._on_frames_clock(ts)
                return []
            duration = marker["duration_s"]
            if not isinstance(duration, (int, float)) or isinstance(duration, bool):
                raise ValueError(f"a marker's duration_s is a number, but got {duration!r:.20}")
            return [(marker["stimulus"], duration, ts, value)]
        except (ValueError, KeyError, TypeError, self.lsl.util.TimeoutError) as err:
            self._bad_marker(value, err)
            return []

    def _place(self, stimulus, duration_s, ts: float, value: bytes) -> list[LiveTrial]:
        """File a sound's marker as an event at its onset from t0; the trials it released."""
        try:
            return self._event(self._on_frames_clock(ts) - self.assembler.t0, duration_s,
                               stimulus)
        except (ValueError, TypeError, self.lsl.util.TimeoutError) as err:
            self._bad_marker(value, err)
            return []

    def _bad_marker(self, value: bytes, err: Exception) -> None:
        self._bad(f"bad marker {value[:60]!r}: {err!r:.120}")

    def _on_frames_clock(self, ts: float) -> float:
        """A marker's timestamp on the frames' clock: as it is when both streams come from one
        machine (one clock), else through both inlets' clock offsets to this machine."""
        if self.hostnames[0] == self.hostnames[1]:
            return ts
        return ts + self.markers.time_correction(1.0) - self.frames.time_correction(1.0)

    def _last_frame_in(self) -> bool:
        """Has the last frame before the end marker come (by its index on the grid)?"""
        if self.assembler.t0 is None:
            return True  # no frame at all: nothing to wait for
        rate, t0 = self.assembler.frame_rate, self.assembler.t0
        return round((self._newest_ts - t0) * rate) >= round((self._end_ts - t0) * rate) - 1

    def _close(self) -> None:
        for inlet in (self.frames, self.markers):
            if inlet is not None:
                inlet.close_stream()
        self.frames = self.markers = None  # destroys the inlets
