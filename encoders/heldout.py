"""Held-out R²: what a head trained on some sessions explains of a session it never saw.

A brain-aligned run (simulator.brain_tuning) keeps, per held-out trial and voxel, the sums
``sse = Σ(y − p)²``, ``sum_y = Σy``, ``sum_y2 = Σy²`` and ``count = n`` over the trial's finite
frames. Pooled over trials, ``R² = 1 − Σsse / (Σy² − (Σy)² / n)`` per voxel (NaN for a voxel with
no variance), and a score is the mean over voxels. Intervals resample *sounds* (trials summed
per sound first), the same resamples for every network, so differences are paired.
"""
from __future__ import annotations

import numpy as np

__all__ = ["pooled_r2", "bootstrap_r2"]


def pooled_r2(sse, sum_y, sum_y2, count) -> np.ndarray:
    """Per-voxel R² from sums over the leading (trial or sound) axis.

    >>> y, p = np.array([[1.0], [2.0], [3.0]]), np.array([[1.0], [2.0], [2.0]])
    >>> pooled_r2((y - p) ** 2, y, y ** 2, np.ones_like(y)).round(3).tolist()
    [0.5]
    """
    return _r2(*(np.sum(a, axis=0) for a in (sse, sum_y, sum_y2, count)))


def _r2(sse, sum_y, sum_y2, count):
    """R² from sums already pooled (any shape; ``sse`` may carry leading axes of its own)."""
    sst = sum_y2 - sum_y ** 2 / np.maximum(count, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sst > 1e-12, 1.0 - sse / sst, np.nan)


def _mean_r2(counts, sse, sums):
    """Voxel-mean R² of each network for each resample: ``counts`` (n_boot, n_sounds) weights,
    ``sse`` (n_networks, n_sounds, n_voxels), ``sums`` three (n_sounds, n_voxels)."""
    sum_y, sum_y2, count = (counts @ s for s in sums)
    r2 = _r2(np.einsum("bs,ksv->kbv", counts, sse), sum_y, sum_y2, count)
    return np.nanmean(r2, axis=2)  # (n_networks, n_boot)


def bootstrap_r2(sse, sum_y, sum_y2, count, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> dict:
    """Voxel-mean R² of each network and its percentile interval, resampling sounds; and each
    network's difference from the first (``delta[k - 1] = R²[0] − R²[k]``, paired: the same
    resamples).

    ``sse`` is (n_networks, n_sounds, n_voxels) or a list of such arrays, one per run (the
    statistic is then the mean over runs, every run resampled with the same sound counts, so
    the runs must hold the same sounds, zeros where a run did not hear one); ``sum_y``,
    ``sum_y2``, ``count`` are (n_sounds, n_voxels) or lists of them.

    >>> rng = np.random.default_rng(0)
    >>> y = rng.standard_normal((40, 1, 3)); p = np.stack([y + 0.5 * rng.standard_normal(y.shape), 0 * y])
    >>> out = bootstrap_r2(((y - p) ** 2).sum(2), y.sum(1), (y ** 2).sum(1), np.ones((40, 3)))
    >>> [round(v, 2) for v in out["r2"]], out["delta"][0] > out["delta_ci95"][0][0] > 0
    ([0.65, -0.07], True)
    """
    if not (isinstance(n_boot, int) and n_boot >= 1):
        raise ValueError(f"Invalid value for the 'n_boot' parameter. Allowed values are integers "
                         f">= 1, but got {n_boot!r} instead.")
    runs = [(np.asarray(a, np.float64), *(np.asarray(x, np.float64) for x in s))
            for a, *s in zip(*(v if isinstance(v, list) else [v] for v in (sse, sum_y, sum_y2, count)))]
    n_sounds = runs[0][1].shape[0]
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n_sounds, np.full(n_sounds, 1.0 / n_sounds), size=n_boot).astype(float)
    ones = np.ones((1, n_sounds))
    point = np.mean([_mean_r2(ones, a, s)[:, 0] for a, *s in runs], axis=0)
    boot = np.mean([_mean_r2(counts, a, s) for a, *s in runs], axis=0)
    tails = [(1 - level) / 2, (1 + level) / 2]
    diff = boot[:1] - boot[1:]
    return {"r2": point.tolist(), "ci95": np.nanquantile(boot, tails, axis=1).T.tolist(),
            "delta": (point[0] - point[1:]).tolist(),
            "delta_ci95": np.nanquantile(diff, tails, axis=1).T.tolist() if len(diff) else []}
