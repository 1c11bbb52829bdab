"""One prequential encoder trial against the floor of its unavoidable linear algebra.

Per layer and trial the encoder must at least: update the Gram matrices (X'X, X'Y), factor the
ridge system, solve it against the trial's frames and multiply by X'Y to predict. The floor times those numpy/scipy calls
alone on the same sizes; ours is ``PrequentialEncoder.step`` (validation, lags, scoring included).
"""
import numpy as np
import scipy.linalg
from threadpoolctl import threadpool_limits

from encoders.encoding import PrequentialEncoder
from encoders.lags import lagged

from .timing import best_time

LAYERS, D, LAGS, VOXELS, FRAMES = 5, 128, list(range(6)), 300, 8


def run() -> dict:
    rng = np.random.default_rng(0)
    feats = [{f"l{i}": rng.standard_normal((FRAMES, D)).astype(np.float32) for i in range(LAYERS)}
             for _ in range(40)]
    frames = [rng.standard_normal((FRAMES, VOXELS)).astype(np.float32) for _ in range(40)]
    with threadpool_limits(limits=1, user_api="blas"):
        enc = PrequentialEncoder([f"l{i}" for i in range(LAYERS)], VOXELS, 40, LAGS, 10.0, 0)
        for k in range(20):
            enc.step(k, k, feats[k], frames[k])
        state = {"k": 20}

        def ours():
            k = state["k"] % 40
            enc.step(state["k"], k, feats[k], frames[k])
            state["k"] += 1

        p = D * len(LAGS)
        xx = np.eye(p) * 50 + 0.01
        xy = rng.standard_normal((p, VOXELS))

        def floor():
            for i in range(LAYERS):
                X = lagged(feats[0][f"l{i}"], LAGS).astype(np.float64)
                X.T @ X
                X.T @ frames[0]
                # Predict by solving against the trial's frames, not against every voxel.
                Z = scipy.linalg.cho_solve(scipy.linalg.cho_factor(xx), X.T)
                Z.T @ xy

        t_floor, t_ours = best_time(floor, repeats=10), best_time(ours, repeats=10)
    return {"bench": "encoder_step", "layers": LAYERS, "features": D * len(LAGS), "voxels": VOXELS,
            "frames": FRAMES, "floor_s": t_floor, "ours_s": t_ours, "ratio": t_ours / t_floor}


def markdown(r: dict) -> str:
    return (f"## Encoder trial vs the floor of its linear algebra\n\n"
            f"{r['layers']} layers x {r['features']} lagged features, {r['voxels']} voxels, "
            f"{r['frames']} frames per trial, one BLAS thread ({r['machine']['processor']}).\n\n"
            f"| floor (Gram update + Cholesky factor + solve + predict) | PrequentialEncoder.step "
            f"| ratio |\n"
            f"|---|---|---|\n| {r['floor_s'] * 1e3:.1f} ms | {r['ours_s'] * 1e3:.1f} ms | "
            f"{r['ratio']:.2f}x |\n\nThe Cholesky factorisation of the "
            f"{r['features']}x{r['features']} system dominates both. The rest of ours: "
            "validation, lags, standardisation, the six score sums per voxel.\n")
