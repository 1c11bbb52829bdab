"""Weight-to-brain alignment: does the network change when and where the brain does?

Two measures. **Weight change against gain:**
For a run that learns and its frozen counterpart (same subject, same recorded events), per trial:
``gain = trial_r(run) − trial_r(frozen)`` at the run's best layer (both predicted before the
encoder learned from the trial), and ``‖ΔW‖`` per layer from the run's records. The alignment of
a layer is the Pearson r over scored trials between its ``‖ΔW‖`` and the gain, with a two-sided
permutation p-value (trials' ``‖ΔW‖`` shuffled, ``p = (1 + #{|r_perm| ≥ |r|}) / (1 + n_perm)``).

**Representational drift:** for every sound presented at least twice, the drift between its first
two presentations is ``1 − corr(first, second)`` of a pattern: the network's activations averaged
over the sound's frames (per layer), or the brain's responses averaged over the trial's frames
(over voxels). The alignment is the Pearson r across sounds between the network's and the
brain's drift, with the same permutation test.
"""
from __future__ import annotations

import numpy as np


def trial_gain(run: dict, frozen: dict, layer: str, warmup: int) -> tuple[np.ndarray, np.ndarray]:
    """(replay positions, gain) of the run's scored trials over the frozen run, matched by event."""
    li = run["layers"].index(layer)
    fi = frozen["layers"].index(layer)
    frozen_r = np.full(frozen["n_events"], np.nan)  # NaN: not scored (the frozen run's warm-up)
    frozen_warmup = int(frozen["config"]["encoder"]["warmup"])
    frozen_r[frozen["trials"]["event"][frozen_warmup:]] = frozen["trials"]["trial_r"][frozen_warmup:, fi]
    positions = np.arange(warmup, len(run["trials"]["event"]))
    events = run["trials"]["event"][positions]
    return positions, run["trials"]["trial_r"][positions, li] - frozen_r[events]


def correlation_test(x: np.ndarray, y: np.ndarray, n_perm: int = 1000, seed: int = 0):
    """Pearson r of x and y and its two-sided permutation p-value (x permuted).

    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal(200)
    >>> r, p = correlation_test(x, x + rng.standard_normal(200))
    >>> round(r, 2), p < 0.01
    (0.66, True)
    """
    if len(x) < 3:
        return float("nan"), float("nan")  # too few pairs to say anything
    x = np.asarray(x, float) - np.mean(x)
    y = np.asarray(y, float) - np.mean(y)
    denom = np.sqrt((x @ x) * (y @ y))
    if denom == 0:
        return 0.0, 1.0
    r = float(x @ y / denom)
    rng = np.random.default_rng(seed)
    perms = np.stack([rng.permutation(x) for _ in range(n_perm)]) if n_perm else np.empty((0, len(x)))
    r_perm = perms @ y / denom
    return r, float((1 + np.count_nonzero(np.abs(r_perm) >= abs(r) - 1e-12)) / (1 + n_perm))


def weight_gain_alignment(run: dict, frozen: dict, layer: str, n_perm: int = 1000,
                          seed: int = 0) -> dict[str, dict]:
    """Per layer of ``run["delta_w_layers"]``: r and p of ‖ΔW‖ against the gain over frozen at
    ``layer`` (the run's best layer), over the run's scored trials."""
    warmup = int(run["config"]["encoder"]["warmup"])
    positions, gain = trial_gain(run, frozen, layer, warmup)
    keep = np.isfinite(gain)
    out = {}
    for k, name in enumerate(run["delta_w_layers"]):
        dw = run["trials"]["delta_w"][positions, k]
        r, p = correlation_test(dw[keep], gain[keep], n_perm=n_perm, seed=seed)
        out[name] = {"r": r, "p": p, "n_trials": int(keep.sum())}
    return out


def pattern_drift(patterns: np.ndarray) -> np.ndarray:
    """``1 − corr(first, second presentation)`` per sound, from patterns (n_sounds, n_repeats ≥ 2, n).

    The correlation runs over the entries finite in both presentations (a voxel's frame lost to a
    NaN leaves that voxel out of that sound's drift); a pattern with no variance, or a missing
    presentation (all NaN), gives NaN.

    >>> p = np.array([[[1.0, 2, 3], [1, 2, 3]], [[1, 2, 3], [3, 2, 1]], [[1, 2, 9], [1, 2, np.nan]]])
    >>> pattern_drift(p).round(3).tolist()
    [0.0, 2.0, 0.0]
    """
    valid = np.isfinite(patterns[:, 0]) & np.isfinite(patterns[:, 1])
    n = valid.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        a, b = (np.where(valid, patterns[:, k], 0.0) for k in (0, 1))
        a = np.where(valid, a - a.sum(axis=1, keepdims=True) / n, 0.0)
        b = np.where(valid, b - b.sum(axis=1, keepdims=True) / n, 0.0)
    denom = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 1.0 - (a * b).sum(1) / denom, np.nan)


