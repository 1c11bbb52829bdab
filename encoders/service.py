"""The encoder service: prequential encoding models behind a ZeroMQ ROUTER socket.

Run it with ``cortexreplay encoder serve --bind ENDPOINT`` (or ``python -m encoders``).
Each client opens a *run* (layers, voxels, lags, penalty grid), then sends trials; the service
predicts each trial before learning from it and answers with the trial's scores. A run's trial
index is its sequence number: trials apply in order, exactly once (a re-sent one is answered
from a cache), and ``snapshot`` / ``open`` with a state checkpoint and restore a run. A malformed
or invalid request gets an ``error`` reply and is counted; the service never dies on bad input.
Monitors may follow on an XPUB socket (`encoders.monitor`). docs/protocol.md gives every message.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import sys

import numpy as np
import torch
import zmq
from threadpoolctl import threadpool_limits

from replay import tree, wire
from replay.security import ServerCurve, add_server_curve_arguments, check_bind, server_curve

from .encoding import PrequentialEncoder
from .hrf import HRFS

log = logging.getLogger("cortexreplay.encoder")

# Replies kept per run for trials sent again (a client's window of trials in flight is smaller).
KEPT_REPLIES = 64
# Messages queued per monitor before the XPUB socket drops (monitoring may lose, and says so).
MONITOR_HWM = 1000
MAX_REASON = 1000  # characters of an error's reason
MAX_RUN_NAME = 256  # characters: replies echo the name, and a header holds at most 64 kB


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _is_positive_float(x) -> bool:
    """A number that is > 0 and finite as a float (an integer beyond float range is not)."""
    try:
        return _is_number(x) and math.isfinite(float(x)) and x > 0
    except OverflowError:
        return False


def _is_name(x) -> bool:
    return isinstance(x, str) and 0 < len(x) <= MAX_RUN_NAME


COUNT = ("an integer >= 0", lambda x: wire.is_int(x) and x >= 0)


# The fields of each request: what each must be, in words and as a check. Checked before any
# work, so a refused request changes nothing.
FIELDS = {
    "run": ("a string of 1 to 256 characters", _is_name),
    "layers": ("a non-empty list of distinct non-empty strings",
               lambda x: isinstance(x, list) and x and all(_is_name(n) for n in x)
               and len(set(x)) == len(x)),
    "n_voxels": ("an integer >= 1", lambda x: wire.is_int(x) and x >= 1),
    "n_units": ("an integer >= 0 (0: as many as the run sends)",
                lambda x: wire.is_int(x) and x >= 0),
    "lags": ("a non-empty list of integers >= 0",
             lambda x: isinstance(x, list) and x and all(wire.is_int(k) and k >= 0 for k in x)),
    "alphas": ("a non-empty list of numbers", lambda x: isinstance(x, list) and x
               and all(_is_number(a) for a in x)),
    "warmup": COUNT,
    "trial": COUNT,
    "unit": COUNT,
    "forgetting": ("a number", _is_number),
    "drift_threshold": ("a number", _is_number),
    "components": COUNT,
    "hrf": ("'fir' or 'glover'", lambda x: isinstance(x, str) and x in HRFS),
    "frame_rate_hz": ("a finite number > 0", lambda x: _is_positive_float(x)),
    "device": ("a string", lambda x: isinstance(x, str)),
    "dtype": ("a string", lambda x: isinstance(x, str)),
    "state": ("an object", lambda x: isinstance(x, dict)),
}
REQUIRED = {"open": ("run", "layers", "n_voxels", "n_units", "lags", "alphas", "warmup"),
            "trial": ("run", "trial", "unit"), "snapshot": ("run",), "finish": ("run",)}
# Optional fields of an 'open' request; absent, PrequentialEncoder's defaults.
OPEN_OPTIONS = ("forgetting", "device", "dtype", "drift_threshold", "components", "hrf",
                "frame_rate_hz")
# Those of them that reach the encoder as floats (JSON may send 1 for 1.0); the others as sent.
FLOAT_OPTIONS = ("forgetting", "drift_threshold", "frame_rate_hz")


def check_fields(msg: wire.Message) -> dict:
    """The request's header after checking every field it needs (and any it may have)."""
    h = msg.header
    for name in REQUIRED.get(msg.kind, ()):
        if name not in h:
            raise ValueError(f"a {msg.kind!r} request needs the field {name!r} "
                             f"({FIELDS[name][0]})")
    for name in (*REQUIRED.get(msg.kind, ()), *(OPEN_OPTIONS + ("state",)
                                                if msg.kind == "open" else ())):
        allowed, ok = FIELDS[name]
        if name in h and not ok(h[name]):
            raise ValueError(f"Invalid value for the {name!r} field of {msg.kind!r}. Allowed "
                             f"values are {allowed}, but got {h[name]!r:.60} instead.")
    if msg.kind == "open" and h.get("hrf") == "glover" and "frame_rate_hz" not in h:
        # The kernel is sampled at the frame rate, which only the client knows.
        raise ValueError("an 'open' request with hrf 'glover' needs the field 'frame_rate_hz' "
                         f"({FIELDS['frame_rate_hz'][0]}: the brain frames per second)")
    return h


