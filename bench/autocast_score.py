"""bfloat16 autocast against float32 in whole runs: the score difference, and the time it costs.

bench/realtime.py times one trial under bf16 autocast and compares its features with float32's;
this runs the same continuous scenario twice on one synthetic recording, ``model.autocast`` "none"
and "bfloat16", and compares what a user would: the prequential score (voxel-mean r at the best
layer) with its paired 95% interval over sounds and permutation p (``simulator.summary``), the
per-voxel r, and the learner's seconds per trial (features + update), from the runs' own records.

The recording is the demo's cortex at a third of its size (24 two-second sounds, 2 presentations,
300 voxels, the plastic teacher), with the demo's tiny checkpoint settings; both runs share one
process pool, so they see the same machine.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

SCENARIO = """\
description = "float32 against bfloat16 autocast"
mode = "continuous"
order = "recorded"
seeds = [0]
compare = [["bfloat16", "float32"]]

[learning]                 # the demo's
lr = 3e-3
steps_per_sound = 3
retention = 0.9

[encoder]
lags = [0, 1, 2, 3, 4, 5]
alphas = [1.0, 10.0, 100.0, 1000.0, 10000.0]
warmup = 10

[variants.float32]

[variants.bfloat16.model]
autocast = "bfloat16"
"""
SOUNDS = 24


def run(log=print) -> dict:
    from simulator.cortex import CortexSettings, synthesize
    from simulator.pretrain import PretrainSettings, pretrain
    from simulator.results import read_runs
    from simulator.run import run_scenario
    from simulator.scenario import load_scenario
    from simulator.summary import summarize

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        log("autocast_score: pretraining the tiny checkpoint (the demo's settings)")
        checkpoint = pretrain(tmp / "checkpoint", PretrainSettings(size="tiny", seed=0), log=None)
        log(f"autocast_score: synthesising {SOUNDS} sounds")
        store = synthesize(tmp / "rec.zarr", checkpoint,
                           CortexSettings(seed=0, sounds=SOUNDS, duration_s=2.0, subjects=1,
                                          voxels=300, repeats=2, plasticity=3e-3, retention=0.9,
                                          snr=1.0), log=None)
        (tmp / "autocast.toml").write_text(SCENARIO)
        scenario = load_scenario(tmp / "autocast.toml", [f"model.checkpoint={checkpoint}"])
        run_scenario(scenario, str(store), str(tmp / "res.zarr"), jobs=2, log=log,
                     progress_bar=False)
        runs = {r["variant"]: r for r in read_runs(tmp / "res.zarr")}
        summary = summarize(tmp / "res.zarr", n_boot=1000, n_perm=1000)
    out = {"bench": "autocast_score", "sounds": SOUNDS, "trials": int(runs["float32"]["n_events"])}
    for name, r in runs.items():
        mean_r = np.nanmean(r["scores"]["r"], axis=1)
        best = int(np.nanargmax(mean_r))
        t = r["trials"]
        out[name] = {"score": float(mean_r[best]), "best_layer": r["layers"][best],
                     "learner_s": float(np.median(t["time_features"] + t["time_learn"])),
                     "loss": float(np.nanmean(t["loss"]))}
    (comparison,) = summary["comparisons"]
    out["difference"] = {"delta": comparison["delta"], "ci": comparison["ci95"], "p": comparison["p"]}
    a, b = (runs[k]["scores"]["r"] for k in ("bfloat16", "float32"))
    out["voxel_r"] = {"max_abs": float(np.nanmax(np.abs(a - b))),
                      "corr": float(np.corrcoef(a.ravel(), b.ravel())[0, 1])}
    out["slowdown"] = out["bfloat16"]["learner_s"] / out["float32"]["learner_s"]
    return out


def markdown(r: dict) -> str:
    f, b, d = r["float32"], r["bfloat16"], r["difference"]
    ci = d.get("ci")
    interval = f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else ""
    return "\n".join([
        "## bfloat16 autocast in a whole run (`bench/autocast_score.py`)",
        "",
        f"The demo's continuous scenario on {r['sounds']} synthetic sounds x 2 presentations "
        f"({r['trials']} trials, tiny network), run with `model.autocast` \"none\" and "
        "\"bfloat16\" in the same process pool.",
        "",
        "| | float32 | bfloat16 |",
        "|---|---|---|",
        f"| score (voxel-mean r, best layer) | {f['score']:.3f} ({f['best_layer']}) | "
        f"{b['score']:.3f} ({b['best_layer']}) |",
        f"| learner per trial (features + update, median) | {f['learner_s']:.3f} s | "
        f"{b['learner_s']:.3f} s ({r['slowdown']:.2f}x) |",
        f"| mean self-supervised loss | {f['loss']:.3f} | {b['loss']:.3f} |",
        "",
        f"bfloat16 - float32: {d['delta']:+.3f}{interval} (paired over sounds, 95%), p = "
        f"{d['p']:.3f}; per-voxel r: max |difference| {r['voxel_r']['max_abs']:.3f}, correlation "
        f"{r['voxel_r']['corr']:.4f}. A network that keeps learning carries bf16's rounding into "
        "its weights sound after sound, so the two runs' trajectories part (one learner seed "
        "here): the difference in score is the outcome of that, not of one forward's rounding "
        "(bench/realtime.py's feature comparison). Both runs shared the process pool (one thread "
        "each), so the time ratio is this machine's, not bf16 hardware's.",
        "",
    ])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.autocast_score", description=__doc__)
    parser.parse_args(argv)
    result = run()
    Path("bench/results").mkdir(parents=True, exist_ok=True)
    Path("bench/results/autocast_score.json").write_text(json.dumps(result, indent=2))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
