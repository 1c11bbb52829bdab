"""`cortexreplay live`: one scenario variant run against a live acquisition, in real time.

Trials come from a live source (`replay.live.ZmqSource`, or the LSL one) as the last frame of each
is in. A reader thread takes them off the source at once, so the acquisition never waits on the
learner. Each goes through the same `TrialLoop` as a stored replay; its records are written to the
results store as soon as it is done, its score as soon as the encoder returns it, and the run's
scores when the stream ends (or on Ctrl-C): the run is then ``complete`` like a stored one, and
``summary`` reads it the same way.

**Falling behind.** No trial is ever dropped: trials wait in the reader's queue. When more than
``max_backlog`` trials are waiting as one is taken, that trial's update is skipped (its features
are read and the encoder scores and learns from it as always) until the learner has caught up.
Each skip is recorded (``trials/skipped_update``), counted and shown; the view always shows the
backlog and the time budget of the last trial against the trial period, so the run never falls
behind silently.

**Non-finite frames.** A frame that never came is NaN (`replay.assembly`) and the encoder neither
scores nor learns from it. A voxel that keeps coming non-finite is masked from the moment it has
been so in more than 10% of the frames received (`replay.trials.RunningVoxelMask`): the live form
of a stored session's mask, counted in the run's ``masked_voxels``.
"""
from __future__ import annotations

import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
from river.stats import Mean
from river.utils import Rolling
from threadpoolctl import threadpool_limits

from encoders.client import EncoderClient, EncoderError
from replay.trials import RunningVoxelMask

from .modes import build_learner
from .results import RunWriter, completed_config, open_results
from .run import (check_runs, digest, encoder_service, final_scores, newest_r, open_encoder,
                  run_attrs, scored_layers)
from .scenario import RunSpec, Scenario, ScenarioError
from .trial_loop import TrialLoop

ROLLING_TRIALS = 20  # trials in the view's rolling prequential score


@dataclass(frozen=True)
class LiveOptions:
    """``max_backlog``: trials waiting beyond which updates are skipped (the module's policy);
    ``subject``: the name the run is stored under; ``seed``: the learner's (default: the
    variant's first); ``force``: replace a finished run of the same name."""

    max_backlog: int = 2
    subject: str = "live"
    seed: int | None = None
    force: bool = False

    def __post_init__(self):
        if not (isinstance(self.max_backlog, int) and self.max_backlog >= 0):
            raise ScenarioError(f"Invalid value for the 'max_backlog' parameter. Allowed values "
                                f"are integers >= 0, but got {self.max_backlog!r} instead.")
        if not (isinstance(self.subject, str) and self.subject and "/" not in self.subject):
            raise ScenarioError(f"the live subject must be a non-empty name without '/', got "
                                f"{self.subject!r}")


def live_spec(scenario: Scenario, variant: str | None, options: LiveOptions) -> RunSpec:
    """The one run a live session makes: a variant of ``scenario`` on the live subject."""
    names = list(scenario.variants)
    if variant is None:
        if len(names) != 1:
            raise ScenarioError(f"{scenario.path} has variants {names}: choose one with --variant")
        variant = names[0]
    if variant not in scenario.variants:
        raise ScenarioError(f"{scenario.path} has no variant {variant!r}; it has {names}")
    cfg = scenario.variants[variant]
    if cfg["order"] != "recorded":
        raise ScenarioError(f"variant {variant!r} has order {cfg['order']!r}, but a live run takes "
                            "the sounds in the order they are played: use order = \"recorded\"")
    if cfg["mode"] == "brain-aligned":
        raise ScenarioError(f"variant {variant!r} is brain-aligned, which trains on a stored "
                            "recording's sessions before its replay; live, use brain-continuous")
    seed = cfg["seeds"][0] if options.seed is None else options.seed
    return RunSpec(variant, options.subject, int(seed), cfg)


