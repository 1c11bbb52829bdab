"""Where the runs of a sweep execute: a local process pool, or the workers of a Dask cluster.

Both give the runner one interface: ``submit`` a run, ask whether it is ``done``, take its
``result`` (a worker's exception is raised here), ``drain`` the progress messages its trials sent,
and ``stop`` everything on a failure or Ctrl-C. Workers only compute; the runner alone writes the
results store, so runs on many machines never write the same store at once.

On a cluster each run starts its own encoder service on its worker (unless ``--encoder`` names one
that every worker can reach), and the recording and results stores must be on a file system that
the workers share (their checkpoints go to the results store, for ``--resume``).
"""
from __future__ import annotations

import multiprocessing
import queue as queue_module
import signal
import uuid


class RunStopped(RuntimeError):
    """Raised in a worker's run when the sweep was stopped (a failure elsewhere, or Ctrl-C)."""


def _ignore_sigint() -> None:
    # Ctrl-C reaches the whole process group: the parent alone handles it (and ends the pool).
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class LocalExecutor:
    """Runs in ``jobs`` processes of this machine (spawned: torch and threads do not fork well)."""

    remote = False  # the workers reach an encoder service on this machine's loopback

    def __init__(self, jobs: int):
        ctx = multiprocessing.get_context("spawn")
        self._manager = ctx.Manager()
        self.progress = self._manager.Queue()
        self._pool = ctx.Pool(jobs, initializer=_ignore_sigint)
        self.where = f"{jobs} local process(es)"

    def submit(self, run_id: str, fn, *args):
        return self._pool.apply_async(fn, args)

    @staticmethod
    def done(handle) -> bool:
        return handle.ready()

    @staticmethod
    def result(handle):
        return handle.get()

    def drain(self) -> list[tuple]:
        out = []
        while True:
            try:
                out.append(self.progress.get_nowait())
            except (queue_module.Empty, EOFError, OSError):
                return out

    def stop(self) -> None:
        self._pool.terminate()

    def close(self) -> None:
        self._pool.close()
        self._pool.join()
        self._manager.shutdown()


class DaskProgress:
    """A run's progress reporter on a Dask worker: puts each trial's message on the sweep's
    distributed queue, and raises `RunStopped` once the sweep's stop event is set."""

    def __init__(self, queue_name: str, stop_name: str):
        self.queue_name, self.stop_name = queue_name, stop_name
        self._queue = self._stop = None

    def __getstate__(self):  # the distributed objects are made again on the worker
        return {"queue_name": self.queue_name, "stop_name": self.stop_name}

    def __setstate__(self, state):
        self.__init__(state["queue_name"], state["stop_name"])

    def put(self, message) -> None:
        from distributed import Event, Queue

        if self._queue is None:
            self._queue, self._stop = Queue(self.queue_name), Event(self.stop_name)
        if self._stop.is_set():
            raise RunStopped("the sweep was stopped")
        self._queue.put(message)


class DaskExecutor:
    """Runs on the workers of the Dask scheduler at ``address`` (``tcp://host:8786``, say, from
    ``dask scheduler`` or dask-jobqueue's ``SLURMCluster``), each run one task."""

    remote = True  # workers may be other machines: this one's loopback is not theirs

    def __init__(self, address: str, timeout_s: float = 10.0):
        try:
            from distributed import Client, Event, Queue
        except ImportError:
            raise ValueError("--cluster needs Dask's distributed package: pip install "
                             "'cortexreplay[cluster]'") from None
        try:
            self._client = Client(address, timeout=timeout_s, set_as_default=False)
        except (OSError, TimeoutError) as err:
            raise ValueError(f"--cluster {address}: no Dask scheduler answered ({err}); start one "
                             "with 'dask scheduler' (or dask-jobqueue) and give its address") from None
        token = uuid.uuid4().hex[:12]
        self.progress = DaskProgress(f"cortexreplay-progress-{token}", f"cortexreplay-stop-{token}")
        self._queue = Queue(self.progress.queue_name, client=self._client)
        self._stop = Event(self.progress.stop_name, client=self._client)
        self._futures = []
        workers = self._client.scheduler_info().get("workers", {})
        threads = sum(w.get("nthreads", 1) for w in workers.values())
        shared = sorted(a for a, w in workers.items() if w.get("nthreads", 1) > 1)
        if shared:  # a run sets its process's torch and numpy random state and thread counts
            self._client.close()
            raise ValueError(f"--cluster {address}: worker(s) {', '.join(shared)} run several "
                             "threads, and runs sharing a process would mix their random "
                             "streams; start workers with --nthreads 1")
        self.where = f"Dask at {address} ({len(workers)} worker(s), {threads} thread(s))"

    def submit(self, run_id: str, fn, *args):
        future = self._client.submit(fn, *args, pure=False,
                                     key=f"cortexreplay-{run_id}-{uuid.uuid4().hex[:8]}")
        self._futures.append(future)
        return future

    @staticmethod
    def done(future) -> bool:
        return future.done()

    @staticmethod
    def result(future):
        return future.result()

    def drain(self) -> list[tuple]:
        try:
            return [tuple(m) for m in self._queue.get(batch=True)]
        except Exception:  # the scheduler went away: the futures will say so
            return []

    def stop(self, timeout_s: float = 30.0) -> None:
        """Ask every task to stop at its next trial and wait (up to ``timeout_s``) for them to let
        go of their checkpoints (a cancelled future's task would run on unseen); then cancel."""
        from distributed import wait

        left = [f for f in self._futures if not f.done()]
        try:
            self._stop.set()
            wait(left, timeout=timeout_s)
        except Exception:  # a scheduler already gone, or a task slow to stop: cancel what is left
            pass
        try:
            self._client.cancel(left)
        except Exception:
            pass

    def close(self) -> None:
        self._client.close()
