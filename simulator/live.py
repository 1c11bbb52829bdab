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

from .model import layer_names
from .modes import build_learner
from .pretrain import load_checkpoint
from .results import RunWriter, completed_config, open_results, provenance
from .run import digest, encoder_service, final_scores, newest_r, open_encoder
from .scenario import RunSpec, Scenario, ScenarioError
from .trial_loop import TrialLoop, row_dtype

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
    if cfg["model"]["checkpoint"] == "":
        raise ScenarioError(f"{scenario.path}: model.checkpoint is not set (set it in the file or "
                            "with --set model.checkpoint=DIR)")
    seed = cfg["seeds"][0] if options.seed is None else options.seed
    return RunSpec(variant, options.subject, int(seed), cfg)


class _Reader:
    """The source's trials, taken off it in a thread as they come: (trial, arrival time, trials
    still waiting behind it)."""

    def __init__(self, source):
        self.source = source
        self.queue: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._read, name="live-reader", daemon=True)
        self.thread.start()

    def _read(self):
        try:
            for trial in self.source:
                self.queue.put((trial, time.monotonic()))
        except BaseException as err:  # raised again in the run's thread
            self.queue.put(err)
        else:
            self.queue.put(None)

    def __iter__(self):
        while True:
            item = self.queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item[0], item[1], self.queue.qsize()


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
        lines = [f"live: trial {s['trial']}  sound {s['stimulus']} {s['name']!r} (repeat "
                 f"{s['repeat']})  loss {s['loss']:.3f}  r({ROLLING_TRIALS}) {s['rolling_r']:.3f}"
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


def run_live(scenario: Scenario, source, results: str, variant: str | None = None,
             options: LiveOptions = LiveOptions(), encoder: str | None = None,
             view: LiveView | None = None, log=print) -> dict:
    """Run ``variant`` of ``scenario`` on the trials of a live ``source`` until its stream ends;
    return what the run saw (trials, skipped updates, the source's report, the best score).

    ``source`` yields `replay.trials.Trial` objects (``ZmqSource``: its sounds at the model's
    sample rate, cut with the scenario's ``data.tail_s``) and has ``stimuli`` and ``report()``.
    ``encoder`` is the endpoint of a running encoder service; by default one is started.
    """
    spec = live_spec(scenario, variant, options)
    cfg = spec.config
    for name, want, got in (("model.sample_rate", cfg["model"]["sample_rate"], source.sample_rate),
                            ("data.tail_s", cfg["data"]["tail_s"], source.tail_s)):
        if want != got:
            raise ScenarioError(f"the live source was opened with {name} {got!r}, but variant "
                                f"{spec.variant!r} has {want!r}")
    root = open_results(results, scenario.raw)
    done = completed_config(root, spec.run_id)
    if done is not None and not options.force:
        raise ScenarioError(f"{results} already holds run {spec.run_id}; pass --force to replace "
                            "it, or name this session with --subject")
    load_checkpoint(cfg["model"]["checkpoint"])  # a bad checkpoint fails before we listen
    threads = cfg["model"]["threads"]
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads, user_api="blas"), \
                encoder_service(encoder, None, log, "live") as (endpoint, service):
            return _run(spec, source, root, results, endpoint, service, options, view or LiveView(),
                        log)
    finally:
        torch.set_num_threads(previous)


