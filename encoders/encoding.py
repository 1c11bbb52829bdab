"""Prequential encoding of one run: one online ridge and one running score per layer."""
from __future__ import annotations

import numpy as np

from .lags import lagged
from .ridge import OnlineRidge
from .scores import PrequentialScore


class PrequentialEncoder:
    """Predict each trial's brain frames from every layer's features, score, then learn.

    ``step`` first predicts the trial with the models as they are (before they have seen it),
    adds the prediction to the layer's prequential score, and only then updates the model:
    every trial is scored out of sample.

    Parameters
    ----------
    layers : list of str
        Names of the feature spaces (one ridge each; all see the same brain frames).
    n_voxels : int
    n_units : int
        Number of resampling units. Each trial's score sums go to the row of its unit; the
        simulator sends the trial's *recorded event* index, so runs that replay the same events
        in other orders can later be compared on the same scored trials (the summary regroups
        events by sound).
    lags : list of int
        FIR lags in frames (the hemodynamic delay is learned per voxel and lag).
    alpha : float
        Ridge penalty on standardised features (``OnlineRidge(standardize=True)``).
    warmup : int
        Trials before this index are learned from but not scored.

    >>> rng = np.random.default_rng(0)
    >>> enc = PrequentialEncoder(["a"], n_voxels=4, n_units=3, lags=[0, 1], alpha=1.0, warmup=2)
    >>> W = rng.standard_normal((6, 4))
    >>> for t in range(12):
    ...     X = rng.standard_normal((8, 3)).astype(np.float32)
    ...     Y = (np.hstack([X, np.roll(X, 1, 0)]) @ W).astype(np.float32)
    ...     trial_r = enc.step(t, t % 3, {"a": X}, Y)
    >>> bool(trial_r["a"] > 0.9), bool(enc.r()["a"].mean() > 0.5)
    (True, True)
    """

    def __init__(self, layers, n_voxels: int, n_units: int, lags=(0,), alpha: float = 1.0,
                 warmup: int = 0):
        self.layers, self.lags = list(layers), list(lags)
        self.n_voxels = int(n_voxels)
        self.models = {name: OnlineRidge(alpha=alpha, standardize=True) for name in self.layers}
        self.scores = {name: PrequentialScore(n_units, n_voxels, warmup) for name in self.layers}

    def step(self, trial: int, unit: int, features: dict, frames: np.ndarray) -> dict[str, float]:
        """Score then learn one trial; return the per-layer voxel-mean r of this trial.

        ``features[layer]`` is (n_frames, n_features) aligned with ``frames`` (n_frames, n_voxels).
        """
        frames = np.asarray(frames)
        designs = self._designs(trial, features, frames)
        trial_r = {}
        for name, X in designs.items():
            model = self.models[name]
            fitted = hasattr(model, "n_features_in_")
            P = model.predict(X) if fitted else np.zeros_like(frames)
            trial_r[name] = self.scores[name].update(trial, unit, P, frames)
            model.partial_fit(X, frames)
        return trial_r

    def _designs(self, trial: int, features: dict, frames: np.ndarray) -> dict[str, np.ndarray]:
        """Every layer's lagged design, all checked before any layer scores or learns: a trial
        refused for one layer must leave the others as they were."""
        missing = [name for name in self.layers if name not in features]
        if missing:
            raise ValueError(f"trial {trial} lacks features for layer(s) {missing}")
        if frames.ndim != 2 or frames.shape[1] != self.n_voxels:
            raise ValueError(f"Invalid value for the 'frames' parameter. Allowed values are 2-D "
                             f"arrays (n_frames, {self.n_voxels} voxels), but got shape "
                             f"{frames.shape} instead.")
        if not np.isfinite(frames).all():
            raise ValueError(f"the brain frames of trial {trial} hold non-finite values")
        designs = {}
        for name in self.layers:
            X = lagged(np.asarray(features[name]), self.lags)
            if X.shape[0] != frames.shape[0]:
                raise ValueError(f"features of layer {name!r} have {X.shape[0]} frames but the "
                                 f"trial has {frames.shape[0]} brain frames")
            expected = getattr(self.models[name], "n_features_in_", X.shape[1])
            if X.shape[1] != expected:
                raise ValueError(f"layer {name!r} has {X.shape[1] // len(self.lags)} features, "
                                 f"but its encoder expects {expected // len(self.lags)}")
            if not np.isfinite(X).all():
                raise ValueError(f"features of layer {name!r} hold non-finite values")
            designs[name] = X
        return designs

    def r(self) -> dict[str, np.ndarray]:
        """Prequential Pearson r per voxel, per layer."""
        return {name: s.r() for name, s in self.scores.items()}

    def r2(self) -> dict[str, np.ndarray]:
        return {name: s.r2() for name, s in self.scores.items()}

    def unit_stats(self) -> np.ndarray:
        """(n_layers, n_units, 6, n_voxels) per-unit sufficient statistics."""
        return np.stack([self.scores[name].stats for name in self.layers])
