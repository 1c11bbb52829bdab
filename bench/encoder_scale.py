"""The online ridge at scale: one trial of update + predict against what else a lab would run.

Per trial of 40 frames, 5 penalties, for feature dimension d and voxels v, ``OnlineRidge``
(``test_then_train``: predict at every penalty, score them, then learn) is timed against, in the
same run:

(a) the floor: the two matrix products any exact update must make, timed alone (the prediction
    ``(5 x 40, d) @ (d, v)`` and the update ``(d, 41) @ (41, v)``, float32, the faster of numpy and
    torch). The ``d x d`` factorisations, which do not depend on v, are timed apart;
(b) refitting scikit-learn's and himalaya's ``RidgeCV`` (5 penalties, one per voxel) on all the
    data seen so far, at trial 100 and 300;
(c) river, one ``LinearRegression`` per voxel learning frame by frame, timed on a few voxels and
    scaled to v (one penalty only: a grid would cost river 5 times more).

Every case runs in a child process of its own, so that its peak memory (the high-water mark of
the resident set, minus the mark once its imports are done) is its own. For the refits it
includes the data seen so far, which a refit must hold; for OnlineRidge, its statistics.
"""
from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

import numpy as np

from .timing import best_time

FRAMES, ALPHAS = 40, (1.0, 10.0, 100.0, 1000.0, 10000.0)
DIMS, VOXELS = (256, 768), (1000, 20000, 100000)
REFIT_VOXELS, REFIT_TRIALS = (1000, 20000), (100, 300)
LONG_RUN_VOXELS = 20000          # also timed after 300 trials: the cost must not grow
RIVER_VOXELS = 20                # voxels river is timed on (then scaled)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def _data(rng, d, v, n_trials):
    X = rng.standard_normal((n_trials * FRAMES, d), dtype=np.float32)
    W = rng.standard_normal((d, v), dtype=np.float32) / np.sqrt(d)
    Y = X @ W
    Y += rng.standard_normal(Y.shape, dtype=np.float32)
    return X, Y


def case_ours(d: int, v: int) -> dict:
    """Time one trial of OnlineRidge (and the floor of its products) at d features, v voxels."""
    import torch

    from encoders.ridge import OnlineRidge

    start = _peak_mb()
    rng = np.random.default_rng(0)
    X, Y = _data(rng, d, v, 8)
    trials = [(X[k * FRAMES:(k + 1) * FRAMES], Y[k * FRAMES:(k + 1) * FRAMES]) for k in range(8)]
    model = OnlineRidge(alphas=ALPHAS, standardize=True)
    for Xk, Yk in trials[:3]:
        model.partial_fit(Xk, Yk)
    count = {"k": 3}

    def ours():
        Xk, Yk = trials[count["k"] % len(trials)]
        model.test_then_train(Xk, Yk)
        count["k"] += 1

    t_ours = best_time(ours, repeats=5)
    out = {"d": d, "v": v, "ours_s": t_ours, "peak_mb": _peak_mb() - start,
           "state_mb": sum(a.nbytes for a in model.state_dict().values()
                           if hasattr(a, "nbytes")) / 2**20}
    if v == LONG_RUN_VOXELS:  # on to trial 300 with fresh frames, then time again
        rest = 300 - count["k"]
        Xl, Yl = _data(rng, d, v, 1)
        for _ in range(rest):
            model.partial_fit(Xl, Yl)
            count["k"] += 1
        out["ours_at_300_s"] = best_time(ours, repeats=5)
        out["trial_at_300"] = count["k"]
    del model, trials, X, Y
    # The floor: the same products, alone, in float32; numpy and torch, the faster one counts.
    xy = rng.standard_normal((d, v), dtype=np.float32)
    Z = rng.standard_normal((len(ALPHAS) * FRAMES, d), dtype=np.float32)
    A = rng.standard_normal((d, FRAMES + 1), dtype=np.float32)
    B = rng.standard_normal((FRAMES + 1, v), dtype=np.float32)
    tensors = [torch.from_numpy(a) for a in (xy, Z, A, B)]
    t_numpy = best_time(lambda: (Z @ xy, A @ B), repeats=5)
    t_torch = best_time(lambda: (tensors[1] @ tensors[0], tensors[2] @ tensors[3]), repeats=5)
    gram = torch.from_numpy(rng.standard_normal((d, 2 * d))).double()
    gram = gram @ gram.T

    def factorise():
        for alpha in ALPHAS:
            torch.linalg.cholesky_ex(gram + alpha * torch.eye(d, dtype=torch.float64))

    out.update(floor_s=min(t_numpy, t_torch), floor_numpy_s=t_numpy, floor_torch_s=t_torch,
               factorise_s=best_time(factorise, repeats=5))
    return out


