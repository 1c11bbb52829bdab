"""`cortexreplay run`: every run of a scenario, replayed through its learner and scored online.

Each run is one worker (a process of a local pool sized to the machine's cores, or a task on a
Dask cluster: `simulator.executors`) that replays its subject's trials, asks its learner for
features and lets it learn, and sends features and brain frames to the encoder service over
ZeroMQ. The parent starts the service (on a cluster, each task starts its own), shows progress,
and alone writes each finished run to the results store.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import time
import uuid
from dataclasses import dataclass, replace

import numpy as np
import torch
import zmq
from threadpoolctl import threadpool_limits

from encoders.ceiling import CEILING_FORMULA, noise_ceiling
from encoders.client import EncoderClient, EncoderError, spawn_service
from replay.security import ClientCurve
from replay.store import open_recording
from replay.trials import nonfinite_voxels, repeated_responses, replay_session

from .brain_tuning import resolve_layer
from .modes import (BRAIN_MODES, SELF_SUPERVISED, alignment_sessions, build_learner, load_network,
                    validation_sounds)
from .model import layer_names, names_its_layers
from .probe import check_probe, run_probe
from .soundnet import SAMPLE_RATE as SOUNDNET_RATE
from .alignment import pattern_drift
from .executors import DaskExecutor, LocalExecutor
from .progress import SweepProgress
from .results import (RunResult, completed_config, open_results, provenance, write_brain_drift,
                      write_ceiling, write_run, write_voxel_coords)
from .run_checkpoint import RunCheckpoint
from .trial_loop import TrialLoop, rows_of
from .scenario import RunSpec, Scenario, ScenarioError, with_defaults

CHECKPOINT_EVERY = 25  # trials between a run's checkpoints (`cortexreplay run --checkpoint-every`)


@dataclass(frozen=True)
class RunOptions:
    """How a worker runs: where its checkpoints go (the results store; "" for none), every how
    many trials (0: never), whether it resumes, and the Curve keys of an outside service."""

    results: str = ""
    checkpoint_every: int = 0
    resume: bool = False
    curve: ClientCurve | None = None


def execute_run(spec: RunSpec, store: str, endpoint: str, progress=None,
                options: RunOptions = RunOptions(), masked_voxels=None) -> RunResult:
    """Replay one run; return what it produced. Runs in a worker process.

    The run saves a `RunCheckpoint` every ``options.checkpoint_every`` trials and, with
    ``options.resume``, continues from the last one. ``masked_voxels`` is the session's mask of
    the non-finite policy (``replay.trials``), scanned here when not given.
    """
    torch.set_num_threads(spec.config["model"]["threads"])
    saver = RunCheckpoint(options.results, spec.run_id) if options.results else None
    if saver is not None:
        saver.acquire()  # held while we run: a stale worker of a killed run cannot write beside us
    try:
        with threadpool_limits(limits=spec.config["model"]["threads"], user_api="blas"):
            return _execute_run(spec, store, endpoint, progress, options, saver, masked_voxels)
    finally:
        if saver is not None:
            saver.release()  # pool workers live on to run other runs


def run_with_own_encoder(spec: RunSpec, store: str, endpoint: str | None, progress=None,
                         options: RunOptions = RunOptions(), masked_voxels=None) -> RunResult:
    """`execute_run` with an encoder service of its own when ``endpoint`` is None: a run on a
    cluster's worker, where the parent's loopback service is out of reach."""
    with encoder_service(endpoint, log=lambda *_: None) as (own, _):
        return execute_run(spec, store, own, progress, options, masked_voxels)


def _execute_run(spec: RunSpec, store: str, endpoint: str, progress, options: RunOptions,
                 saver: RunCheckpoint | None, masked) -> RunResult:
    cfg = spec.config
    parent = os.getppid()
    recording = open_recording(store, validate=False)  # the parent validated it
    learner = build_learner(cfg, spec.seed, recording, subject=spec.subject)
    layers, _ = scored_layers(cfg, learner.model)
    session = cfg["data"]["session"]
    n_events = len(recording.events(spec.subject, session))
    n_voxels = recording.responses(spec.subject, session).shape[1]
    if masked is None:
        masked, _ = nonfinite_voxels(recording, spec.subject, session)
    results, every, resume = options.results, options.checkpoint_every, options.resume
    start, encoder_state, rows = 0, None, None
    if saver is not None and resume and saver.exists():
        start, state = saver.load(cfg)
        learner.load_state_dict(state["learner"])
        encoder_state, rows = state["encoder"], rows_of(state)
    client = EncoderClient(endpoint, curve=options.curve)
    enc = cfg["encoder"]
    # One key per run and results store: a resumed run reopens (replaces) its own session in a
    # service that outlived the run, and runs of other stores never collide with it.
    session_key = f"{spec.run_id}@{digest(results or uuid.uuid4().hex)}"
    # Per-*event* scores (the resampling unit is regrouped into sounds by the summary), so runs
    # that replay the same events in different orders can be compared on the same scored trials.
    expected = open_encoder(client, session_key, layers, n_voxels, n_events, enc, encoder_state,
                            recording.frame_rate(spec.subject, session))
    if expected != start:
        raise EncoderError(f"the encoder restored run {spec.run_id} at trial {expected}, but its "
                           f"checkpoint is at trial {start}")
    loop = TrialLoop(learner, client, session_key, layers, rows)
    trials = replay_session(recording, spec.subject, session, order=cfg["order"],
                            seed=spec.seed if cfg["order_seed"] < 0 else cfg["order_seed"],
                            sample_rate=cfg["model"]["sample_rate"], tail_s=cfg["data"]["tail_s"],
                            speed=cfg["data"]["speed"] or None, start=start, masked_voxels=masked)
    for trial in trials:
        if os.getppid() != parent:  # the run that started us is gone: stop, write nothing more
            raise SystemExit(f"run {spec.run_id}: the parent process died")
        step = loop.step(trial)
        if progress is not None:
            progress.put((_progress_key(spec.run_id, results), trial.index, step.record.loss,
                          newest_r(step.replies)))
        done = trial.index + 1
        if saver is not None and every and done % every == 0 and done < n_events:
            saver.save(*loop.state(), cfg)
    rows, final = loop.finish()
    client.close()
    attrs = run_attrs(spec, layers, loop.all_layers, str(store), n_events, int(masked.sum()),
                      int(final["dropped_frames"]))
    return RunResult(spec.run_id, attrs, rows, final_scores(final, masked),
                     mode_sections(cfg, learner, attrs))


def mode_sections(cfg: dict, learner, attrs: dict) -> dict[str, dict[str, np.ndarray]]:
    """What a run keeps beside its trials and scores: a brain-aligned run's held-out sums
    (``heldout``, its training history in ``attrs["alignment"]``), and the downstream probe of
    the network as the run left it (``probe``, its summary in ``attrs["probe_summary"]``, when
    ``probe.sounds`` > 0)."""
    sections = {}
    if getattr(learner, "heldout", None) is not None:
        sections["heldout"] = learner.heldout
        attrs["alignment"] = learner.alignment
    if cfg["probe"]["sounds"] > 0:
        sections["probe"], attrs["probe_summary"] = run_probe(learner.model, cfg)
    return sections


def run_attrs(spec: RunSpec, layers, all_layers, store: str, n_events: int,
              masked_voxels: int = 0, dropped_frames: int = 0) -> dict:
    """The attributes a results store keeps with a run (simulator.results)."""
    cfg = spec.config
    return {"run_id": spec.run_id, "variant": spec.variant, "subject": spec.subject,
            "seed": spec.seed, "mode": cfg["mode"], "order": cfg["order"], "config": cfg,
            "layers": list(layers), "delta_w_layers": list(all_layers), "store": store,
            "n_events": n_events, "provenance": provenance(), "masked_voxels": masked_voxels,
            "dropped_frames": dropped_frames}


def open_encoder(client: EncoderClient, session_key: str, layers, n_voxels: int, n_units: int,
                 enc: dict, state=None, frame_rate_hz: float | None = None) -> int:
    """Open a run's session with the scenario's ``encoder`` settings; return its next trial.
    ``frame_rate_hz`` samples the canonical HRF (``encoder.hrf = "glover"``)."""
    glover = enc.get("hrf", "fir") != "fir"
    return client.open(session_key, layers, n_voxels, n_units, enc["lags"], enc["alphas"],
                       enc["warmup"], state=state, hrf=enc.get("hrf", "fir"),
                       frame_rate_hz=frame_rate_hz if glover else None,
                       **{k: enc[k] for k in ("forgetting", "device", "dtype", "drift_threshold",
                                              "components")})


def final_scores(final: dict, masked) -> dict[str, np.ndarray]:
    """The results store's ``scores`` of a run from the encoder's ``finish`` reply."""
    scores = {"r": final["r"], "r2": final["r2"], "alpha": final["alpha"], "drift": final["drift"],
              "event_stats": final["unit_stats"]}
    if masked is not None:
        for name in ("r", "r2"):  # a masked voxel was sent as zeros: it has no score
            scores[name][:, masked] = np.nan
    return scores


def newest_r(replies: list) -> float:
    """The best layer's trial r of the newest reply (a trial or two behind, pipelined)."""
    return float(np.max(replies[-1][1])) if replies else float("nan")