def check_endpoint(endpoint: str, curve: ServerCurve | None = None) -> str:
    """Loopback TCP, ipc:// and inproc://, or any TCP address with Curve keys: see
    :func:`replay.security.check_bind`.

    >>> check_endpoint("tcp://127.0.0.1:5555")
    'tcp://127.0.0.1:5555'
    """
    return check_bind(endpoint, curve)


class RunSession:
    """One open run: its encoder and the replies to its last trials (for re-delivery)."""

    def __init__(self, encoder: PrequentialEncoder):
        self.encoder = encoder
        self.replies: dict[int, tuple] = {}

    @property
    def next_trial(self) -> int:
        """The only trial index the run applies next (its sequence number)."""
        return self.encoder.trials_seen

    def keep(self, trial: int, reply: tuple) -> None:
        self.replies[trial] = reply
        self.replies.pop(trial - KEPT_REPLIES, None)


class EncoderService:
    """A ROUTER socket serving :class:`PrequentialEncoder` runs, one request one reply."""

    def __init__(self, bind: str = "tcp://127.0.0.1:*", context: zmq.Context | None = None,
                 threads: int = 1, parent_pid: int | None = None, curve: ServerCurve | None = None,
                 monitor: str | None = None):
        endpoint = check_endpoint(bind, curve)  # before any socket exists, so a refusal leaks none
        self.context = context or zmq.Context.instance()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 1000)
        # With keys, only clients whose public key is in curve.clients_dir finish the handshake;
        # the others never reach handle_one. The authenticator stops with serve_forever.
        self.authenticator = None
        try:
            if curve is not None:
                self.authenticator = curve.apply(self.socket)  # options must precede bind
            self.socket.bind(endpoint)
        except BaseException:
            self._abort()
            raise
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.monitor = self.monitor_endpoint = None
        if monitor is not None:
            try:
                self.monitor, self.monitor_endpoint = self._bind_monitor(monitor)
            except BaseException:  # a refused monitor endpoint leaves no socket behind
                self._abort()
                raise
        self._published = 0
        self.runs: dict[str, RunSession] = {}
        self.errors = self.trials = self.duplicates = 0
        self._handlers = {"open": self._open, "trial": self._trial, "snapshot": self._snapshot,
                          "finish": self._finish, "status": self._status,
                          "shutdown": self._shutdown}
        self.threads, self.parent_pid = threads, parent_pid
        self._stopping = False

    def serve_forever(self) -> None:
        """Answer requests until a ``shutdown`` request arrives.

        BLAS runs on ``threads`` threads meanwhile: the per-trial solves are small (a few hundred
        features), and two BLAS threads made them 2.4x slower than one on a 2-core machine.
        """
        # torch has a thread pool of its own (the encoder's statistics are torch tensors): held to
        # the same count, or its threads and the runs' processes fight over the cores.
        torch.set_num_threads(self.threads)
        try:
            with threadpool_limits(limits=self.threads, user_api="blas"):
                poller = zmq.Poller()
                poller.register(self.socket, zmq.POLLIN)
                if self.monitor is not None:
                    poller.register(self.monitor, zmq.POLLIN)
                while True:
                    ready = dict(poller.poll(1000))
                    if not ready:
                        if self._orphaned():
                            log.warning("parent process %d is gone; stopping", self.parent_pid)
                            return
                        continue
                    if self.monitor in ready:
                        self._greet()
                    if self.socket in ready and not self.handle_one():
                        return
        finally:
            self.socket.close()
            if self.monitor is not None:
                self.monitor.close()
            if self.authenticator is not None:
                self.authenticator.stop()

    def _abort(self) -> None:
        """Close what a failed start had opened."""
        self.socket.close(linger=0)
        if self.authenticator is not None:
            self.authenticator.stop()

    def _bind_monitor(self, endpoint: str):
        """An XPUB socket for monitors (loopback only: it has no keys). XPUB, not PUB, because
        it sees each new subscription and can greet it (`_greet`)."""
        sock = self.context.socket(zmq.XPUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscription, repeats too: each joiner is greeted
        sock.setsockopt(zmq.SNDHWM, MONITOR_HWM)
        try:
            sock.bind(check_endpoint(endpoint))
        except BaseException:
            sock.close()
            raise
        return sock, sock.getsockopt_string(zmq.LAST_ENDPOINT)

    def _publish(self, kind: str, fields: dict, arrays: dict | None = None) -> None:
        """Send to monitors, never waiting: a slow monitor loses messages (past MONITOR_HWM),
        and the publisher's own sequence number lets it count what it lost."""
        if self.monitor is None:
            return
        self._published += 1
        try:
            wire.send(self.monitor, kind, fields, arrays, seq=self._published)
        except zmq.Again:  # cannot happen with XPUB (it drops), kept so a monitor never blocks
            pass

    def _greet(self) -> None:
        """Answer a new subscription with ``hello``: where the stream stands (the next ``seq``
        and every open run's next trial), so a late joiner knows what it did not see."""
        event = self.monitor.recv()
        if event[:1] == b"\x01":
            self._publish("hello", {"runs": {run: s.next_trial for run, s in self.runs.items()}})

    def _orphaned(self) -> bool:
        """True when the process that started us has died (so we never linger after it)."""
        return self.parent_pid is not None and os.getppid() != self.parent_pid

    def handle_one(self) -> bool:
        """Receive and answer one request; False after ``shutdown``."""
        identity, seq = None, 0
        try:
            identity, msg = wire.recv_from(self.socket)
            seq = msg.seq
            kind, fields, arrays = self._dispatch(msg)
        except zmq.ZMQError:  # the socket or its context is gone: not the peer's fault, stop
            raise
        except Exception as err:  # noqa: BLE001 - bad input must never stop the service
            self.errors += 1
            identity = identity or getattr(err, "identity", None)
            seq = getattr(err, "seq", None) or seq
            if isinstance(err, (ValueError, KeyError, TypeError)):  # includes wire.ProtocolError
                log.warning("rejected request %d: %s", self.errors, err)
                reason = str(err)
            else:  # no check foresaw it (e.g. a JSON number too large for int): log the trace
                log.exception("rejected request %d", self.errors)
                reason = f"{type(err).__name__}: {err}"
            # A reason quoting a huge value must still fit in a reply header.
            reason = reason if len(reason) <= MAX_REASON else reason[:MAX_REASON] + "..."
            kind, fields, arrays = "error", {"reason": reason, "errors": self.errors}, None
        if identity is not None:
            try:
                wire.send_to(self.socket, identity, kind, fields, arrays, seq=seq)
            except wire.ProtocolError as err:  # a reply that cannot be encoded (a huge run list)
                self.errors += kind != "error"  # the request is refused now, and counted once
                log.warning("could not reply to request %d: %s", seq, err)
                wire.send_to(self.socket, identity, "error",
                             {"reason": f"the reply to this request cannot be sent: {err}",
                              "errors": self.errors}, seq=seq)
        return not self._stopping

    def _dispatch(self, msg: wire.Message):
        handler = self._handlers.get(msg.kind)
        if handler is None:
            raise ValueError(f"the encoder service does not take {msg.kind!r} requests")
        check_fields(msg)
        return handler(msg)

    def _open(self, msg):
        h = msg.header
        encoder = PrequentialEncoder(
            h["layers"], n_voxels=h["n_voxels"], n_units=h["n_units"], lags=h["lags"],
            alphas=[float(a) for a in h["alphas"]], warmup=h["warmup"],
            **{k: float(h[k]) if k in FLOAT_OPTIONS else h[k] for k in OPEN_OPTIONS if k in h})
        if "state" in h:  # a resumed run: the encoder as it was at a checkpoint
            arrays = {name[len("state/"):]: a for name, a in msg.arrays.items()
                      if name.startswith("state/")}
            encoder.load_state_dict(tree.unflatten(h["state"], arrays))
        # Opening a run again replaces it: the client resumes from its own checkpoint.
        self.runs[str(h["run"])] = RunSession(encoder)
        return "ack", {"run": h["run"], "trial": encoder.trials_seen}, None

    def _trial(self, msg):
        h = msg.header
        session, trial = self._run(h), h["trial"]
        if trial < session.next_trial:  # re-delivered: answer again, apply nothing
            if trial not in session.replies:
                raise ValueError(f"trial {trial} of run {h['run']!r} was applied already and its "
                                 f"reply is no longer kept; the run is at trial {session.next_trial}")
            self.duplicates += 1
            return session.replies[trial]
        if trial > session.next_trial:
            raise ValueError(f"run {h['run']!r} expects trial {session.next_trial} next, but got "
                             f"trial {trial}: trials are applied in order, none skipped; send "
                             f"trial {session.next_trial}")
        enc = session.encoder
        features = {name[len("features/"):]: a for name, a in msg.arrays.items()
                    if name.startswith("features/")}
        if "frames" not in msg.arrays:
            raise ValueError("a 'trial' message needs a 'frames' array")
        for name, a in msg.arrays.items():
            if a.dtype.kind != "f":  # numbers measured or computed: an integer buffer is a mix-up
                raise ValueError(f"Invalid dtype for array {name!r}. Allowed values are 'float32' "
                                 f"and 'float64', but got {a.dtype.name!r} instead.")
        dropped = enc.dropped_frames
        trial_r = enc.step(trial, h["unit"], features, msg.arrays["frames"])
        reply = ("scores", {"run": h["run"], "trial": trial,
                            "dropped_frames": enc.dropped_frames - dropped},
                 {"trial_r": np.array([trial_r[name] for name in enc.layers])})
        session.keep(trial, reply)
        self.trials += 1
        self._publish("progress", {"run": h["run"], "trial": trial, **reply[1]},
                      {"trial_r": reply[2]["trial_r"]})
        return reply

    def _snapshot(self, msg):
        h = msg.header
        session = self._run(h)
        scalars, arrays = tree.flatten(session.encoder.state_dict())
        return "state", {"run": h["run"], "trial": session.next_trial, "state": scalars}, {
            f"state/{name}": a for name, a in arrays.items()}

    def _finish(self, msg):
        h = msg.header
        enc = (self.runs.pop(str(h["run"]), None) or self._run(h)).encoder
        r, r2, alpha = enc.r(), enc.r2(), enc.alpha()
        return "result", {"run": h["run"], "layers": enc.layers,
                          "trials": enc.trials_seen, "dropped_frames": enc.dropped_frames}, {
            "r": np.stack([r[name] for name in enc.layers]),
            "r2": np.stack([r2[name] for name in enc.layers]),
            "alpha": np.stack([alpha[name] for name in enc.layers]),
            "drift": enc.drift_events(),
            "unit_stats": enc.unit_stats()}

    def _status(self, msg):
        return "ack", {"errors": self.errors, "trials": self.trials,
                       "duplicates": self.duplicates,
                       "runs": {run: s.next_trial for run, s in self.runs.items()}}, None

    def _shutdown(self, msg):
        self._stopping = True
        return "ack", {}, None

    def _run(self, header) -> RunSession:
        run = str(header["run"])
        if run not in self.runs:
            raise ValueError(f"unknown run {run!r}: send an 'open' request first")
        return self.runs[run]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The service's options (shared by ``python -m encoders`` and ``cortexreplay encoder serve``)."""
    parser.add_argument("--bind", default="tcp://127.0.0.1:*",
                        help="endpoint to bind (loopback only without Curve keys; '*' picks a "
                             "free port)")
    parser.add_argument("--monitor", metavar="ENDPOINT", default=None,
                        help="also publish progress for monitors here (loopback; may drop, and "
                             "each message's sequence number says so)")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1)")
    parser.add_argument("--parent-pid", type=int, default=None,
                        help="stop when this process (the one that started the service) dies")
    add_server_curve_arguments(parser, "the service")


def serve(args) -> int:
    """Run a service with the options of `add_arguments` until ``shutdown``; the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        curve = server_curve(args)
        service = EncoderService(args.bind, threads=args.threads, parent_pid=args.parent_pid,
                                 curve=curve, monitor=args.monitor)
    except (ValueError, zmq.ZMQError) as err:
        print(f"cortexreplay encoder serve: {err}", file=sys.stderr)
        return 2
    # The first line on stdout tells a parent process where we listen (the second, monitors).
    print(f"listening on {service.endpoint}", flush=True)
    if service.monitor_endpoint is not None:
        print(f"monitor on {service.monitor_endpoint}", flush=True)
    try:
        service.serve_forever()
    except KeyboardInterrupt:
        return 130
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="cortexreplay encoder serve",
                                     description="Serve prequential encoding models over ZeroMQ.")
    add_arguments(parser)
    return serve(parser.parse_args(argv))
