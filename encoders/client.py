"""Client side of the encoder service: a DEALER socket and a way to start the service process."""
from __future__ import annotations

import os
import select
import subprocess
import sys
import time

import numpy as np
import zmq

from replay import tree, wire
from replay.security import ClientCurve


class EncoderError(RuntimeError):
    """The encoder service rejected a request, or did not answer in time."""


class EncoderClient:
    """Talks to one encoder service over a DEALER socket.

    Every request carries a sequence number that its reply echoes, so a late reply can never be
    taken for the answer to another request. Trials may be pipelined (`submit`): up to
    ``window`` of them are in flight while the caller prepares the next, and `submit` waits for
    the oldest reply before sending more, so a producer faster than the encoder is slowed to its
    pace and memory stays bounded by the window (backpressure; nothing is dropped). The service
    applies a run's trials in order, so pipelining changes no result.
    """

    def __init__(self, endpoint: str, timeout_s: float = 120.0, context: zmq.Context | None = None,
                 curve: ClientCurve | None = None, window: int = 4):
        if not (isinstance(window, int) and window >= 1):
            raise ValueError(f"Invalid value for the 'window' parameter. Allowed values are "
                             f"integers >= 1, but got {window!r} instead.")
        self.endpoint = endpoint
        self.socket = (context or zmq.Context.instance()).socket(zmq.DEALER)
        self.socket.setsockopt(zmq.RCVTIMEO, int(timeout_s * 1000))
        self.socket.setsockopt(zmq.LINGER, 0)
        if curve is not None:  # a service with keys answers only clients it knows (replay.security)
            try:
                curve.apply(self.socket)  # options must precede connect
            except BaseException:
                self.socket.close()
                raise
        self.socket.connect(endpoint)
        self._seq = 0
        self.window = window  # trials in flight at most (see the class docstring)
        self._in_flight: dict[int, tuple] = {}  # seq -> (kind, arrays kept alive)
        self._replies: dict[int, wire.Message] = {}
        self._trials: list[tuple[int, int]] = []  # (trial, seq) of trials sent, oldest first
        self.max_in_flight = 0    # the most trials in flight at once (what the window bounds)

    def send(self, kind: str, fields: dict | None = None, arrays: dict | None = None) -> int:
        """Send one request without waiting; return its sequence number (for `wait`)."""
        self._seq += 1
        wire.send(self.socket, kind, fields, arrays, seq=self._seq)
        # Zero-copy payloads are read by ZeroMQ after send returns: keep them alive until answered.
        self._in_flight[self._seq] = (kind, arrays)
        return self._seq

    def wait(self, seq: int) -> wire.Message:
        """The reply to request ``seq``; replies to other requests that arrive first are kept."""
        while seq not in self._replies:
            try:
                reply = wire.recv(self.socket)
            except zmq.Again:
                raise EncoderError(f"no reply from the encoder service at {self.endpoint} to "
                                   f"{self._in_flight[seq][0]!r} request {seq}") from None
            if reply.seq in self._in_flight:  # anything else answers a request given up on
                self._replies[reply.seq] = reply
            elif reply.kind == "error" and reply.seq == 0:
                # A request the service could not read its seq from: the oldest unanswered one.
                oldest = min((s for s in self._in_flight if s not in self._replies), default=None)
                if oldest is not None:
                    self._replies[oldest] = reply
        kind, _ = self._in_flight.pop(seq)
        reply = self._replies.pop(seq)
        if reply.kind == "error":
            raise EncoderError(f"encoder service rejected {kind!r}: {reply.header.get('reason')}")
        return reply

    def request(self, kind: str, fields: dict | None = None, arrays: dict | None = None) -> wire.Message:
        """Send one request and wait for its reply. The service answers in order, so the reply
        reflects every trial sent before; their own replies stay kept for `drain`."""
        return self.wait(self.send(kind, fields, arrays))

    def open(self, run: str, layers, n_voxels: int, n_units: int, lags, alphas, warmup: int,
             state: dict | None = None, hrf: str = "fir", frame_rate_hz: float | None = None,
             **options) -> int:
        """Start a run, or restore one from ``state`` (a tree from `snapshot`); return the trial
        it expects next. ``hrf`` ("fir" or "glover") and ``frame_rate_hz`` (needed by "glover")
        choose the hemodynamic design; ``options`` are the other optional fields of
        docs/protocol.md (``forgetting``, ``device``, ``dtype``, ``drift_threshold``,
        ``components``)."""
        fields = {"run": run, "layers": list(layers), "n_voxels": int(n_voxels),
                  "n_units": int(n_units), "lags": [int(k) for k in lags],
                  "alphas": [float(a) for a in alphas], "warmup": int(warmup), **options}
        # Sent only when not the defaults, so a FIR open is the same message as before the
        # fields existed (and a service that predates them takes it).
        if hrf != "fir":
            fields["hrf"] = hrf
        if frame_rate_hz is not None:
            # A numpy scalar (a store's attribute) goes as the Python number it holds.
            fields["frame_rate_hz"] = (frame_rate_hz.item() if isinstance(frame_rate_hz, np.generic)
                                       else frame_rate_hz)
        arrays = None
        if state is not None:
            fields["state"], flat = tree.flatten(state)
            arrays = {f"state/{name}": a for name, a in flat.items()}
        return int(self.request("open", fields, arrays).header.get("trial", 0))

    def trial(self, run: str, trial: int, unit: int, features: dict, frames: np.ndarray) -> np.ndarray:
        """Send one trial and wait for it; return its per-layer voxel-mean r (scored before the
        encoder learned from it). Use this or `submit` and `drain`, not both: it waits for every
        trial in flight and returns this one's r only."""
        self.submit(run, trial, unit, features, frames)
        return self.drain()[-1][1]

    def submit(self, run: str, trial: int, unit: int, features: dict,
               frames: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """Send one trial without waiting for it; return ``(trial, trial_r)`` of the trials whose
        replies this call waited for (the oldest, when ``window`` trials were in flight)."""
        done = []
        while len(self._trials) >= self.window:
            done.append(self._collect())
        arrays = {"frames": frames, **{f"features/{k}": v for k, v in features.items()}}
        seq = self.send("trial", {"run": run, "trial": int(trial), "unit": int(unit)}, arrays)
        self._trials.append((int(trial), seq))
        self.max_in_flight = max(self.max_in_flight, len(self._trials))
        return done

    def drain(self) -> list[tuple[int, np.ndarray]]:
        """Wait for every trial in flight; return their ``(trial, trial_r)`` in order."""
        return [self._collect() for _ in range(len(self._trials))]

    def _collect(self) -> tuple[int, np.ndarray]:
        trial, seq = self._trials[0]
        try:
            reply = self.wait(seq)
        except Exception:  # answered (refused) or given up on: no longer in flight
            self._trials.pop(0)
            raise
        # Interrupted (Ctrl-C) while waiting, it stayed in flight, to be collected later.
        self._trials.pop(0)
        return trial, np.array(reply.arrays["trial_r"])

    def snapshot(self, run: str) -> tuple[int, dict]:
        """The run's encoder state after every trial sent so far: ``(next trial, state tree)``,
        arrays copied out of the message (for a checkpoint)."""
        reply = self.request("snapshot", {"run": run})
        arrays = {name[len("state/"):]: np.array(a) for name, a in reply.arrays.items()}
        return int(reply.header["trial"]), tree.unflatten(reply.header["state"], arrays)

    def status(self) -> dict:
        """The service's counters: ``errors``, ``trials``, ``duplicates`` and each open run's
        next trial (``runs``)."""
        return self.request("status").fields

    def finish(self, run: str) -> dict[str, np.ndarray]:
        """Close a run; return its per-voxel ``r``, ``r2`` and ``alpha``, its ``drift`` events,
        per-unit ``unit_stats``, and the counts of ``trials`` and ``dropped_frames``."""
        reply = self.request("finish", {"run": run})
        out = {name: np.array(a) for name, a in reply.arrays.items()}
        out.update({k: int(reply.header.get(k, 0)) for k in ("trials", "dropped_frames")})
        return out

    def shutdown(self) -> None:
        self.request("shutdown")

    def close(self) -> None:
        self.socket.close()


def spawn_service(bind: str = "tcp://127.0.0.1:*", timeout_s: float = 60.0,
                  monitor: str | None = None):
    """Start ``python -m encoders`` (the service) as a child process; return (process, endpoint).

    The child runs in its own session, so a Ctrl-C meant for the parent does not kill it before
    the parent has said ``shutdown``, and it watches the parent's pid, so it never outlives it.
    ``monitor`` is an endpoint where it also publishes progress (`encoders.monitor`).
    """
    argv = [sys.executable, "-m", "encoders", "--bind", bind, "--parent-pid", str(os.getpid())]
    if monitor is not None:
        argv += ["--monitor", monitor]
    # Unbuffered bytes: a buffered reader could swallow the second line where select cannot see it.
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=None, bufsize=0,
                            start_new_session=True)
    deadline = time.monotonic() + timeout_s
    lines = []
    for expected in ("listening on ", "monitor on ")[: 1 + (monitor is not None)]:
        line = _read_line(proc.stdout, deadline)
        if line is None or not line.startswith(expected):
            proc.kill()
            proc.wait()
            said = f"said {line!r}" if line is not None else f"no answer within {timeout_s:.0f} s"
            raise EncoderError(f"the encoder service did not start ({said})")
        lines.append(line[len(expected):])
    return proc, lines[0]


def _read_line(stream, deadline: float) -> str | None:
    """One line from an unbuffered pipe, or None if none is complete by ``deadline``."""
    data = b""
    while not data.endswith(b"\n"):
        ready, _, _ = select.select([stream], [], [], max(0.0, deadline - time.monotonic()))
        byte = stream.read(1) if ready else b""
        if not byte:  # timed out, or the process closed its output (it died)
            return data.decode(errors="replace").strip() or None
        data += byte
    return data.decode(errors="replace").strip()