def digest(text: str) -> str:
    return hashlib.sha1(str(text).encode()).hexdigest()[:12]


def run_scenario(scenario: Scenario, store: str, results: str, jobs: int | None = None,
                 force: bool = False, log=print, progress_bar: bool = True,
                 encoder: str | None = None, resume: bool = False,
                 checkpoint_every: int = CHECKPOINT_EVERY, monitor: str | None = None,
                 curve: ClientCurve | None = None, cluster: str | None = None) -> list[str]:
    """Run every run of ``scenario`` not already in ``results``; return the run ids written.

    ``encoder`` is the endpoint of a running encoder service to use (and leave running); by
    default a service is started for the call and stopped after it. Each run checkpoints every
    ``checkpoint_every`` trials (0: never); ``resume`` continues interrupted runs from their
    checkpoints (without it, a run with a checkpoint is refused, so none is lost by mistake).
    ``monitor``: an endpoint where the service started here publishes each scored trial;
    ``curve``: the client keys for an ``encoder`` that requires them (``replay.security``).
    ``cluster``: the address of a Dask scheduler whose workers run the runs instead of a local
    pool (``jobs`` is then the cluster's size); the stores must be on a file system they share.
    """
    written = run_scenarios([(scenario, store, results)], jobs, force, log, progress_bar, encoder,
                            resume, checkpoint_every, monitor, curve, cluster)
    return [run_id for _, run_id in written]