def case_refit(library: str, d: int, v: int, n_trials: int) -> dict:
    """Time one refit of ``library``'s RidgeCV on ``n_trials`` trials (all the data so far)."""
    if library == "sklearn":
        from sklearn.linear_model import RidgeCV
        model = RidgeCV(alphas=ALPHAS, alpha_per_target=True)
    else:
        from himalaya.ridge import RidgeCV
        model = RidgeCV(alphas=np.asarray(ALPHAS), fit_intercept=True)
    start = _peak_mb()
    X, Y = _data(np.random.default_rng(1), d, v, n_trials)
    t0 = time.perf_counter()
    model.fit(X, Y)
    return {"library": library, "d": d, "v": v, "trials": n_trials,
            "refit_s": time.perf_counter() - t0, "peak_mb": _peak_mb() - start}


def case_river(d: int) -> dict:
    """Time river's per-voxel linear models on one trial of ``RIVER_VOXELS`` voxels."""
    from river.linear_model import LinearRegression
    from river.optim import SGD

    start = _peak_mb()
    X, Y = _data(np.random.default_rng(2), d, RIVER_VOXELS, 2)
    rows = [dict(enumerate(x.tolist())) for x in X]
    models = [LinearRegression(optimizer=SGD(1e-3), l2=1e-3) for _ in range(RIVER_VOXELS)]

    def trial(offset):
        for j, model in enumerate(models):
            for t in range(FRAMES):  # predict, then learn, frame by frame
                model.predict_one(rows[offset + t])
                model.learn_one(rows[offset + t], float(Y[offset + t, j]))

    trial(0)  # models created their weights
    t0 = time.perf_counter()
    trial(FRAMES)
    elapsed = time.perf_counter() - t0
    return {"d": d, "voxels_timed": RIVER_VOXELS, "per_voxel_s": elapsed / RIVER_VOXELS,
            "per_voxel_frame_us": elapsed / RIVER_VOXELS / FRAMES * 1e6,
            "peak_mb": _peak_mb() - start}


CASES = {"ours": case_ours, "refit": case_refit, "river": case_river}