def _run(spec: RunSpec, source, root, results: str, endpoint: str, service, options: LiveOptions,
         view: LiveView, log) -> dict:
    cfg = spec.config
    learner = build_learner(cfg, spec.seed, source.stimuli, log)
    all_layers = layer_names(learner.model)
    layers = all_layers if cfg["encoder"]["layers"] == ["all"] else cfg["encoder"]["layers"]
    unknown = sorted(set(layers) - set(all_layers))
    if unknown:
        raise ScenarioError(f"encoder.layers names {unknown}; the model has {all_layers}")
    client = EncoderClient(endpoint)
    session_key = f"{spec.run_id}@{digest(results)}@live"
    rolling = Rolling(Mean, window_size=ROLLING_TRIALS)
    loop = writer = None
    n_trials = skipped = written_r = 0
    previous_arrival = float("nan")
    interrupted = False
    log(f"live: {spec.run_id} waiting for trials (updates skipped beyond a backlog of "
        f"{options.max_backlog})")
    try:
        for trial, arrived, waiting in _Reader(source):
            if loop is None:  # the first trial tells the number of voxels
                n_voxels = trial.frames.shape[1]
                open_encoder(client, session_key, layers, n_voxels, 0, cfg["encoder"])
                loop = TrialLoop(learner, client, session_key, layers)
                writer = RunWriter(root, spec.run_id, _attrs(spec, layers, all_layers, source))
                masker = RunningVoxelMask(n_voxels)
            trial = replace(trial, frames=masker.apply(trial.frames))
            learn = waiting <= options.max_backlog
            step = loop.step(trial, learn=learn)
            skipped += step.record.skipped_update
            t0 = time.perf_counter()
            for name, values in loop.rows.items():
                writer.append(name, values[-1], row_dtype(name))
            written_r = _append_scores(writer, loop, written_r)
            write_s = time.perf_counter() - t0
            writer.append("time_write", write_s, np.float64)
            n_trials += 1
            r = newest_r(step.replies)
            if np.isfinite(r):
                rolling.update(r)
            view.update({"trial": trial.index, "stimulus": trial.stimulus, "name": trial.name,
                         "repeat": trial.repeat, "loss": step.record.loss,
                         "rolling_r": rolling.get(), "backlog": waiting, "skipped": skipped,
                         "skipped_now": step.record.skipped_update,
                         "times": {"step": step.times["learn"],
                                   "features": step.times["features"],
                                   "encoder": step.times["encoder"], "write": write_s},
                         "period_s": arrived - previous_arrival})
            previous_arrival = arrived
            if service is not None and service.poll() is not None:
                raise EncoderError(f"the encoder service stopped (exit code {service.returncode})")
    except KeyboardInterrupt:
        interrupted = True  # what arrived is scored and written below; nothing is lost
        log("live: interrupted; writing the trials so far")
    if loop is None:
        client.close()
        raise ScenarioError("the live source ended before any trial: nothing was written "
                            f"(source report: {dict(source.report())})")
    _, final = loop.finish()  # the records are in the store already
    client.close()
    _append_scores(writer, loop, written_r)
    report = dict(source.report())
    writer.finish(final_scores(final, masker.mask),
                  {"n_events": n_trials, "dropped_frames": int(final["dropped_frames"]),
                   "masked_voxels": int(masker.mask.sum()),
                   "skipped_updates": skipped, "live": {**report, "interrupted": interrupted}})
    best = float(np.nanmax(np.nanmean(final["r"], axis=1)))
    log(f"live: {spec.run_id}: {n_trials} trial(s), {skipped} update(s) skipped, best-layer "
        f"score {best:.3f}; frames {report.get('frames', 0)} received, {report.get('missing', 0)} "
        f"missing, {report.get('duplicates', 0)} duplicated, {report.get('late', 0)} late, "
        f"{report.get('bad_messages', 0)} bad message(s); {int(masker.mask.sum())} voxel(s) "
        f"masked, {int(final['dropped_frames'])} frame(s) dropped; written to {results}")
    return {"run_id": spec.run_id, "trials": n_trials, "skipped_updates": skipped,
            "best_score": best, "report": report, "interrupted": interrupted}


def _append_scores(writer: RunWriter, loop: TrialLoop, written: int) -> int:
    """Append the trial scores the encoder has returned, in trial order; return how many are
    written."""
    while written in loop.trial_r:
        writer.append("trial_r", loop.trial_r[written], np.float64)
        written += 1
    return written


def _attrs(spec: RunSpec, layers, all_layers, source) -> dict:
    cfg = spec.config
    return {"run_id": spec.run_id, "variant": spec.variant, "subject": spec.subject,
            "seed": spec.seed, "mode": cfg["mode"], "order": cfg["order"], "config": cfg,
            "layers": list(layers), "delta_w_layers": list(all_layers),
            "store": f"live:{getattr(source, 'where', '') or type(source).__name__}",
            "stimuli": getattr(source.stimuli, "name", ""), "n_events": 0,
            "provenance": provenance(), "masked_voxels": 0, "dropped_frames": 0}