def run_scenarios(items, jobs: int | None = None, force: bool = False, log=print,
                  progress_bar: bool = True, encoder: str | None = None, resume: bool = False,
                  checkpoint_every: int = CHECKPOINT_EVERY, monitor: str | None = None,
                  curve: ClientCurve | None = None,
                  cluster: str | None = None) -> list[tuple[str, str]]:
    """``run_scenario`` for several ``(scenario, store, results)`` at once, sharing one process
    pool (so no core idles between them) and one encoder service; return the (results, run id)
    pairs written. Every scenario and store is checked before any run starts."""
    if not (isinstance(checkpoint_every, int) and checkpoint_every >= 0):
        raise ScenarioError(f"Invalid value for the 'checkpoint_every' parameter. Allowed values "
                            f"are integers >= 0, but got {checkpoint_every!r} instead.")
    if encoder is not None and monitor is not None:
        raise ScenarioError("--monitor sets up the encoder service the run starts; with "
                            "--encoder, start that service with --monitor instead")
    if cluster is not None and monitor is not None:
        raise ScenarioError("--monitor watches the one encoder service of a local run; on a "
                            "--cluster each run has its own")
    if curve is not None and encoder is None:
        raise ScenarioError("Curve keys are for an outside encoder service: pass --encoder too")
    todo, totals = [], {}
    for item in items:
        pending, trials = _pending(*item, force, resume, log)
        todo += pending
        totals.update(trials)
    if not todo:
        return []
    if curve is not None:
        _check_keys(curve)
    options = RunOptions("", checkpoint_every, resume, curve)
    if cluster is not None:
        executor = DaskExecutor(cluster)
        log(f"run: {len(todo)} run(s) on {executor.where}")
        if encoder is None:  # each task starts a service beside it, on its worker
            return _run_all(executor, todo, None, totals, progress_bar, log, options, None,
                            run_with_own_encoder)
        return _run_all(executor, todo, encoder, totals, progress_bar, log, options)
    with encoder_service(encoder, monitor, log) as (endpoint, service):
        executor = LocalExecutor(max(1, min(jobs or os.cpu_count() or 1, len(todo))))
        return _run_all(executor, todo, endpoint, totals, progress_bar, log, options, service)