class _Reader:
    """The source's trials, taken off it in a thread as they come: (trial, arrival time, trials
    still waiting behind it). The thread owns the source: it alone reads it and closes it."""

    def __init__(self, source):
        self.source = source
        self.queue: queue.Queue = queue.Queue()
        self.put = self.taken = 0
        self.thread = threading.Thread(target=self._read, name="live-reader", daemon=True)
        self.thread.start()

    def _read(self):
        try:
            for trial in self.source:
                self.put += 1  # before the trial is in the queue: `waiting` is never negative
                self.queue.put((trial, time.monotonic()))
        except BaseException as err:  # raised again in the run's thread
            self.queue.put(err)
        else:
            self.queue.put(None)
        finally:
            self.source.close()

    def stop(self) -> None:
        """Ask the source to end (from any thread): what it holds still comes through."""
        self.source.stop()

    def join(self, timeout_s: float = 5.0) -> None:
        self.stop()
        self.thread.join(timeout_s)

    def __iter__(self):
        while True:
            item = self.queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            self.taken += 1
            yield item[0], item[1], self.put - self.taken


class LiveView:
    """The terminal view of a live run: two lines redrawn in place on a terminal, one line per
    trial otherwise (a log, or a test's captured output)."""

    def __init__(self, stream=None, interactive: bool | None = None):
        self.stream = stream or sys.stdout
        self.interactive = (self.stream.isatty() if interactive is None else interactive)
        self._drawn = False

    def update(self, status: dict) -> None:
        s = status
        budget = s["times"]
        used = sum(budget.values())
        period = s["period_s"]
        known = np.isfinite(period) and period > 0  # the first trial has no period yet
        share = f"{used / period:.0%}" if known else ""
        over = "  OVER BUDGET" if known and used > period else ""
        rolling = "n/a" if s["rolling_r"] is None else f"{s['rolling_r']:.3f}"  # no score yet
        lines = [f"live: trial {s['trial']}  sound {s['stimulus']} {s['name']!r} (repeat "
                 f"{s['repeat']})  loss {s['loss']:.3f}  r({ROLLING_TRIALS}) {rolling}"
                 f"  backlog {s['backlog']}  skipped updates {s['skipped']}"
                 + ("  [update skipped]" if s["skipped_now"] else ""),
                 "      budget: " + "  ".join(f"{k} {v:.2f} s" for k, v in budget.items())
                 + (f"  = {used:.2f} s of a {period:.2f} s trial period ({share}){over}" if known
                    else f"  = {used:.2f} s (no trial period before the second trial)")]
        if self.interactive and self._drawn:
            self.stream.write("\x1b[2F\x1b[J")  # back two lines and clear: redraw in place
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()
        self._drawn = True


@dataclass
class LivePlan:
    """A live run checked and ready: its spec and its results store (`prepare_live`)."""

    spec: RunSpec
    root: object
    results: str


def prepare_live(scenario: Scenario, results: str, variant: str | None = None,
                 options: LiveOptions = LiveOptions(), stimuli: str = "") -> LivePlan:
    """Everything that can fail before the acquisition is listened to: the variant, its devices
    and checkpoint, and the results store (a run of the same name, finished or not, is kept
    unless ``options.force``: a live session cannot be replayed). ``stimuli``: the store of the
    sounds, recorded with the run."""
    spec = live_spec(scenario, variant, options)
    check_runs(scenario, [spec])
    if stimuli:
        spec.config["data"]["store"] = str(stimuli)  # where the sounds came from, with the run
    root = open_results(results, scenario.raw, scenario.compare)
    if f"runs/{spec.run_id}" in root and not options.force:
        state = "a finished" if completed_config(root, spec.run_id) is not None else \
            "an unfinished"
        raise ScenarioError(f"{results} already holds {state} run {spec.run_id}; it is kept: "
                            "name this session with --subject, or pass --force to replace it")
    return LivePlan(spec, root, str(results))


