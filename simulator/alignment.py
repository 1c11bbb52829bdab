"""Weight-to-brain alignment: does a trial's weight change go with its gain in brain prediction?

For a run that learns and its frozen counterpart (same subject, same recorded events), per trial:
``gain = trial_r(run) − trial_r(frozen)`` at the run's best layer (both predicted before the
encoder learned from the trial), and ``‖ΔW‖`` per layer from the run's records. The alignment of
a layer is the Pearson r over scored trials between its ``‖ΔW‖`` and the gain, with a two-sided
permutation p-value (trials' ``‖ΔW‖`` shuffled, ``p = (1 + #{|r_perm| ≥ |r|}) / (1 + n_perm)``).
"""
from __future__ import annotations

import numpy as np


def trial_gain(run: dict, frozen: dict, layer: str, warmup: int) -> tuple[np.ndarray, np.ndarray]:
    """(replay positions, gain) of the run's scored trials over the frozen run, matched by event."""
    li = run["layers"].index(layer)
    fi = frozen["layers"].index(layer)
    frozen_r = np.full(frozen["n_events"], np.nan)
    frozen_r[frozen["trials"]["event"]] = frozen["trials"]["trial_r"][:, fi]
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