@contextlib.contextmanager
def encoder_service(encoder: str | None = None, monitor: str | None = None, log=print,
                    command: str = "run"):
    """``(endpoint, process)`` of the encoder service to use: ``encoder``'s (process None; it is
    left running), or one started here (publishing on ``monitor``) and stopped on leaving."""
    if encoder is not None:
        yield encoder, None
        return
    service, endpoint = spawn_service(monitor=monitor)
    log(f"{command}: encoder service pid {service.pid} at {endpoint}"
        + (f", progress published at {monitor}" if monitor else ""))
    try:
        yield endpoint, service
    finally:
        client = EncoderClient(endpoint, timeout_s=10)
        try:
            client.shutdown()
        except Exception:  # the service may already be gone; never mask the run's own error
            pass
        finally:
            client.close()
        try:
            service.wait(timeout=10)
        except subprocess.TimeoutExpired:
            service.kill()


def _check_keys(curve: ClientCurve) -> None:
    """Load the keys once here, so a bad key file fails before any run starts."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    try:
        curve.apply(sock)
    finally:
        sock.close(linger=0)


def _pending(scenario: Scenario, store, results, force: bool, resume: bool,
             log) -> tuple[list[tuple], dict[str, int]]:
    """The (spec, store, results root, results path, voxel mask) of each run of ``scenario``
    still to do, after checking the store, the scenario, the runs already written and their
    checkpoints; and the trials left to replay, by progress key (`_progress_key`)."""
    recording = open_recording(store)  # validates the store, once
    for cfg in scenario.variants.values():
        cfg["data"]["store"] = str(store)  # the store actually replayed, stored with each run
    specs = scenario.runs(recording.subjects)
    check_runs(scenario, specs)
    for spec in specs:
        if spec.config["mode"] == "brain-aligned":
            try:
                stimuli = [recording.events(spec.subject, s).stimulus for s in
                           alignment_sessions(spec.config, recording, spec.subject)]
                validation_sounds(spec.config, np.concatenate(stimuli), spec.seed)
            except ValueError as err:
                raise ScenarioError(f"{scenario.path}: variant {spec.variant!r}: {err}") from None
    root = open_results(results, scenario.raw, scenario.compare)
    # The non-finite policy's mask: one scan per session, for its ceiling and all its runs.
    masks = {}
    for spec in specs:
        where = (spec.subject, spec.config["data"]["session"])
        if where not in masks:
            masks[where] = nonfinite_voxels(recording, *where)[0]
    _write_brain_measures(root, recording, str(store), specs, masks, log)
    todo, trials = [], {}
    for spec in specs:
        done = completed_config(root, spec.run_id)
        saved = RunCheckpoint(results, spec.run_id)
        if done is not None and not force:
            if with_defaults(done) != spec.config:
                raise ScenarioError(f"{results} already holds run {spec.run_id} made with other "
                                    "settings; pass --force to replace it or choose another --results")
            log(f"run: {spec.run_id} already complete, skipped")
            saved.remove()  # left behind by a run killed between writing and cleaning up
            continue
        n_events = len(recording.events(spec.subject, spec.config["data"]["session"]))
        at = saved.next_trial() if saved.exists() else None
        if saved.exists() and force:
            saved.remove()
        elif saved.exists() and not resume:
            raise ScenarioError(f"{results} holds a checkpoint of run {spec.run_id} at trial "
                                f"{at if at is not None else '?'} (an interrupted run): pass "
                                "--resume to continue it, or --force to start it over")
        elif saved.exists():
            saved.load(spec.config)  # refuses a checkpoint of other settings, before any work
            log(f"run: {spec.run_id} resumes at trial {at} of {n_events}")
            n_events -= at
        todo.append((spec, str(store), root, str(results),
                     masks[spec.subject, spec.config["data"]["session"]]))
        trials[_progress_key(spec.run_id, str(results))] = n_events
    if todo:
        root.require_group("checkpoints")  # a group, so zarr lists the store without warnings
    return todo, trials


def check_runs(scenario: Scenario, specs) -> None:
    """What fails before anything is written or started: devices torch cannot see, and each
    run's checkpoint, which must be set and must load (each distinct one loaded once)."""
    for spec in specs:
        for section in ("model", "encoder"):
            device = spec.config[section]["device"]
            if device.startswith("cuda") and not torch.cuda.is_available():
                raise ScenarioError(f"{scenario.path}: {section}.device is {device!r} but torch "
                                    "sees no CUDA device; use 'cpu'")
    checkpoints = {s.config["model"]["checkpoint"] for s in specs}
    if "" in checkpoints:
        raise ScenarioError(f"{scenario.path}: model.checkpoint is not set (set it in the file or "
                            "with --set model.checkpoint=DIR)")
    models = {ckpt: load_network(ckpt)[0] for ckpt in checkpoints}
    names = {ckpt: layer_names(model) for ckpt, model in models.items()}
    for spec in specs:
        _check_network(scenario.path, spec, models[spec.config["model"]["checkpoint"]])
        trainable = spec.config["model"]["trainable_layers"]
        unknown = sorted(set(trainable) - set(names[spec.config["model"]["checkpoint"]]) - {"all"})
        if unknown or ("all" in trainable and len(trainable) > 1):
            raise ScenarioError(f"{scenario.path}: variant {spec.variant!r}: model.trainable_layers "
                                f"is {trainable}; give [\"all\"] or names among "
                                f"{names[spec.config['model']['checkpoint']]}")