def run_live(scenario: Scenario, source, results: str, variant: str | None = None,
             options: LiveOptions = LiveOptions(), encoder: str | None = None,
             view: LiveView | None = None, log=print) -> dict:
    """Run ``variant`` of ``scenario`` on the trials of a live ``source`` until its stream ends
    (or Ctrl-C); return what the run saw (trials, skipped updates, the source's report, the best
    score). `prepare_live` then `run_prepared`.

    ``source`` is a `replay.live.LiveSource` (its sounds at the model's sample rate, cut with the
    scenario's ``data.tail_s``); the run takes it over and closes it. ``encoder`` is the endpoint
    of a running encoder service; by default one is started.
    """
    plan = prepare_live(scenario, results, variant, options,
                        getattr(source.stimuli, "name", ""))
    return run_prepared(plan, source, options, encoder, view, log)


def run_prepared(plan: LivePlan, source, options: LiveOptions = LiveOptions(),
                 encoder: str | None = None, view: LiveView | None = None, log=print) -> dict:
    """`run_live` after `prepare_live`: the source may be opened in between (after the checks)."""
    cfg = plan.spec.config
    for name, want, got in (("model.sample_rate", cfg["model"]["sample_rate"], source.sample_rate),
                            ("data.tail_s", cfg["data"]["tail_s"], source.tail_s)):
        if want != got:
            source.close()
            raise ScenarioError(f"the live source was opened with {name} {got!r}, but variant "
                                f"{plan.spec.variant!r} has {want!r}")
    threads = cfg["model"]["threads"]
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads, user_api="blas"), \
                encoder_service(encoder, None, log, "live") as (endpoint, service):
            return _Session(plan, source, endpoint, service, options, view or LiveView(),
                            log).run()
    finally:
        torch.set_num_threads(previous)
        source.close()  # the reader closed it already, unless it never started


