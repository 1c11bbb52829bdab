"""A trial as a run makes it, pipelined, against the bare transformers work it contains.

bench/realtime.py adds up a trial's parts in one process. A run is laid out otherwise: the
learner works in its process while the encoder, a service process behind ZeroMQ, scores the
previous trial (`simulator.trial_loop.TrialLoop`, at most 4 trials in flight), and each trial's
record is appended to the results store as a live run does (`simulator.results.RunWriter`). Here
``TRIALS`` trials of a 10 s sound and 20 frames of 2000 voxels go through exactly that, on the
machine's 2 cores shared by both processes, and the time per trial (the whole sequence, the last
replies drained, divided by the number of trials) is set against a bare transformers step plus
the no-grad feature forward a continuous trial makes, timed in the same process right after
(alone: the encoder has drained). Its excess over that is what the pipeline costs: the encoder where it does not
hide behind the learner, the transport, alignment and writes.

Encoders: ``components = 0`` for tiny (its layers are narrower than 256 anyway) and 256 for
small and base (the setting with which base keeps up, docs/performance.md).
"""
from __future__ import annotations

import statistics
import tempfile
import time

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from encoders.client import EncoderClient, spawn_service
from replay.trials import Trial
from simulator.learner import Learner
from simulator.model import build_model, layer_names
from simulator.results import RunWriter, open_results
from simulator.run import open_encoder
from simulator.scenario import DEFAULTS
from simulator.trial_loop import TrialLoop

from .realtime import FRAME_RATE, SOUND_S, SR, THREADS, TRIAL_S, VOXELS, trial_sound
from .timing import bare_step

SIZES = ("tiny", "small", "base")
TRIALS = {"tiny": 8, "small": 4, "base": 3}   # after one warm-up trial each
COMPONENTS = {"tiny": 0, "small": 256, "base": 256}
TARGET = 0.10


def _trials(n: int, wave: np.ndarray):
    rng = np.random.default_rng(1)
    n_frames = int(TRIAL_S * FRAME_RATE)
    return [Trial(index=k, event=k, stimulus=0, name="speech", category="speech", repeat=k,
                  onset_s=k * TRIAL_S, duration_s=SOUND_S, offset_s=0.0, waveform=wave,
                  sample_rate=SR, frames=rng.standard_normal((n_frames, VOXELS), np.float32),
                  frame_rate=FRAME_RATE) for k in range(n)]


def case(size: str, wave: np.ndarray, log=print) -> dict:
    n = TRIALS[size]
    bare, nograd = bare_step(build_model(size, seed=0), wave)
    learner = Learner(build_model(size, seed=0), "continuous", lr=1e-4, steps_per_sound=1, seed=0)
    layers = layer_names(learner.model)
    encoder = {**DEFAULTS["encoder"], "components": COMPONENTS[size]}
    trials = _trials(n + 1, wave)
    service, endpoint = spawn_service()
    client = EncoderClient(endpoint, timeout_s=600)
    tmp = tempfile.TemporaryDirectory()
    try:
        open_encoder(client, "pipelined", layers, VOXELS, 0, encoder)
        loop = TrialLoop(learner, client, "pipelined", layers)
        writer = RunWriter(open_results(f"{tmp.name}/results.zarr"), "bench/pipelined/seed-0", {})

        def trial(t):
            loop.step(t)
            writer.append_trial(loop.last_trial())

        log(f"pipelined: {size}: warm-up")
        trial(trials[0])
        loop.drain()
        bare(), nograd()
        # The pipelined trials back to back, as a run sends them, the last replies drained;
        # then the bare work alone (interleaved, the encoder would still be scoring beside it).
        t0 = time.perf_counter()
        for k, t in enumerate(trials[1:], start=1):
            log(f"pipelined: {size}: trial {k}/{n}")
            trial(t)
        loop.drain()
        pipelined = time.perf_counter() - t0
        bare_times = []
        for _ in range(n):
            t0 = time.perf_counter()
            bare(), nograd()
            bare_times.append(time.perf_counter() - t0)
        loop.client.finish("pipelined")
    finally:
        client.shutdown()
        client.close()
        service.wait(timeout=30)
        tmp.cleanup()
    per_trial, bare_s = pipelined / n, statistics.median(bare_times)
    return {"size": size, "trials": n, "components": COMPONENTS[size], "per_trial_s": per_trial,
            "bare_s": bare_s, "overhead": per_trial / bare_s - 1.0,
            "realtime_factor": TRIAL_S / per_trial}


def run(log=print) -> dict:
    torch.set_num_threads(THREADS)
    wave = trial_sound()
    with threadpool_limits(limits=THREADS, user_api="blas"):
        cases = [case(size, wave, log) for size in SIZES]
    return {"bench": "pipelined", "threads": THREADS, "voxels": VOXELS, "trial_s": TRIAL_S,
            "target": TARGET, "cases": cases}


def markdown(r: dict) -> str:
    cases = r["cases"]
    head = " | ".join(f"`{c['size']}`" for c in cases)
    rows = [("encoder components", lambda c: str(c["components"])),
            ("pipelined trial (learner + encoder service + writes), per trial",
             lambda c: f"{c['per_trial_s']:.2f} s"),
            ("bare step + no-grad forward", lambda c: f"{c['bare_s']:.2f} s"),
            ("overhead of the pipeline", lambda c: f"{c['overhead']:+.0%}"),
            ("real-time factor (20 s / trial)", lambda c: f"{c['realtime_factor']:.2f}")]
    lines = ["## A pipelined trial against the bare work it contains (`bench/pipelined.py`)", "",
             "The full trial above adds up its parts in one process; a run overlaps them: the "
             "learner takes a sound while the encoder service, another process behind ZeroMQ, "
             "scores the previous trial (`simulator.trial_loop.TrialLoop`, at most 4 trials in "
             "flight), and each trial's record is appended to a results store as a live run does. "
             "Here " + ", ".join(f"{c['trials']} (`{c['size']}`)" for c in cases)
             + f" trials of the 10 s sound with 20 frames of {r['voxels']} voxels go through exactly "
             "that, back to back, the last replies drained; the time per trial is set against the "
             "bare step plus the no-grad feature forward, timed right after in the same process. "
             f"The learner has {r['threads']} torch threads and the service one BLAS thread, on "
             "the same 2 cores: on this machine the encoder cannot hide behind the learner, it "
             "competes with it.", "",
             f"| | {head} |", "|---|" + "---|" * len(cases)]
    lines += [f"| {name} | " + " | ".join(fmt(c) for c in cases) + " |" for name, fmt in rows]
    verdict = "; ".join(f"`{c['size']}` {c['overhead']:+.0%} "
                        f"{'met' if c['overhead'] <= r['target'] else 'missed'}" for c in cases)
    lines += ["", f"Target: the pipeline at most +{r['target']:.0%} over the bare work: {verdict}.",
              ""]
    return "\n".join(lines)


if __name__ == "__main__":
    import json
    import sys
    from pathlib import Path

    result = run()
    Path("bench/results").mkdir(parents=True, exist_ok=True)
    Path("bench/results/pipelined.json").write_text(json.dumps(result, indent=2))
    print(markdown(result))
    sys.exit(0)
