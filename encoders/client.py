"""Client side of the encoder service: a DEALER socket and a way to start the service process."""
from __future__ import annotations

import os
import select
import subprocess
import sys

import numpy as np
import zmq

from replay import wire


class EncoderError(RuntimeError):
    """The encoder service rejected a request, or did not answer in time."""


class EncoderClient:
    """Talks to one encoder service; one request, one reply, in order.

    Every request carries a sequence number that the reply must echo, so a late reply to an
    earlier request can never be taken for the answer to this one.
    """

    def __init__(self, endpoint: str, timeout_s: float = 120.0, context: zmq.Context | None = None):
        self.endpoint = endpoint
        self.socket = (context or zmq.Context.instance()).socket(zmq.DEALER)
        self.socket.setsockopt(zmq.RCVTIMEO, int(timeout_s * 1000))
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(endpoint)
        self._seq = 0

    def request(self, kind: str, fields: dict | None = None, arrays: dict | None = None) -> wire.Message:
        self._seq += 1
        wire.send(self.socket, kind, fields, arrays, seq=self._seq)
        while True:
            try:
                reply = wire.recv(self.socket)
            except zmq.Again:
                raise EncoderError(f"no reply from the encoder service at {self.endpoint} to "
                                   f"{kind!r} request {self._seq}") from None
            if reply.seq == self._seq:
                break
        if reply.kind == "error":
            raise EncoderError(f"encoder service rejected {kind!r}: {reply.header.get('reason')}")
        return reply

    def open(self, run: str, layers, n_voxels: int, n_units: int, lags, alphas, warmup: int,
             **options) -> None:
        """Start a run; ``options`` are the optional fields of docs/protocol.md (``forgetting``,
        ``device``, ``dtype``, ``drift_threshold``)."""
        self.request("open", {"run": run, "layers": list(layers), "n_voxels": int(n_voxels),
                              "n_units": int(n_units), "lags": [int(k) for k in lags],
                              "alphas": [float(a) for a in alphas], "warmup": int(warmup),
                              **options})

    def trial(self, run: str, trial: int, unit: int, features: dict, frames: np.ndarray) -> np.ndarray:
        """Send one trial; return its per-layer voxel-mean r (scored before the encoder learned)."""
        arrays = {"frames": frames, **{f"features/{k}": v for k, v in features.items()}}
        reply = self.request("trial", {"run": run, "trial": int(trial), "unit": int(unit)}, arrays)
        return np.array(reply.arrays["trial_r"])

    def finish(self, run: str) -> dict[str, np.ndarray]:
        """Close a run; return its per-voxel ``r``, ``r2`` and ``alpha``, its ``drift`` events and
        per-unit ``unit_stats``."""
        reply = self.request("finish", {"run": run})
        return {name: np.array(a) for name, a in reply.arrays.items()}

    def shutdown(self) -> None:
        self.request("shutdown")

    def close(self) -> None:
        self.socket.close()


def spawn_service(bind: str = "tcp://127.0.0.1:*", timeout_s: float = 60.0):
    """Start ``python -m encoders`` (the service) as a child process; return (process, endpoint).

    The child runs in its own session, so a Ctrl-C meant for the parent does not kill it before
    the parent has said ``shutdown``, and it watches the parent's pid, so it never outlives it.
    """
    proc = subprocess.Popen([sys.executable, "-m", "encoders", "--bind", bind,
                             "--parent-pid", str(os.getpid())],
                            stdout=subprocess.PIPE, stderr=None, text=True, start_new_session=True)
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    line = proc.stdout.readline().strip() if ready else ""
    if not line.startswith("listening on "):
        proc.kill()
        proc.wait()
        said = f"said {line!r}" if ready else f"no answer within {timeout_s:.0f} s"
        raise EncoderError(f"the encoder service did not start ({said})")
    return proc, line[len("listening on "):]
