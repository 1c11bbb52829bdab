"""The encoder service: prequential encoding models behind a ZeroMQ ROUTER socket.

Run it with ``cortexreplay encoder serve --bind ENDPOINT`` (or ``python -m encoders``).
Each client opens a *run* (layers, voxels, lags, penalty grid), then sends trials; the service
predicts each trial before learning from it and answers with the trial's scores. A malformed or
invalid request gets an ``error`` reply and is counted; the service never dies on bad input.
docs/protocol.md gives every message.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from urllib.parse import urlparse

import numpy as np
import torch
import zmq
from threadpoolctl import threadpool_limits

from replay import wire

from .encoding import PrequentialEncoder

log = logging.getLogger("cortexreplay.encoder")

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")
# Optional fields of an 'open' request and their types; absent, PrequentialEncoder's defaults.
OPEN_OPTIONS = {"forgetting": float, "device": str, "dtype": str, "drift_threshold": float}


def check_endpoint(endpoint: str) -> str:
    """Allow loopback TCP, ipc:// and inproc:// only: the socket has no authentication yet.

    >>> check_endpoint("tcp://127.0.0.1:5555")
    'tcp://127.0.0.1:5555'
    """
    scheme = endpoint.split("://", 1)[0]
    if scheme in ("ipc", "inproc"):
        return endpoint
    host = urlparse(endpoint.replace("*", "0")).hostname if scheme == "tcp" else None
    if scheme != "tcp" or host is None:
        raise ValueError(f"Invalid endpoint {endpoint!r}: use tcp://127.0.0.1:PORT, ipc://PATH "
                         "or inproc://NAME")
    if host not in LOOPBACK_HOSTS:
        raise ValueError(f"refusing to bind {endpoint!r}: the encoder socket is unauthenticated, "
                         "so it binds to the loopback interface only (tcp://127.0.0.1:PORT)")
    return endpoint


class EncoderService:
    """A ROUTER socket serving :class:`PrequentialEncoder` runs, one request one reply."""

    def __init__(self, bind: str = "tcp://127.0.0.1:*", context: zmq.Context | None = None,
                 threads: int = 1, parent_pid: int | None = None):
        self.context = context or zmq.Context.instance()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 1000)
        self.socket.bind(check_endpoint(bind))
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.runs: dict[str, PrequentialEncoder] = {}
        self.errors = 0
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
                while True:
                    if not self.socket.poll(1000):
                        if self._orphaned():
                            log.warning("parent process %d is gone; stopping", self.parent_pid)
                            return
                        continue
                    if not self.handle_one():
                        return
        finally:
            self.socket.close()

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
            if isinstance(err, (ValueError, KeyError, TypeError)):  # includes wire.ProtocolError
                log.warning("rejected request %d: %s", self.errors, err)
                reason = str(err)
            else:  # no check foresaw it (e.g. a JSON number too large for int): log the trace
                log.exception("rejected request %d", self.errors)
                reason = f"{type(err).__name__}: {err}"
            kind, fields, arrays = "error", {"reason": reason, "errors": self.errors}, None
        if identity is not None:
            wire.send_to(self.socket, identity, kind, fields, arrays, seq=seq)
        return not self._stopping

    def _dispatch(self, msg: wire.Message):
        h = msg.header
        if msg.kind == "open":
            self.runs[str(h["run"])] = PrequentialEncoder(
                h["layers"], n_voxels=int(h["n_voxels"]), n_units=int(h["n_units"]),
                lags=h["lags"], alphas=[float(a) for a in h["alphas"]], warmup=int(h["warmup"]),
                **{k: kind(h[k]) for k, kind in OPEN_OPTIONS.items() if k in h})
            return "ack", {"run": h["run"]}, None
        if msg.kind == "trial":
            enc = self._run(h)
            features = {name[len("features/"):]: a for name, a in msg.arrays.items()
                        if name.startswith("features/")}
            if "frames" not in msg.arrays:
                raise ValueError("a 'trial' message needs a 'frames' array")
            trial_r = enc.step(int(h["trial"]), int(h["unit"]), features, msg.arrays["frames"])
            return "scores", {"run": h["run"], "trial": h["trial"]}, {
                "trial_r": np.array([trial_r[name] for name in enc.layers])}
        if msg.kind == "finish":
            enc = self.runs.pop(str(h["run"]), None) or self._run(h)
            r, r2, alpha = enc.r(), enc.r2(), enc.alpha()
            return "result", {"run": h["run"], "layers": enc.layers}, {
                "r": np.stack([r[name] for name in enc.layers]),
                "r2": np.stack([r2[name] for name in enc.layers]),
                "alpha": np.stack([alpha[name] for name in enc.layers]),
                "drift": enc.drift_events(),
                "unit_stats": enc.unit_stats()}
        if msg.kind == "shutdown":
            self._stopping = True
            return "ack", {}, None
        raise ValueError(f"the encoder service does not take {msg.kind!r} requests")

    def _run(self, header) -> PrequentialEncoder:
        run = str(header["run"])
        if run not in self.runs:
            raise ValueError(f"unknown run {run!r}: send an 'open' request first")
        return self.runs[run]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="cortexreplay encoder serve",
                                     description="Serve prequential encoding models over ZeroMQ.")
    parser.add_argument("--bind", default="tcp://127.0.0.1:*",
                        help="endpoint to bind (loopback only; '*' picks a free port)")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1)")
    parser.add_argument("--parent-pid", type=int, default=None,
                        help="stop when this process (the one that started the service) dies")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        service = EncoderService(args.bind, threads=args.threads, parent_pid=args.parent_pid)
    except (ValueError, zmq.ZMQError) as err:
        print(f"cortexreplay encoder serve: {err}", file=sys.stderr)
        return 2
    # The first line on stdout tells a parent process where we listen.
    print(f"listening on {service.endpoint}", flush=True)
    try:
        service.serve_forever()
    except KeyboardInterrupt:
        return 130
    return 0


