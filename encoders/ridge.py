"""Online ridge regression from running sufficient statistics.

The solution after any number of ``partial_fit`` calls equals scikit-learn's batch ``Ridge`` on all
the data seen so far, at a cost per call that does not grow with the samples seen.
"""

import numbers

import numpy as np
import scipy.linalg
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["OnlineRidge"]

_STATE = ("n_samples_seen_", "x_mean_", "y_mean_", "xx_", "xy_")


class OnlineRidge(RegressorMixin, BaseEstimator):
    """Ridge regression updated batch by batch; one Gram matrix shared by all targets.

    Minimises ``||Y - X W - b||^2 + alpha ||W||^2`` over all samples seen (the intercept ``b`` is
    not penalised), as ``sklearn.linear_model.Ridge`` does. It keeps the count ``n``, the means
    ``mx``, ``my`` and the centred co-moments ``Xc'Xc`` and ``Xc'Yc``, merged per batch with Chan's
    parallel update (``M = M_a + M_b + n_a n_b / n * d d'``, ``d`` the difference of batch means),
    which carries the same information as raw sums (``X'X - n mx mx'``) without their cancellation
    when features sit far from zero. Then ``W = (Xc'Xc + alpha I)^-1 Xc'Yc``, ``b = my - mx W``.
    Accumulators are float64; predictions come back in the dtype of ``X`` (float32 stays float32).

    Parameters
    ----------
    alpha : float >= 0
        Ridge penalty.
    fit_intercept : bool
        Fit ``b``; if False, the uncentred moments ``X'X``, ``X'Y`` are used.
    standardize : bool
        Penalise features divided by their standard deviation over the samples seen so far
        (population, as ``StandardScaler``; zero std counts as 1), so that alpha does not depend on
        feature scales. Equals batch ``make_pipeline(StandardScaler(with_mean=fit_intercept),
        Ridge(alpha))``; ``coef_`` stays in the units of ``X``.

    Attributes
    ----------
    coef_ : array (n_targets, n_features), or (n_features,) when y is 1-D
    intercept_ : array (n_targets,), or float when y is 1-D
    n_features_in_, n_samples_seen_ : int
    x_mean_, y_mean_, xx_, xy_ : the sufficient statistics (float64)

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((40, 3))
    >>> y = X @ [1.0, -2.0, 0.5] + 3.0
    >>> model = OnlineRidge(alpha=0.1)
    >>> for batch in np.array_split(np.arange(40), 4):
    ...     model = model.partial_fit(X[batch], y[batch])
    >>> print(np.round(model.coef_, 1), round(float(model.intercept_), 1))
    [ 1.  -2.   0.5] 3.0
    """

    def __init__(self, alpha=1.0, fit_intercept=True, standardize=False):
        self.alpha = alpha
        self.fit_intercept = fit_intercept
        self.standardize = standardize

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def fit(self, X, y):
        """Forget everything, then ``partial_fit(X, y)``. Returns self."""
        for name in (*_STATE, "n_features_in_", "_cache"):
            if hasattr(self, name):
                delattr(self, name)
        return self.partial_fit(X, y)

    def partial_fit(self, X, y):
        """Add samples ``X`` (n_samples, n_features), ``y`` (n_samples,) or (n_samples, n_targets).

        Returns self.
        """
        alpha = self.alpha
        if not (isinstance(alpha, numbers.Real) and np.isfinite(alpha) and alpha >= 0):
            raise ValueError(
                "Invalid value for the 'alpha' parameter. Allowed values are finite numbers "
                f">= 0, but got {alpha!r} instead."
            )
        first = not hasattr(self, "n_samples_seen_")
        X, y = validate_data(
            self, X, y, reset=first, dtype=[np.float64, np.float32], multi_output=True,
            y_numeric=True,
        )
        # float64 accumulators; X and y are only read, never kept or changed in place.
        X, y = X.astype(np.float64, copy=False), y.astype(np.float64, copy=False)
        if first:
            p, shape_y = X.shape[1], y.shape[1:]
            self.n_samples_seen_, self.x_mean_, self.y_mean_ = 0, np.zeros(p), np.zeros(shape_y)
            self.xx_, self.xy_ = np.zeros((p, p)), np.zeros((p, *shape_y))
        elif y.shape[1:] != self.y_mean_.shape:
            raise ValueError(
                f"y has shape {y.shape[1:]} per sample, but OnlineRidge is expecting "
                f"{self.y_mean_.shape} (as in the first partial_fit)."
            )
        n_a, n_b = self.n_samples_seen_, X.shape[0]
        n = n_a + n_b
        mx_b, my_b = X.mean(axis=0), y.mean(axis=0)
        Xc, yc = X - mx_b, y - my_b
        dx, dy = mx_b - self.x_mean_, my_b - self.y_mean_
        w = n_a * n_b / n
        # Chan et al. (1979) pairwise update of centred co-moments. The batch's rows and the
        # mean-shift term sqrt(w) d go through one matrix product each (no outer temporaries).
        A = np.vstack([Xc, np.sqrt(w) * dx])
        B = np.vstack([yc.reshape(n_b, -1), np.sqrt(w) * np.reshape(dy, (1, -1))])
        self.xx_ += A.T @ A
        self.xy_ += (A.T @ B).reshape(self.xy_.shape)
        self.x_mean_ += (n_b / n) * dx
        self.y_mean_ += (n_b / n) * dy
        self.n_samples_seen_ = n
        # The solution is computed lazily and cached until the next partial_fit. The cache is a
        # container set here and filled in place, so predict leaves the attributes as they are.
        self._cache = {}
        return self

    def _system(self):
        """The regularised system ``A = S⁻¹ xx S⁻¹ + alpha I`` factored once per update, the
        right-hand side ``S⁻¹ xy``, the feature scales ``S`` and the means; cached."""
        check_is_fitted(self)
        if "system" not in self._cache:
            mx, my, n = self.x_mean_, self.y_mean_, self.n_samples_seen_
            xx, xy = self.xx_, self.xy_
            if not self.fit_intercept:
                xx = xx + n * np.outer(mx, mx)
                xy = xy + n * np.multiply.outer(mx, my)
            # Ridge on X / scale, then back to the units of X: W = W_scaled / scale.
            scale = np.ones(len(mx))
            if self.standardize:
                std = np.sqrt(np.diag(self.xx_) / n)
                scale = np.where(std > 10 * np.finfo(float).eps * np.abs(mx), std, 1.0)
            col = scale.reshape(-1, *[1] * (xy.ndim - 1))
            inv = 1.0 / scale
            A = xx * inv[:, None]
            A *= inv[None, :]
            A.flat[:: len(mx) + 1] += self.alpha  # + alpha I, without building I
            try:
                factor = ("cholesky", scipy.linalg.cho_factor(A, check_finite=False))
            except np.linalg.LinAlgError:  # not positive definite (alpha = 0, rank deficient)
                factor = ("lstsq", A)
            self._cache["system"] = (factor, xy / col, scale, col)
        return self._cache["system"]

    @staticmethod
    def _apply_inverse(factor, B):
        kind, value = factor
        if kind == "cholesky":
            return scipy.linalg.cho_solve(value, B, check_finite=False)
        return scipy.linalg.lstsq(value, B, check_finite=False)[0]

    def _solution(self):
        if "coef" not in self._cache:
            factor, rhs, _, col = self._system()
            W = self._apply_inverse(factor, rhs) / col
            mx, my = self.x_mean_, self.y_mean_
            b = my - mx @ W if self.fit_intercept else np.zeros_like(my)
            self._cache["coef"] = W.T.copy()
            self._cache["intercept"] = float(b) if b.ndim == 0 else b
        return self._cache["coef"], self._cache["intercept"]

    @property
    def coef_(self):
        return self._solution()[0]

    @property
    def intercept_(self):
        return self._solution()[1]

    def predict(self, X):
        """Predict ``Y`` for ``X`` (n_samples, n_features), in the dtype of ``X`` when floating.

        With fewer samples than targets and no weights computed yet (the prequential case: a
        trial's few frames, thousands of voxels), the system is solved against the samples
        instead of every target: ``P = ((X − mx) S⁻¹) A⁻¹ (S⁻¹ xy) + my`` costs
        ``n_features² n_samples`` instead of ``n_features² n_targets``.
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        dtype = X.dtype
        n_targets = self.y_mean_.shape[0] if self.y_mean_.ndim else 1
        if "coef" in self._cache or X.shape[0] >= n_targets:
            coef, intercept = self._solution()
            return X @ coef.T.astype(dtype) + np.asarray(intercept, dtype=dtype)
        factor, rhs, scale, _ = self._system()
        Xc = X.astype(np.float64) - self.x_mean_ if self.fit_intercept else X.astype(np.float64)
        Z = self._apply_inverse(factor, (Xc / scale).T)
        P = Z.T @ rhs + (self.y_mean_ if self.fit_intercept else 0.0)
        return P.astype(dtype)

    def state_dict(self):
        """Parameters and sufficient statistics as ``{name: ndarray or scalar}`` (copies)."""
        check_is_fitted(self)
        state = {"alpha": float(self.alpha), "fit_intercept": bool(self.fit_intercept),
                 "standardize": bool(self.standardize)}
        state["n_features_in_"] = int(self.n_features_in_)
        state["n_samples_seen_"] = int(self.n_samples_seen_)
        for name in _STATE[1:]:
            state[name] = getattr(self, name).copy()
        return state

    def load_state_dict(self, state):
        """Restore what ``state_dict`` returned. Returns self."""
        expected = {"alpha", "fit_intercept", "standardize", "n_features_in_", *_STATE}
        missing = sorted(expected - set(state))
        if missing:
            raise ValueError(
                f"Invalid value for the 'state' parameter. Allowed values are dicts from "
                f"OnlineRidge.state_dict(), but got one missing {missing} instead."
            )
        self.set_params(alpha=state["alpha"], fit_intercept=state["fit_intercept"],
                        standardize=state["standardize"])
        self.n_features_in_ = int(state["n_features_in_"])
        self.n_samples_seen_ = int(state["n_samples_seen_"])
        for name in _STATE[1:]:
            setattr(self, name, np.array(state[name], dtype=np.float64))
        self._cache = {}
        return self
