"""The progress display of a sweep: one bar for the whole sweep, and one per run in progress.

The sweep's bar counts trials over every run still to do (so its rate and time left are those of
the sweep) and says how many runs are done; each running run has its own bar under it, with its
loss and its rolling prequential r over the last 20 trials, which closes when the run is written.
"""
from __future__ import annotations

import numpy as np
from river.stats import Mean
from river.utils import Rolling
from tqdm import tqdm

ROLLING_TRIALS = 20


class SweepProgress:
    """Bars of a sweep of ``totals`` ({run id: trials left to replay}); ``enabled=False`` shows
    nothing (``--no-progress``). ``file`` is where the bars go (stderr by default)."""

    def __init__(self, totals: dict[str, int], enabled: bool = True, file=None):
        self.totals, self.enabled, self.file = dict(totals), enabled, file
        self.n_runs, self.n_done = len(totals), 0
        self.bar = tqdm(total=sum(totals.values()), unit="trial", desc="sweep", disable=not enabled,
                        dynamic_ncols=True, file=file, position=0)
        self._runs: dict[str, tqdm] = {}
        self._rolling: dict[str, Rolling] = {}
        self._slots: list[str | None] = []
        self._update_sweep()

    def trial(self, run_id: str, loss: float, r: float) -> None:
        """One trial of ``run_id`` was replayed, with this loss and newest trial r."""
        window = self._rolling.setdefault(run_id, Rolling(Mean, window_size=ROLLING_TRIALS))
        if np.isfinite(r):
            window.update(r)
        self.bar.update(1)
        bar = self._bar_of(run_id)
        bar.update(1)
        bar.set_postfix_str(f"loss {loss:.3f} r({ROLLING_TRIALS}) {window.get():.3f}", refresh=False)

    def run_done(self, run_id: str) -> None:
        """``run_id`` was written: its bar closes and the sweep counts one more run done."""
        self.n_done += 1
        bar = self._runs.pop(run_id, None)
        if bar is not None:
            self._slots[self._slots.index(run_id)] = None
            bar.close()
        self._update_sweep()

    def close(self) -> None:
        for bar in self._runs.values():
            bar.close()
        self._runs.clear()
        self.bar.close()

    def _bar_of(self, run_id: str) -> tqdm:
        bar = self._runs.get(run_id)
        if bar is None:
            slot = self._slots.index(None) if None in self._slots else len(self._slots)
            if slot == len(self._slots):
                self._slots.append(None)
            self._slots[slot] = run_id
            bar = tqdm(total=self.totals.get(run_id), unit="trial", desc=run_id, leave=False,
                       disable=not self.enabled, dynamic_ncols=True, file=self.file,
                       position=slot + 1)
            self._runs[run_id] = bar
        return bar

    def _update_sweep(self) -> None:
        self.bar.set_postfix_str(f"runs {self.n_done}/{self.n_runs} done")
