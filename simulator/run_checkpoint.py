"""Trial-level checkpoints of a run: learner, encoder and the trials so far, in one file.

A run writes its checkpoint every N trials to ``<results>/checkpoints/<run>.safetensors``: the
network's weights and AdamW state with its random streams, the encoder service's state (from a
``snapshot``), and the per-trial records, as a tree of arrays and JSON scalars
(``replay.tree``). safetensors holds arrays and a string-to-string header only, so reading a
checkpoint never unpickles anything. The file is written beside its final name, flushed to disk,
then renamed over it: a crash mid-write leaves the previous checkpoint whole, never a torn one.
While a run holds the checkpoint's lock (``<run>.lock``, released by the OS when the process
dies), no other process may resume it.

>>> import tempfile
>>> tmp = tempfile.TemporaryDirectory()
>>> ckpt = RunCheckpoint(tmp.name, "continuous/sub-01/seed-0")
>>> ckpt.save(12, {"rows": {"loss": np.arange(12.0)}}, config={"lr": 1e-4})
>>> trial, state = ckpt.load(config={"lr": 1e-4})
>>> trial, float(state["rows"]["loss"][-1])
(12, 11.0)
>>> ckpt.remove(); ckpt.exists()
False
>>> tmp.cleanup()
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from replay.tree import flatten, unflatten

from .scenario import with_defaults

FORMAT = "cortexreplay.checkpoint"
VERSION = 1

try:  # POSIX advisory locks; elsewhere runs are not guarded against a second resumer
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


class CheckpointError(ValueError):
    """A checkpoint that cannot be used as asked; the message says what to do."""


class RunCheckpoint:
    """The checkpoint file of one run of a results store."""

    def __init__(self, results: str | Path, run_id: str):
        self.run_id = run_id
        folder = Path(results) / "checkpoints"
        name = run_id.replace("/", "__")  # one flat folder: no zarr group nests inside it
        self.path = folder / f"{name}.safetensors"
        self._lock_path = folder / f"{name}.lock"
        self._lock = None

    def exists(self) -> bool:
        return self.path.exists()

    def save(self, next_trial: int, state: dict, config: dict) -> None:
        """Write ``state`` (a tree) as the run's state before trial ``next_trial``, atomically."""
        scalars, arrays = flatten(state)
        header = {"format": FORMAT, "version": str(VERSION), "run": self.run_id,
                  "next_trial": str(int(next_trial)), "config": json.dumps(config),
                  "scalars": json.dumps(scalars)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for stale in self.path.parent.glob(f"{self.path.name}.tmp-*"):  # a killed writer's
            stale.unlink(missing_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
        try:
            save_file({k: np.ascontiguousarray(a) for k, a in arrays.items()}, str(tmp),
                      metadata=header)
            with open(tmp, "rb+") as f:  # on disk before the rename makes it the checkpoint
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(self.path.parent)

    def load(self, config: dict) -> tuple[int, dict]:
        """``(next trial, state)`` of the checkpoint, after checking it was made by a run with
        this ``config``."""
        try:
            with safe_open(str(self.path), framework="np") as f:
                header = f.metadata() or {}
                arrays = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{self.path.name}: unreadable checkpoint of run {self.run_id} "
                                  f"({err}); pass --force to start the run over") from None
        if header.get("format") != FORMAT or header.get("version") != str(VERSION):
            raise CheckpointError(f"{self.path.name}: not a version {VERSION} {FORMAT} file; "
                                  "pass --force to start the run over")
        # Keys added since the checkpoint was made count at their defaults (as for stored runs).
        saved = with_defaults(json.loads(header["config"]))
        if saved != with_defaults(json.loads(json.dumps(config))):
            raise CheckpointError(f"the checkpoint of run {self.run_id} was made with other "
                                  "settings; resume with the same scenario, or pass --force to "
                                  "start it over")
        return int(header["next_trial"]), unflatten(json.loads(header["scalars"]), arrays)

    def next_trial(self) -> int | None:
        """The trial the checkpoint resumes at (reads only the header), or None without one."""
        return self.trial_of(self.path)

    @staticmethod
    def trial_of(path: str | Path) -> int | None:
        """The trial the checkpoint file at ``path`` resumes at, or None if it is not readable."""
        try:
            with safe_open(str(path), framework="np") as f:
                return int((f.metadata() or {})["next_trial"])
        except (SafetensorError, OSError, ValueError, KeyError):
            return None

    def remove(self) -> None:
        """Delete the checkpoint (its run is written whole in the results store)."""
        self.path.unlink(missing_ok=True)

    def acquire(self) -> None:
        """Hold the run's lock until `release` or the process's end; refuse if another
        process (an earlier, still living run) holds it."""
        if fcntl is None:
            return
        self._lock_path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = open(self._lock_path, "a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            self._lock = None
            raise CheckpointError(f"run {self.run_id} is still running in another process; wait "
                                  "for it to end (or stop it) before resuming") from None

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file releases the lock
            self._lock = None


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