def _check_network(where: str, spec: RunSpec, model) -> None:
    """A run's mode and settings against its network: SoundNet has no self-supervised loss and
    hears 22 050 Hz; the brain modes choose what learns with ``alignment.*``."""
    cfg, mode = spec.config, spec.config["mode"]
    what = f"{where}: variant {spec.variant!r}"
    if names_its_layers(model):
        if mode in SELF_SUPERVISED:
            raise ScenarioError(f"{what}: mode {mode!r} learns with wav2vec 2.0's self-supervised "
                                "loss, which SoundNet lacks; use frozen, random, brain-aligned or "
                                "brain-continuous, or a wav2vec 2.0 checkpoint")
        if cfg["model"]["autocast"] != "none":
            raise ScenarioError(f"{what}: model.autocast is for wav2vec 2.0's forward passes; "
                                "leave it at \"none\" for SoundNet")
        if cfg["model"]["sample_rate"] != SOUNDNET_RATE:
            raise ScenarioError(f"{what}: SoundNet hears {SOUNDNET_RATE} Hz audio, but "
                                f"model.sample_rate is {cfg['model']['sample_rate']}; set "
                                f"model.sample_rate = {SOUNDNET_RATE}")
    if mode in BRAIN_MODES:
        if cfg["model"]["trainable_layers"] != ["all"]:
            raise ScenarioError(f"{what}: mode {mode!r} chooses the layers that learn with "
                                "alignment.train_from and alignment.layer; leave "
                                "model.trainable_layers at [\"all\"]")
        try:
            top = resolve_layer(model, cfg["alignment"]["layer"], "alignment.layer")
            first = resolve_layer(model, cfg["alignment"]["train_from"], "alignment.train_from")
        except ValueError as err:
            raise ScenarioError(f"{what}: {err}") from None
        if cfg["alignment"]["train_from"] != "last" and first > top:
            raise ScenarioError(f"{what}: alignment.train_from ({cfg['alignment']['train_from']!r}) "
                                f"lies above alignment.layer ({cfg['alignment']['layer']!r}); "
                                "choose a layer at or below it")
    try:
        check_probe(cfg)
    except ValueError as err:
        raise ScenarioError(f"{what}: {err}") from None