class _Session:
    """One live run's loop: trials in, records and scores out, and its end however it comes."""

    def __init__(self, plan: LivePlan, source, endpoint: str, service, options: LiveOptions,
                 view: LiveView, log):
        self.plan, self.source, self.service = plan, source, service
        self.options, self.view, self.log = options, view, log
        self.client = EncoderClient(endpoint)
        self.session = f"{plan.spec.run_id}@{digest(plan.results)}@live"
        self.loop = self.writer = self.masker = None
        self.skipped = self.written_r = 0
        self.interrupted = False

    def run(self) -> dict:
        spec = self.plan.spec
        learner = build_learner(spec.config, spec.seed, self.source.stimuli, self.log)
        self.layers, self.all_layers = scored_layers(spec.config, learner.model)
        reader = _Reader(self.source)
        previous = self._on_interrupt(reader)
        self.log(f"live: {spec.run_id} waiting for trials (updates skipped beyond a backlog of "
                 f"{self.options.max_backlog}; Ctrl-C ends the session)")
        failure = None
        try:
            self._trials(reader, learner)
        except Exception as err:  # scored and written what it can below, then raised again
            failure = err
        finally:
            reader.join()
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        try:
            return self._finish(failure)
        finally:
            self.client.close()

    def _on_interrupt(self, reader: _Reader):
        """Ctrl-C ends the session between trials: the source releases what it holds, and every
        trial that arrived is still scored and written; a second Ctrl-C stops at once."""
        if threading.current_thread() is not threading.main_thread():
            return None
        previous = signal.getsignal(signal.SIGINT)

        def interrupt(signum, frame):
            signal.signal(signal.SIGINT, previous)
            self.interrupted = True
            reader.stop()
            self.log("live: ending the session; scoring what arrived (Ctrl-C again to quit now)")

        signal.signal(signal.SIGINT, interrupt)
        return previous

    def _trials(self, reader: _Reader, learner) -> None:
        rolling = Rolling(Mean, window_size=ROLLING_TRIALS)
        previous_arrival = float("nan")
        for trial, arrived, waiting in reader:
            if self.loop is None:  # the first trial tells the number of voxels
                self._open(learner, trial.frames.shape[1], trial.frame_rate)
            trial = replace(trial, frames=self.masker.apply(trial.frames))
            step = self.loop.step(trial, learn=waiting <= self.options.max_backlog)
            self.skipped += step.record.skipped_update
            t0 = time.perf_counter()
            self.writer.append_trial(self.loop.last_trial())
            self._append_scores()
            write_s = time.perf_counter() - t0
            self.writer.append("time_write", write_s)
            r = newest_r(step.replies)
            if np.isfinite(r):
                rolling.update(r)
            self.view.update({
                "trial": trial.index, "stimulus": trial.stimulus, "name": trial.name,
                "repeat": trial.repeat, "loss": step.record.loss,
                "rolling_r": rolling.get() if rolling.window else None, "backlog": waiting,
                "skipped": self.skipped, "skipped_now": step.record.skipped_update,
                "times": {"step": step.times["learn"], "features": step.times["features"],
                          "encoder": step.times["encoder"], "write": write_s},
                "period_s": arrived - previous_arrival})
            previous_arrival = arrived
            if self.service is not None and self.service.poll() is not None:
                raise EncoderError(f"the encoder service stopped (exit code "
                                   f"{self.service.returncode})")

    def _open(self, learner, n_voxels: int, frame_rate: float) -> None:
        spec = self.plan.spec
        open_encoder(self.client, self.session, self.layers, n_voxels, 0, spec.config["encoder"],
                     frame_rate_hz=frame_rate)
        self.loop = TrialLoop(learner, self.client, self.session, self.layers)
        where = getattr(self.source, "where", "") or type(self.source).__name__
        self.writer = RunWriter(self.plan.root, spec.run_id, run_attrs(
            spec, self.layers, self.all_layers, f"live:{where}", 0))
        self.masker = RunningVoxelMask(n_voxels)

    def _append_scores(self) -> None:
        """Append the trial scores the encoder has returned, in trial order."""
        while self.written_r in self.loop.trial_r:
            self.writer.append("trial_r", self.loop.trial_r[self.written_r])
            self.written_r += 1

    def _finish(self, failure: Exception | None) -> dict:
        """Fetch the scores and mark the run complete; after a failure, as far as it goes (the
        encoder may be gone), then raise the failure again."""
        spec, report = self.plan.spec, dict(self.source.report())
        if self.loop is None:
            if failure is not None:
                raise failure
            if self.interrupted:
                raise KeyboardInterrupt
            raise ScenarioError(f"the live source ended before any trial: nothing was written "
                                f"(source report: {report})")
        try:
            final = self.loop.finish()[1]  # the records are in the store already
        except Exception:
            if failure is not None:  # the run stays unfinished (its records kept), as it was
                raise failure
            raise
        self._append_scores()
        n_trials = len(self.loop.rows["event"])
        masked = self.masker.mask
        live = {**report, "interrupted": self.interrupted}
        if failure is not None:
            live["error"] = f"{type(failure).__name__}: {failure}"
        self.writer.finish(final_scores(final, masked), {
            "n_events": n_trials, "dropped_frames": int(final["dropped_frames"]),
            "masked_voxels": int(masked.sum()), "skipped_updates": self.skipped, "live": live})
        if failure is not None:
            self.log(f"live: the session failed after {n_trials} trial(s); they are scored and "
                     f"written to {self.plan.results}")
            raise failure
        best = float(np.nanmax(np.nanmean(final["r"], axis=1)))
        self.log(f"live: {spec.run_id}: {n_trials} trial(s), {self.skipped} update(s) skipped, "
                 f"best-layer score {best:.3f}; frames {report.get('frames', 0)} received, "
                 f"{report.get('missing', 0)} missing, {report.get('duplicates', 0)} duplicated, "
                 f"{report.get('late', 0)} late, {report.get('bad_messages', 0)} bad message(s); "
                 f"{int(masked.sum())} voxel(s) masked, {int(final['dropped_frames'])} frame(s) "
                 f"dropped; written to {self.plan.results}")
        return {"run_id": spec.run_id, "trials": n_trials, "skipped_updates": self.skipped,
                "best_score": best, "report": report, "interrupted": self.interrupted}