def _child(kind: str, *args) -> dict:
    """Run one case in a fresh interpreter; return its JSON answer."""
    cmd = [sys.executable, "-m", "bench.encoder_scale", kind, *map(str, args)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark case {kind} {args} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(log=print) -> dict:
    ours = []
    for d in DIMS:
        for v in VOXELS:
            log(f"encoder_scale: OnlineRidge d={d} v={v}")
            ours.append(_child("ours", d, v))
    refits = []
    for library in ("sklearn", "himalaya"):
        for d in DIMS:
            for v in REFIT_VOXELS:
                for n_trials in REFIT_TRIALS:
                    log(f"encoder_scale: {library} RidgeCV refit d={d} v={v} trial {n_trials}")
                    refits.append(_child("refit", library, d, v, n_trials))
    river = [_child("river", d) for d in DIMS]
    return {"bench": "encoder_scale", "frames": FRAMES, "alphas": list(ALPHAS), "ours": ours,
            "refits": refits, "river": river, **_ratios(ours, refits, river)}


def _ratios(ours, refits, river) -> dict:
    """The targets: ours within 2x of the floor; refits and river far slower than ours."""
    at = {(r["d"], r["v"]): r for r in ours}
    floor = [{"d": r["d"], "v": r["v"], "ratio": r["ours_s"] / r["floor_s"]} for r in ours]
    refit = [{**{k: r[k] for k in ("library", "d", "v", "trials")},
              "speedup": r["refit_s"] / at[(r["d"], r["v"])].get("ours_at_300_s",
                                                                    at[(r["d"], r["v"])]["ours_s"])}
             for r in refits]
    vs_river = [{"d": r["d"], "v": o["v"], "river_s": r["per_voxel_s"] * o["v"],
                 "speedup": r["per_voxel_s"] * o["v"] / o["ours_s"]}
                for r in river for o in ours if o["d"] == r["d"]]
    return {"floor_ratio": floor, "refit_speedup": refit, "river_speedup": vs_river}


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        "## Online ridge at scale: one trial against the floor, batch refits and river\n",
        f"One trial of {r['frames']} frames, {len(r['alphas'])} penalties "
        f"({', '.join(f'{a:g}' for a in r['alphas'])}), standardised features, float32, "
        f"`OnlineRidge.test_then_train` (predict at every penalty, add the errors, learn); "
        f"all cores of {m['processor']} ({m['cores']} cores), Python {m['python']}. Peak memory "
        "is each case's resident high-water mark above the mark after its imports; `state` is "
        "what `state_dict()` holds.\n",
        "### (a) Against the floor of its matrix products\n",
        "| d | voxels | floor (numpy) | floor (torch) | factorisations | OnlineRidge | ratio "
        "| state | peak |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for o, f in zip(r["ours"], r["floor_ratio"]):
        lines.append(f"| {o['d']} | {o['v']:,} | {o['floor_numpy_s'] * 1e3:.1f} ms | "
                     f"{o['floor_torch_s'] * 1e3:.1f} ms | "
                     f"{o['factorise_s'] * 1e3:.1f} ms | {o['ours_s'] * 1e3:.1f} ms | "
                     f"{f['ratio']:.2f}x | {o['state_mb']:.0f} MB | {o['peak_mb']:.0f} MB |")
    long = [o for o in r["ours"] if "ours_at_300_s" in o]
    same = "; ".join(f"{o['d']}/{o['v']:,}: {o['ours_s'] / o['floor_torch_s']:.2f}x"
                     for o in r["ours"])
    lines += ["", "The ratio divides by the faster floor. The factorisations (one `d x d` "
              "Cholesky per penalty, float64) are timed alone and are not part of the floor.",
              "Where it misses 2x: at 1 000 voxels the products take a few ms and a trial's "
              "fixed costs dominate: the factorisations (no exact update avoids them while the "
              "standardisation changes every trial), the solves against the trial's frames and "
              "torch's per-operation overhead. From 20 000 voxels on, the rest is elementwise work "
              "over the predictions at every penalty (their errors, each voxel's pick) and numpy's "
              "faster BLAS: OnlineRidge runs torch's, because numpy's and torch's thread pools "
              "taking turns on the same cores slowed the whole trial more than numpy's products "
              f"saved. Against torch's own products (d/voxels): {same}.", "",
              "The cost of a trial does not grow with the trials seen: "
              + "; ".join(f"d = {o['d']}, v = {o['v']:,}: {o['ours_s'] * 1e3:.1f} ms after 3 "
                          f"trials, "
                          f"{o['ours_at_300_s'] * 1e3:.1f} ms after {o['trial_at_300']}"
                          for o in long) + ".\n",
              "### (b) Against refitting RidgeCV on all the data seen so far\n",
              "| library | d | voxels | trial | refit | OnlineRidge trial | speed-up | peak |",
              "|---|---|---|---|---|---|---|---|"]
    at = {(o["d"], o["v"]): o for o in r["ours"]}
    for f, s in zip(r["refits"], r["refit_speedup"]):
        o = at[(f["d"], f["v"])]
        lines.append(f"| {f['library']} | {f['d']} | {f['v']:,} | {f['trials']} | "
                     f"{f['refit_s']:.2f} s | {o.get('ours_at_300_s', o['ours_s']) * 1e3:.1f} ms | "
                     f"{s['speedup']:,.0f}x | {f['peak_mb']:.0f} MB |")
    lines += ["", "### (c) Against river, one linear model per voxel\n",
              "| d | voxels | river (scaled) | OnlineRidge | speed-up |", "|---|---|---|---|---|"]
    for s in r["river_speedup"]:
        lines.append(f"| {s['d']} | {s['v']:,} | {s['river_s']:.1f} s | "
                     f"{at[(s['d'], s['v'])]['ours_s'] * 1e3:.1f} ms | {s['speedup']:,.0f}x |")
    per = ", ".join(f"{x['per_voxel_frame_us']:.0f} us (d = {x['d']})" for x in r["river"])
    lines += ["", f"river's predict_one + learn_one per voxel and frame: {per}, timed on "
              f"{r['river'][0]['voxels_timed']} voxels; one penalty only.", "",
              "A peak of 0 MB is one below the high-water mark the imports left.\n",
              "### Targets\n", *_targets(r), ""]
    return "\n".join(lines)


def _targets(r: dict) -> list[str]:
    """Each target of the benchmark, met or missed, in the figures of this run."""
    def verdict(ok):
        return "met" if ok else "**missed**"

    floor = [f"d = {f['d']}, v = {f['v']:,}: {f['ratio']:.2f}x" for f in r["floor_ratio"]]
    ok_floor = all(f["ratio"] <= 2 for f in r["floor_ratio"])
    main = [s for s in r["refit_speedup"] if s["v"] == LONG_RUN_VOXELS and s["trials"] == 300]
    need = {"sklearn": 200, "himalaya": 500}
    refit = [f"{s['library']} d = {s['d']}: {s['speedup']:,.0f}x (target {need[s['library']]}x)"
             for s in main]
    ok_refit = all(s["speedup"] >= need[s["library"]] for s in main)
    river = [f"d = {s['d']}, v = {s['v']:,}: {s['speedup']:,.0f}x" for s in r["river_speedup"]]
    ok_river = all(s["speedup"] >= 500 for s in r["river_speedup"])
    return [f"- (a) within 2x of the floor: {verdict(ok_floor)}; " + "; ".join(floor) + ".",
            f"- (b) at trial 300, v = {LONG_RUN_VOXELS:,}, faster than a refit by 200x "
            f"(scikit-learn) and 500x (himalaya): {verdict(ok_refit)}; " + "; ".join(refit) + ".",
            f"- (c) 500x faster than river: {verdict(ok_river)}; " + "; ".join(river) + "."]


if __name__ == "__main__":
    kind, *args = sys.argv[1:]
    parsed = [int(a) if a.isdigit() else a for a in args]
    print(json.dumps(CASES[kind](*parsed)))
