"""Prequential encoding of one run: every layer's online ridge, running score and drift detector."""
from __future__ import annotations

import numpy as np

from .drift import PageHinkley
from .hrf import check_hrf
from .projection import check_components, random_projection
from .ridge import OnlineRidge, as_tensor
from .scores import PrequentialScore, r2_from_stats


class PrequentialEncoder:
    """Predict each trial's brain frames from every layer's features, score, then learn.

    ``step`` first predicts the trial with the models as they are (before they have seen it),
    adds the prediction to the layer's prequential score, and only then updates the model:
    every trial is scored out of sample. The brain frames go to the device once per trial and
    serve every layer's model.

    Parameters
    ----------
    layers : list of str
        Names of the feature spaces (one ridge each; all see the same brain frames).
    n_voxels : int
    n_units : int
        Number of resampling units (0: not known in advance, as in a live session; the sums grow
        with the units seen, ``PrequentialScore``). Each trial's score sums go to the row of its unit; the
        simulator sends the trial's *recorded event* index, so runs that replay the same events
        in other orders can later be compared on the same scored trials (the summary regroups
        events by sound).
    lags : list of int
        FIR lags in frames (the hemodynamic delay is learned per voxel and lag).
    hrf : "fir" or "glover"
        ``"fir"`` (the default): the lags alone. ``"glover"``: each trial's features are first
        convolved with the canonical HRF sampled at ``frame_rate_hz`` (within the trial, as the
        lags are), then lagged (``OnlineRidge(hrf=...)``); ``lags=[0]`` is the classic GLM design.
    frame_rate_hz : float or None
        Brain frames per second; needed by ``hrf="glover"``.
    alphas : list of float
        Ridge penalty grid on standardised features; each voxel of each layer takes the one with
        the lowest prequential error so far (``OnlineRidge(standardize=True)``).
    warmup : int
        Trials before this index are learned from but not scored.
    forgetting, device, dtype
        As in :class:`OnlineRidge`.
    drift_threshold : float
        Threshold of the per-voxel Page-Hinkley detector on the scored trials' relative error
        ``1 - R^2`` (see ``drift_events``); river's other defaults.
    components : int
        0 (the default): each layer's ridge sees the layer's features as they come. ``N > 0``:
        each layer's features (n_frames, n_features) are first projected to ``N`` dimensions,
        ``X @ random_projection(n_features, N, seed=i).T`` in float64 (``encoders.projection``:
        a fixed Gaussian matrix, scikit-learn's ``GaussianRandomProjection`` with
        ``random_state`` the layer's index ``i`` in ``layers``), then lagged and standardised as
        usual; a layer with ``n_features <= N`` is left as it is. By the Johnson-Lindenstrauss
        lemma the projection keeps the inner products between frames up to an error of about
        ``sqrt(log(n) / N)`` times their norms (``n`` the frames seen), and a ridge's
        predictions depend on the features only through those inner products (its kernel
        form), so ridge on the projected features approximates ridge on the full ones. It mixes
        the *raw* features: one of much larger scale than the others weighs more in every
        direction than it would after the full model's standardisation. The cost:
        ``d = N x n_lags`` instead of ``n_features x n_lags``, and the per-trial factorisations
        grow as ``d^3`` (wav2vec 2.0 base, 768 features, 6 lags: ``N = 256`` makes them 27x
        cheaper). The matrix is rebuilt from its seed (identical in every process and after a
        resume), so a state holds none; it is loaded only into an encoder of the same
        ``components``.

    >>> rng = np.random.default_rng(0)
    >>> enc = PrequentialEncoder(["a"], n_voxels=4, n_units=3, lags=[0, 1], alphas=[1.0, 100.0],
    ...                          warmup=2)
    >>> W = rng.standard_normal((6, 4))
    >>> for t in range(12):
    ...     X = rng.standard_normal((8, 3)).astype(np.float32)
    ...     Y = (np.hstack([X, np.roll(X, 1, 0)]) @ W).astype(np.float32)
    ...     trial_r = enc.step(t, t % 3, {"a": X}, Y)
    >>> bool(trial_r["a"] > 0.9), bool(enc.r()["a"].mean() > 0.5), enc.alpha()["a"].tolist()
    (True, True, [1.0, 1.0, 1.0, 1.0])
    """

    def __init__(self, layers, n_voxels: int, n_units: int, lags=(0,), alphas=(1.0,),
                 warmup: int = 0, forgetting: float = 1.0, device: str = "cpu",
                 dtype: str = "float32", drift_threshold: float = 50.0, components: int = 0,
                 hrf: str = "fir", frame_rate_hz: float | None = None):
        self.layers = list(layers)
        self.n_voxels = int(n_voxels)
        self.components = check_components(components)
        self.models = {name: OnlineRidge(alphas=alphas, lags=lags, forgetting=forgetting,
                                         standardize=True, device=device, dtype=dtype, hrf=hrf,
                                         frame_rate_hz=frame_rate_hz)
                       for name in self.layers}
        # Bad settings fail here, not on the first trial; every layer's model shares them.
        _, _, self._dtype, self._device = self.models[self.layers[0]]._params()
        self.scores = {name: PrequentialScore(n_units, n_voxels, warmup) for name in self.layers}
        self.detectors = {name: PageHinkley(self.n_voxels, threshold=drift_threshold)
                          for name in self.layers}
        self._drift = {name: [] for name in self.layers}  # (trial, voxel) of every detection
        # Per layer, from its first trial on: the features it takes, and its projection (None:
        # features as they come).
        self._n_features: dict[str, int] = {}
        self._projections: dict[str, np.ndarray | None] = {}
        self.trials_seen = 0      # trials stepped, scored or not
        self.dropped_frames = 0   # frames left out because they held a non-finite value

    def step(self, trial: int, unit: int, features: dict, frames: np.ndarray) -> dict[str, float]:
        """Score then learn one trial; return the per-layer voxel-mean r of this trial.

        ``features[layer]`` is (n_frames, n_features) aligned with ``frames`` (n_frames, n_voxels).
        """
        frames = np.asarray(frames)
        designs = self._check(trial, unit, features, frames)
        # A frame with a NaN or inf (a lost or corrupted acquisition) is neither scored nor
        # learned from, for every layer; it is counted. Its features still feed later lags.
        keep = np.isfinite(frames).all(axis=1)
        n_dropped = int(len(keep) - keep.sum())
        self.dropped_frames += n_dropped
        self.trials_seen += 1
        if not keep.any():
            return {name: float("nan") for name in self.layers}
        for name, X in designs.items():
            if name not in self._n_features:  # the layer's first trial that is learned from
                self._set_features(name, X.shape[1])
            if self._projections[name] is not None:
                designs[name] = np.asarray(X, dtype=np.float64) @ self._projections[name].T
        rows = None if n_dropped == 0 else keep
        device, dtype = self._device, self._dtype
        # The dropped rows reach the ridge as zeros (it checks its input), and stay unused there.
        Y = as_tensor(frames if rows is None else np.where(keep[:, None], frames, 0), device, dtype)
        frames = frames if rows is None else frames[keep]
        trial_r = {}
        for name, X in designs.items():
            P = self.models[name].test_then_train(as_tensor(X, device, dtype), Y, rows=rows)
            P = np.zeros_like(frames) if P is None else P.cpu().numpy()
            score = self.scores[name]
            trial_r[name] = score.update(trial, unit, P, frames)
            if trial >= score.warmup:
                # 1 - R^2 of the trial: scale-free, so one threshold serves every voxel.
                changed = self.detectors[name].update(1.0 - r2_from_stats(score.trial_stats))
                self._drift[name] += [(trial, int(v)) for v in np.flatnonzero(changed)]
        return trial_r

    def _check(self, trial: int, unit: int, features: dict,
               frames: np.ndarray) -> dict[str, np.ndarray]:
        """Every layer's features, all checked before any layer scores or learns: a trial
        refused for one layer must leave the others (and the counters) as they were."""
        self.scores[self.layers[0]].check_unit(unit)
        missing = [name for name in self.layers if name not in features]
        if missing:
            raise ValueError(f"trial {trial} lacks features for layer(s) {missing}")
        if frames.ndim != 2 or frames.shape[1] != self.n_voxels:
            raise ValueError(f"Invalid value for the 'frames' parameter. Allowed values are 2-D "
                             f"arrays (n_frames, {self.n_voxels} voxels), but got shape "
                             f"{frames.shape} instead.")
        designs = {}
        for name in self.layers:
            X = np.asarray(features[name])
            if X.ndim != 2:
                raise ValueError(f"features of layer {name!r} must be 2-D (n_frames, n_features), "
                                 f"got shape {X.shape}")
            if X.shape[0] != frames.shape[0]:
                raise ValueError(f"features of layer {name!r} have {X.shape[0]} frames but the "
                                 f"trial has {frames.shape[0]} brain frames")
            expected = self._n_features.get(name, X.shape[1])
            if X.shape[1] != expected:
                raise ValueError(f"layer {name!r} has {X.shape[1]} features, but its encoder "
                                 f"expects {expected}")
            if not np.isfinite(X).all():
                raise ValueError(f"features of layer {name!r} hold non-finite values")
            designs[name] = X
        return designs

    def _set_features(self, name: str, n_features: int) -> None:
        """Fix layer ``name``'s number of features and build its projection (see ``components``)."""
        self._n_features[name] = n_features
        self._projections[name] = random_projection(n_features, self.components,
                                                    seed=self.layers.index(name))

    def r(self) -> dict[str, np.ndarray]:
        """Prequential Pearson r per voxel, per layer."""
        return {name: s.r() for name, s in self.scores.items()}

    def r2(self) -> dict[str, np.ndarray]:
        return {name: s.r2() for name, s in self.scores.items()}

    def alpha(self) -> dict[str, np.ndarray]:
        """Each voxel's ridge penalty (``OnlineRidge.alpha_``), per layer; NaN before any trial."""
        return {name: (np.asarray(m.alpha_, dtype=np.float64) if hasattr(m, "n_samples_seen_")
                       else np.full(self.n_voxels, np.nan)) for name, m in self.models.items()}

    def drift_events(self) -> np.ndarray:
        """Every change the detectors saw, as rows ``(layer index, trial, voxel)`` (int64).

        A voxel's detector watches ``1 - R^2`` of each scored trial (the relative squared error of
        its prediction) and fires when that level rises or falls beyond the threshold: the voxel's
        alignment with the layer changed at that trial.
        """
        rows = [(i, t, v) for i, name in enumerate(self.layers) for t, v in self._drift[name]]
        return np.array(rows, dtype=np.int64).reshape(-1, 3)

    def unit_stats(self) -> np.ndarray:
        """(n_layers, n_units, 6, n_voxels) per-unit sufficient statistics."""
        return np.stack([self.scores[name].unit_stats for name in self.layers])

    # -- checkpoints --------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Everything learned so far, as a tree of arrays and JSON scalars (``replay.tree``)."""
        state = {"trials_seen": self.trials_seen, "dropped_frames": self.dropped_frames}
        if self.components:  # a state of components 0 is the same as before the setting existed
            state["components"] = self.components
        for name in self.layers:
            score, model = self.scores[name], self.models[name]
            layer = {"score": {"stats": score.unit_stats.copy(), "trial_stats": score.trial_stats.copy(),
                               "n_scored_trials": score.n_scored_trials},
                     "drift": self.detectors[name].state_dict(),
                     "detections": np.array(self._drift[name], dtype=np.int64).reshape(-1, 2)}
            if hasattr(model, "n_samples_seen_"):  # a layer's ridge exists after its first trial
                layer["ridge"] = model.state_dict()
                if self.components:  # the ridge sees the projected features: keep the raw count
                    layer["n_features"] = self._n_features[name]
            state[f"layer-{self.layers.index(name)}"] = layer
        return state

    def load_state_dict(self, state: dict) -> PrequentialEncoder:
        """Restore what ``state_dict`` returned to an encoder opened with the same settings;
        a state that does not fit changes nothing. Returns self."""
        made_with = state.get("components", 0) if isinstance(state, dict) else 0
        if made_with != self.components:
            raise ValueError(f"Invalid value for the 'state' parameter. Allowed values are states "
                             f"of an encoder with components={self.components}, but got one made "
                             f"with components={made_with!r} instead.")
        try:
            layers = [state[f"layer-{i}"] for i in range(len(self.layers))]
            scores = [{k: np.array(layer["score"][k], dtype=np.float64)
                       for k in ("stats", "trial_stats")} for layer in layers]
            for got, want in zip(scores, self.scores.values()):
                # A growable score (n_units 0) takes any number of units; others their own.
                fits = got["stats"].shape[1:] == want.stats.shape[1:] and (
                    want.growable or len(got["stats"]) == want.n_units)
                if not fits or got["trial_stats"].shape != want.trial_stats.shape:
                    raise ValueError(f"score sums of shape {got['stats'].shape}, but this run "
                                     f"has {want.unit_stats.shape}")
            detectors = [PageHinkley(self.n_voxels).load_state_dict(layer["drift"])
                         for layer in layers]
            models, n_features = {}, {}
            for name, layer in zip(self.layers, layers):
                models[name] = self.models[name]
                if "ridge" in layer:
                    models[name] = OnlineRidge().set_params(**self.models[name].get_params())
                    models[name].load_state_dict(layer["ridge"])
                    self._check_design(name, models[name])
                    n_features[name] = self._features_of(name, layer, models[name])
            counters = int(state["trials_seen"]), int(state["dropped_frames"])
        except (KeyError, TypeError, IndexError) as err:
            raise ValueError(f"Invalid value for the 'state' parameter. Allowed values are trees "
                             f"from PrequentialEncoder.state_dict(), but got one lacking {err}") \
                from None
        for name, layer, score, detector in zip(self.layers, layers, scores, detectors):
            self.scores[name].stats, self.scores[name].trial_stats = score["stats"], \
                score["trial_stats"]
            self.scores[name].n_units = len(score["stats"])
            self.scores[name].n_scored_trials = int(layer["score"]["n_scored_trials"])
            self.detectors[name] = detector
            self._drift[name] = [tuple(map(int, row)) for row in np.asarray(layer["detections"])]
            self.models[name] = models[name]
        self.trials_seen, self.dropped_frames = counters
        self._n_features, self._projections = {}, {}
        for name, n in n_features.items():
            self._set_features(name, n)
        return self

    def _check_design(self, name: str, ridge: OnlineRidge) -> None:
        """Refuse a layer's ridge state made with another hemodynamic design: its statistics
        would be of other features, with nothing in their shapes to tell."""
        mine = check_hrf(self.models[name].hrf, self.models[name].frame_rate_hz)
        made = check_hrf(ridge.hrf, ridge.frame_rate_hz)
        if mine[0] != made[0] or (mine[0] == "glover" and mine[1] != made[1]):
            raise ValueError(f"Invalid value for the 'state' parameter. Allowed values are states "
                             f"of an encoder with hrf={mine[0]!r}, frame_rate_hz={mine[1]!r}, but "
                             f"got one made with hrf={made[0]!r}, frame_rate_hz={made[1]!r} "
                             f"instead.")

    def _features_of(self, name: str, layer: dict, ridge: OnlineRidge) -> int:
        """The number of features layer ``name`` takes, from its part of a state: the ridge's
        own, or with a projection the count kept beside it (checked against the ridge's)."""
        if not self.components:
            return int(ridge.n_features_in_)
        n = int(layer["n_features"])
        seen = min(n, self.components)
        if seen != ridge.n_features_in_:
            raise ValueError(f"layer {name!r} of the state takes {n} features, which project to "
                             f"{seen}, but its ridge has {ridge.n_features_in_}")
        return n