def network_patterns(run: dict, layer: str, n_sounds: int) -> np.ndarray:
    """(n_sounds, 2, n_features) pooled activations of each sound's first two presentations (NaN
    where a sound was not presented twice)."""
    pooled = run["trials"][f"pooled/{layer}"]
    out = np.full((n_sounds, 2, pooled.shape[1]), np.nan)
    # Presentations ranked by recorded event (as the brain's side is), not by stored labels.
    by_event = np.argsort(run["trials"]["event"], kind="stable")
    seen = np.zeros(n_sounds, dtype=np.int64)
    for t in by_event:
        s = run["trials"]["stimulus"][t]
        if seen[s] < 2:
            out[s, seen[s]] = pooled[t]
        seen[s] += 1
    return out


def drift_alignment(run: dict, brain_drift: np.ndarray, n_perm: int = 1000, seed: int = 0) -> dict:
    """Per layer: r and p across sounds between the network's drift and ``brain_drift``
    (n_sounds,), over the sounds where both are defined."""
    out = {}
    for layer in run["layers"]:
        net = pattern_drift(network_patterns(run, layer, len(brain_drift)))
        keep = np.isfinite(net) & np.isfinite(brain_drift)
        r, p = correlation_test(net[keep], brain_drift[keep], n_perm=n_perm, seed=seed)
        out[layer] = {"r": r, "p": p, "n_sounds": int(keep.sum())}
    return out


def linear_cka(X: np.ndarray, Y: np.ndarray, debiased: bool = True) -> float:
    """Linear centred kernel alignment (Kornblith et al. 2019) of two feature spaces over the same
    samples, (n_samples, n_x) and (n_samples, n_y), each feature z-scored first as the encoder
    does. Near 1: the two spaces carry the same linear information (up to an orthogonal
    transform), so no linear encoder can tell which one a response reads; near 0: unrelated.

    ``debiased`` uses the unbiased HSIC estimator (Song et al. 2012) on the Gram matrices, since
    the plain ``‖XᵀY‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F)`` is biased upward when the samples are few for the
    features (independent spaces of 128 features over 40 samples score about 0.77).

    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((40, 128))
    >>> round(linear_cka(X, 3 * X[:, ::-1] + 1), 2)
    1.0
    >>> Y = rng.standard_normal((40, 128))
    >>> round(linear_cka(X, Y, debiased=False), 1), abs(linear_cka(X, Y)) < 0.1
    (0.8, True)
    """
    X, Y = (np.asarray(A, float) for A in (X, Y))
    X = (X - X.mean(0)) / np.where(X.std(0) > 0, X.std(0), 1.0)
    Y = (Y - Y.mean(0)) / np.where(Y.std(0) > 0, Y.std(0), 1.0)
    if not debiased:
        denom = np.linalg.norm(X.T @ X) * np.linalg.norm(Y.T @ Y)
        return float(np.linalg.norm(X.T @ Y) ** 2 / denom) if denom > 0 else float("nan")
    K, L = X @ X.T, Y @ Y.T
    denom = np.sqrt(_hsic_unbiased(K, K) * _hsic_unbiased(L, L))
    return float(_hsic_unbiased(K, L) / denom) if denom > 0 else float("nan")


def _hsic_unbiased(K: np.ndarray, L: np.ndarray) -> float:
    """Unbiased HSIC of two (n, n) Gram matrices (Song et al. 2012, eq. 5); needs n > 3."""
    n = len(K)
    K, L = K - np.diag(np.diag(K)), L - np.diag(np.diag(L))
    KL = K @ L
    return float((np.trace(KL) + K.sum() * L.sum() / ((n - 1) * (n - 2))
                  - 2.0 * KL.sum() / (n - 2)) / (n * (n - 3)))


def layer_similarity(run: dict) -> dict[str, float]:
    """Linear CKA between each pair of adjacent layers of a run, on its per-trial pooled
    activations: how far apart the feature spaces the best-layer search chooses among are."""
    layers = run["layers"]
    return {f"{a}~{b}": _pooled_cka(run, a, b) for a, b in zip(layers, layers[1:])}


def similarity_to(run: dict, layer: str) -> dict[str, float]:
    """Linear CKA of every layer of a run with ``layer`` (1 for itself), on its per-trial pooled
    activations: which layers a linear encoder could not tell from ``layer``."""
    return {name: _pooled_cka(run, name, layer) for name in run["layers"]}


def _pooled_cka(run: dict, a: str, b: str) -> float:
    return linear_cka(run["trials"][f"pooled/{a}"], run["trials"][f"pooled/{b}"])