def scored_layers(cfg: dict, model) -> tuple[list[str], list[str]]:
    """The layers the encoder scores (``encoder.layers``) and all the model's, in order."""
    all_layers = layer_names(model)
    layers = all_layers if cfg["encoder"]["layers"] == ["all"] else cfg["encoder"]["layers"]
    unknown = sorted(set(layers) - set(all_layers))
    if unknown:
        raise ScenarioError(f"encoder.layers names {unknown}; the model has {all_layers}")
    return layers, all_layers


def _write_brain_measures(root, recording, store: str, specs, masks, log) -> None:
    """Each replayed subject's noise ceiling and representational drift between repeats (they are
    the brain's alone): computed once, and again when the store, session or tail changes."""
    for spec in specs:
        session, tail_s = spec.config["data"]["session"], spec.config["data"]["tail_s"]
        key = f"ceilings/{spec.subject}"
        if key in root and f"voxels/{spec.subject}" in root and {
                k: root[key].attrs.get(k) for k in ("store", "session", "tail_s")} == {
                "store": store, "session": session, "tail_s": tail_s}:
            continue
        write_voxel_coords(root, spec.subject, recording.voxel_coords(spec.subject))
        repeated = repeated_responses(recording, spec.subject, session, tail_s,
                                      masked_voxels=masks[spec.subject, session])
        if repeated is None:
            log(f"run: no repeated sound in {spec.subject} session {session}: no noise ceiling")
            continue
        responses, stimuli = repeated
        attrs = {"store": store, "session": session, "tail_s": tail_s, "n_sounds": len(stimuli),
                 "n_repeats": responses.shape[1]}
        write_ceiling(root, spec.subject, noise_ceiling(responses),
                      {"formula": CEILING_FORMULA, **attrs})
        drift = np.full(recording.n_stimuli, np.nan)
        drift[stimuli] = pattern_drift(responses.mean(axis=2))
        write_brain_drift(root, spec.subject, drift, attrs)


def _progress_key(run_id: str, results: str) -> str:
    """How progress names a run: its id, and its results store's digest (one sweep may fill
    several stores with runs of the same id)."""
    return f"{run_id}@{digest(results)}"


def _run_all(executor, todo, endpoint, totals, progress_bar, log, options: RunOptions,
             service=None, run=execute_run) -> list[tuple[str, str]]:
    """Run ``todo`` on ``executor`` (``run`` in each worker); write each run as it finishes. On
    the first failure (or Ctrl-C, or the death of the encoder ``service`` we started) the other
    runs are stopped and the error is raised; finished runs stay written, interrupted ones keep
    their checkpoints."""
    several = len({t[3] for t in todo}) > 1
    names = {_progress_key(spec.run_id, results): spec.run_id + (f" in {results}" if several else "")
             for spec, _, _, results, _ in todo}
    progress = SweepProgress({names[k]: n for k, n in totals.items()}, enabled=progress_bar)
    written = []
    try:
        pending = {}
        for spec, store, root, results, masked in todo:
            handle = executor.submit(spec.run_id, run, spec, store, endpoint, executor.progress,
                                     replace(options, results=results), masked)
            pending[results, spec.run_id] = (root, handle)
        while pending:
            time.sleep(0.2)
            _show(executor, progress, names)
            if service is not None and service.poll() is not None:
                raise EncoderError(f"the encoder service stopped (exit code {service.returncode}); "
                                   "rerun with --resume to continue from the checkpoints")
            for key in [k for k, (_, h) in pending.items() if executor.done(h)]:
                root, handle = pending.pop(key)
                result = executor.result(handle)  # re-raises a worker's exception here
                write_run(root, result)
                RunCheckpoint(key[0], key[1]).remove()  # after the run is whole in the store
                written.append(key)
                _show(executor, progress, names)
                progress.run_done(names[_progress_key(key[1], key[0])])
                best = max(np.nanmean(result.scores["r"], axis=1))
                where = f" in {key[0]}" if several else ""
                log(f"run: {key[1]}{where} done, best-layer score {best:.3f}")
    except BaseException:
        executor.stop()
        raise
    finally:
        executor.close()
        _show(executor, progress, names)
        progress.close()
    return written


def _show(executor, progress: SweepProgress, names: dict) -> None:
    """The trials the workers reported since last time, on the progress bars."""
    for key, _, loss, r in executor.drain():
        progress.trial(names.get(key, key), loss, r)
