"""Online ridge regression for many voxels at once, with a penalty chosen per voxel online.

Every voxel sees the same design matrix (the network's lagged features), so one set of running
sufficient statistics serves them all: a ``d x d`` co-moment of the features and a ``d x v``
co-moment of features and voxels. A trial costs two matrix products against the ``d x v``
statistics and one ``d x d`` factorisation per penalty, whatever the number of trials seen.

The penalty of each voxel is chosen from a grid by prequential evidence: before the model learns
from a batch, it predicts the batch at every penalty of the grid and adds each penalty's squared
error to that voxel's running total; ``alpha_`` is the penalty with the lowest total so far. Every
error counted is out of sample, as in leave-future-out cross-validation.

The code is torch throughout, so ``device="cuda"`` runs the same updates on a GPU.
"""
from __future__ import annotations

import numbers

import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from replay.checks import invalid_value

from .hrf import check_hrf, convolved, hrf_kernel
from .lags import check_lags, lagged

__all__ = ["OnlineRidge"]

DTYPES = {"float32": torch.float32, "float64": torch.float64}
DTYPES_NP = {torch.float32: np.float32, torch.float64: np.float64}
# The running statistics; all torch tensors on the model's device.
_STATE = ("x_mean_", "y_mean_", "xx_", "xy_", "errors_")
_SCALARS = ("n_samples_seen_", "n_batches_seen_", "weight_sum_", "n_features_in_")
# Parameters added after states were first saved, with the value those states were made with.
_STATE_DEFAULTS = {"hrf": "fir", "frame_rate_hz": None}


def as_tensor(a, device, dtype):
    """``a`` (array or tensor) on ``device`` in ``dtype``, sharing memory where it can. A read-only
    array (a memory map, a zero-copy receive buffer) is copied: torch has no read-only tensors."""
    if isinstance(a, torch.Tensor):
        return a.to(device=device, dtype=dtype)
    a = np.asarray(a, dtype=DTYPES_NP[dtype])
    return torch.from_numpy(a if a.flags.writeable else a.copy()).to(device)


def _pick(P_all, best):
    """``P_all[best[v], :, v]`` for every target v: each target's prediction at its own penalty.
    One ``where`` per penalty, which ran 3x faster than a gather on the CPU."""
    out = P_all[0].clone()
    for k in range(1, len(P_all)):
        torch.where(best == k, P_all[k], out, out=out)
    return out


class OnlineRidge(RegressorMixin, BaseEstimator):
    """Ridge regression learned batch by batch, a penalty per target chosen from a grid.

    Minimises ``sum_i w_i ||y_i - x_i W - b||^2 + alpha ||W||^2`` over all samples seen (``b`` is
    not penalised), as ``sklearn.linear_model.Ridge`` does, at each ``alpha`` of the grid. With
    ``forgetting = 1`` all weights ``w_i`` are 1; with ``forgetting = l < 1`` a sample that came
    ``k`` batches (``partial_fit`` calls) ago has weight ``l**k``: the model equals batch
    ``Ridge(alpha).fit(X, Y, sample_weight=l**k)`` and follows features that drift, with a memory of
    about ``1 / (1 - l)`` batches. The prequential errors that choose ``alpha_`` decay alike.

    It keeps the weight sum ``n``, the weighted means ``mx``, ``my`` and the centred co-moments
    ``xx = Xc' Xc`` (float64, ``d x d``) and ``xy = Xc' Yc`` (``dtype``, ``d x v``), merged per
    batch with Chan's update (``M = l M_a + M_b + (l n_a n_b / n) dx dy'``, ``d`` the differences
    of batch means), which holds the same information as raw sums without their cancellation when
    features sit far from zero. Predictions never form the weights: ``P = Z' xy + my`` with
    ``Z = (xx + alpha S^2)^-1 (X - mx)'``, solved against the batch's few rows instead of every
    target, so predicting costs ``d^2 n_rows + d n_rows v`` (``S = I`` unless ``standardize``).

    Parameters
    ----------
    alphas : sequence of float >= 0
        The penalty grid. One value gives plain ridge at that penalty.
    lags : sequence of int >= 0
        FIR delays in rows: each call's ``X`` is one trial, expanded to ``lagged(X, lags)`` (with
        zeros before its first row), so the model sees ``n_features * len(lags)`` columns.
    hrf : "fir" or "glover"
        ``"fir"``: the lags alone. ``"glover"``: each call's ``X`` is first convolved with the
        Glover HRF sampled at ``frame_rate_hz``, causally within the call
        (``encoders.hrf.convolved``), then lagged: ``lagged(convolved(X, h), lags)``.
    frame_rate_hz : float > 0 or None
        Rows per second; needed by ``hrf="glover"``, ignored by ``"fir"``.
    forgetting : float in (0, 1]
        Weight kept by the past at each ``partial_fit`` call (1: nothing is forgotten).
    fit_intercept : bool
        Fit ``b``; if False, uncentred moments (as ``Ridge(fit_intercept=False)``).
    standardize : bool
        Penalise features divided by their standard deviation over the samples seen so far (a
        weighted population std, as ``StandardScaler``; zero std counts as 1), so that one grid
        serves feature spaces of any scale. Equals batch
        ``make_pipeline(StandardScaler(with_mean=fit_intercept), Ridge(alpha))``; ``coef_`` stays
        in the units of ``X``.
    device : str
        torch device of the statistics ("cpu", "cuda", "cuda:1", ...).
    dtype : "float32" or "float64"
        Precision of everything the size of the targets (``xy``, predictions). The ``d x d``
        system is always float64: it is small, and its conditioning decides the accuracy.

    Attributes
    ----------
    alpha_ : array (n_targets,), or float when y is 1-D
        The penalty with the lowest prequential error so far; the largest of the grid before any
        evidence (the most cautious).
    errors_ : tensor (n_alphas, n_targets)
        Prequential sum of squared errors of every penalty (weighted by ``forgetting``).
    coef_ : array (n_targets, n_lagged_features), or (n_lagged_features,) when y is 1-D
    intercept_ : array (n_targets,), or float when y is 1-D
    n_features_in_, n_samples_seen_, n_batches_seen_ : int
    weight_sum_ : float

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((400, 3))
    >>> Y = np.stack([X @ [1.0, -2.0, 0.5], rng.standard_normal(400)], axis=1) + 3.0
    >>> model = OnlineRidge(alphas=[0.1, 1e4], dtype="float64")
    >>> for batch in np.array_split(np.arange(400), 40):
    ...     model = model.partial_fit(X[batch], Y[batch])
    >>> model.alpha_.tolist()  # a signal voxel, then pure noise
    [0.1, 10000.0]
    >>> print(np.round(model.coef_[0], 1), round(float(model.intercept_[0]), 1))
    [ 1.  -2.   0.5] 3.0
    """

    def __init__(self, alphas=(1.0,), lags=(0,), forgetting=1.0, fit_intercept=True,
                 standardize=False, device="cpu", dtype="float32", hrf="fir", frame_rate_hz=None):
        self.alphas = alphas
        self.lags = lags
        self.hrf = hrf
        self.frame_rate_hz = frame_rate_hz
        self.forgetting = forgetting
        self.fit_intercept = fit_intercept
        self.standardize = standardize
        self.device = device
        self.dtype = dtype

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    # -- parameters and inputs ---------------------------------------------------------------

    def _params(self):
        """Checked ``(alphas float64 tensor, lags, torch dtype, device)``; one-line errors."""
        values = self.alphas
        values = values if isinstance(values, (list, tuple, np.ndarray)) else [values]
        ok = len(values) > 0 and all(isinstance(a, numbers.Real) and not isinstance(a, bool)
                                     and np.isfinite(a) and a >= 0 for a in values)
        if not ok:
            raise invalid_value("alphas", "a non-empty sequence of finite numbers >= 0",
                                self.alphas)
        f = self.forgetting
        if not (isinstance(f, numbers.Real) and not isinstance(f, bool) and 0 < f <= 1):
            raise invalid_value("forgetting", "numbers in (0, 1]", f)
        if self.dtype not in DTYPES:
            raise invalid_value("dtype", "'float32' or 'float64'", self.dtype)
        try:
            device = torch.device(self.device)
        except (RuntimeError, TypeError):
            raise invalid_value("device", "torch devices such as 'cpu' or 'cuda'",
                                self.device) from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise invalid_value("device", "'cpu' here (torch sees no CUDA device)", self.device)
        lags = check_lags(self.lags)
        check_hrf(self.hrf, self.frame_rate_hz)
        alphas = torch.tensor([float(a) for a in values], dtype=torch.float64, device=device)
        return alphas, lags, DTYPES[self.dtype], device

    def _inputs(self, X, y=None, reset=False):
        """``X`` (and ``y``) as tensors on the device, checked; and the numpy dtype to hand back
        results in (None for tensor input: results stay tensors)."""
        _, lags, dtype, device = self._params()
        is_tensor = isinstance(X, torch.Tensor)
        if is_tensor:
            X = self._check_tensor(X, "X", 2)
            if reset:
                self.n_features_in_ = X.shape[1]
            elif X.shape[1] != self.n_features_in_:
                raise ValueError(f"X has {X.shape[1]} features, but OnlineRidge is expecting "
                                 f"{self.n_features_in_} features as input.")
            if y is not None:
                y = self._check_tensor(y, "y", (1, 2))
                if y.shape[0] != X.shape[0]:
                    raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]}.")
        elif y is None:
            X = validate_data(self, X, reset=reset, dtype=[np.float64, np.float32])
        else:
            X, y = validate_data(self, X, y, reset=reset, dtype=[np.float64, np.float32],
                                 multi_output=True, y_numeric=True)
        out_dtype = None if is_tensor else X.dtype
        X = as_tensor(X, device, dtype)
        kernel = hrf_kernel(self.hrf, self.frame_rate_hz)
        if kernel is not None:
            X = convolved(X, kernel)
        X = lagged(X, lags)
        if y is not None:
            y = as_tensor(y, device, dtype)
        return X, y, out_dtype

    @staticmethod
    def _output(P, out_dtype):
        """Tensors stay tensors; numpy input gets numpy back, in its own floating dtype."""
        return P if out_dtype is None else P.cpu().numpy().astype(out_dtype, copy=False)

    @staticmethod
    def _check_tensor(a, name, ndims):
        ndims = (ndims,) if isinstance(ndims, int) else ndims
        if a.ndim not in ndims or not a.is_floating_point() or a.shape[0] == 0:
            raise ValueError(f"Invalid value for the '{name}' parameter. Allowed values are "
                             f"floating {' or '.join(f'{n}-D' for n in ndims)} tensors with at "
                             f"least one row, but got a {a.dtype} tensor of shape "
                             f"{tuple(a.shape)} instead.")
        if not torch.isfinite(a).all():
            raise ValueError(f"Input {name} contains NaN or infinity.")
        return a

    # -- learning -----------------------------------------------------------------------------

    def fit(self, X, y):
        """Forget everything, then ``partial_fit(X, y)``. Returns self."""
        for name in (*_STATE, *_SCALARS, "_cache", "_one_d"):
            if hasattr(self, name):
                delattr(self, name)
        return self.partial_fit(X, y)

    def partial_fit(self, X, y):
        """Learn from one batch: ``X`` (n_rows, n_features), ``y`` (n_rows,) or (n_rows, n_targets).

        Before learning, the batch is predicted at every penalty and the errors are added to
        ``errors_`` (the evidence for ``alpha_``). Returns self.
        """
        self.test_then_train(X, y)
        return self

    def test_then_train(self, X, y, rows=None):
        """Predict the batch at each target's ``alpha_``, then learn from it (prequential step).

        ``rows`` (bool, one per row of ``X``) keeps only those rows for prediction and learning;
        the others still feed the lags of later rows (a brain frame lost, its sound not).
        Returns the prediction made before learning, shaped like ``y`` (the kept rows; a tensor
        for tensor input), or None on the first batch, when there is nothing to predict from.
        """
        if y is None:
            raise ValueError("OnlineRidge requires y to be passed, but the target y is None.")
        first = not hasattr(self, "n_samples_seen_")
        X, y, out_dtype = self._inputs(X, y, reset=first)
        if rows is not None:
            keep = torch.as_tensor(np.asarray(rows, dtype=bool), device=X.device)
            if keep.shape != (X.shape[0],):
                raise invalid_value("rows", f"a boolean array of {X.shape[0]} values", rows,
                                    got=f"shape {tuple(keep.shape)}")
            X, y = X[keep], y[keep]
            if X.shape[0] == 0:  # nothing left to predict or learn from
                return None
        one_d = y.ndim == 1
        Y = y.reshape(len(y), -1)
        if first:
            self._init_state(X.shape[1], Y.shape[1], one_d)
        elif Y.shape[1] != self.y_mean_.shape[0] or one_d != self._one_d:
            raise ValueError(f"y has shape {tuple(y.shape[1:])} per sample, but OnlineRidge is "
                             f"expecting {self._target_shape()} (as in the first partial_fit).")
        prediction = None
        if not first:
            P_all = self._predict_all(X)  # (n_alphas, n_rows, n_targets)
            prediction = _pick(P_all, self._best())
            # Summed in the model's dtype over the batch's rows (few), accumulated in float64.
            err = P_all.sub_(Y).square_().sum(dim=1).double()
            self.errors_.mul_(self.forgetting).add_(err)
        self._learn(X, Y)
        if prediction is None:
            return None
        return self._output(prediction.reshape(y.shape), out_dtype)

    def _init_state(self, p, v, one_d):
        alphas, _, dtype, device = self._params()
        f64 = dict(dtype=torch.float64, device=device)
        self.n_samples_seen_, self.n_batches_seen_, self.weight_sum_ = 0, 0, 0.0
        self.x_mean_, self.xx_ = torch.zeros(p, **f64), torch.zeros(p, p, **f64)
        self.y_mean_ = torch.zeros(v, dtype=dtype, device=device)
        self.xy_ = torch.zeros(p, v, dtype=dtype, device=device)
        self.errors_ = torch.zeros(len(alphas), v, **f64)
        self._one_d = one_d

    def _learn(self, X, Y):
        """Chan's weighted merge of the batch's moments into the running ones."""
        lam, n_b = float(self.forgetting), X.shape[0]
        n_a = lam * self.weight_sum_
        n = n_a + n_b
        mx_b, my_b = X.mean(0, dtype=torch.float64), Y.mean(0)
        dx, dy = mx_b - self.x_mean_, my_b - self.y_mean_
        shift = (n_a * n_b / n) ** 0.5
        # The batch's centred rows and the mean-shift row sqrt(w) d go through one product each,
        # and the past's decay rides on the product's beta (no pass over xy of its own).
        A = torch.cat([X.double() - mx_b, shift * dx[None]])
        B = torch.cat([Y - my_b, shift * dy[None]])
        self.xx_.mul_(lam).addmm_(A.T, A)
        self.xy_.addmm_(A.T.to(B.dtype), B, beta=lam)
        self.x_mean_.add_(dx, alpha=n_b / n)
        self.y_mean_.add_(dy, alpha=n_b / n)
        self.weight_sum_ = n
        self.n_samples_seen_ += n_b
        self.n_batches_seen_ += 1
        self._cache = {}

    # -- solving ------------------------------------------------------------------------------

    def _system(self):
        """Factors of ``S^-1 xx S^-1 + alpha I`` for every alpha, the scales ``S``; cached."""
        check_is_fitted(self)
        if "system" not in self._cache:
            alphas = self._params()[0]
            n, mx = self.weight_sum_, self.x_mean_
            xx = self.xx_ if self.fit_intercept else self.xx_ + n * torch.outer(mx, mx)
            scale = torch.ones_like(mx)
            if self.standardize:
                std = torch.sqrt(torch.diagonal(self.xx_) / n)
                scale = torch.where(std > 10 * torch.finfo(std.dtype).eps * mx.abs(), std, 1.0)
            base = xx / torch.outer(scale, scale)  # a new tensor: xx_ itself is never changed
            factors = []
            last = len(alphas) - 1
            for k, alpha in enumerate(alphas.tolist()):  # one by one: faster than batched on CPU
                A = base if k == last else base.clone()  # the last penalty takes base itself
                A.diagonal().add_(alpha)
                L, info = torch.linalg.cholesky_ex(A)
                # Not positive definite (alpha = 0, rank deficient): a pseudo-inverse, from eigh.
                factors.append(("pinv", torch.linalg.pinv(A, hermitian=True)) if info else
                               ("cholesky", L))
            self._cache["system"] = (factors, scale)
        return self._cache["system"]

    def _solve(self, R, which=None):
        """``(S^-1 xx S^-1 + alpha_k I)^-1 S^-1 R`` scaled back by ``S^-1``, for each alpha k (or
        the ones in ``which``): ``(n_alphas, d, m)``, float64."""
        factors, scale = self._system()
        which = range(len(factors)) if which is None else which
        R = R / scale[:, None]
        out = torch.stack([factors[k][1] @ R if factors[k][0] == "pinv"
                           else torch.cholesky_solve(R, factors[k][1]) for k in which])
        return out / scale[:, None]

    def _predict_all(self, X, which=None):
        """Predictions of ``X`` (design rows) at every alpha (or those in ``which``)."""
        mx, my = self.x_mean_, self.y_mean_
        Xc = X.double() - mx if self.fit_intercept else X.double()
        Z = self._solve(Xc.T, which)  # (k, d, n_rows)
        k, d, m = Z.shape
        Zt = Z.transpose(1, 2).reshape(k * m, d).to(self.xy_.dtype)
        # torch's BLAS even where numpy's is faster for this product: two thread pools taking
        # turns on the same cores made the whole trial 1.3-2.7x slower (bench/encoder_scale.py).
        P = (Zt @ self.xy_).view(k, m, -1)
        if self.fit_intercept:
            return P.add_(my)
        # xy of the uncentred system is xy + n mx my': a rank-one term, added after the product.
        scale = (Zt.double() @ mx).to(P.dtype) * self.weight_sum_
        return P.add_(scale.view(k, m, 1) * my)

    def _best(self):
        """Index into the grid of each target's alpha_: ties go to the largest alpha."""
        alphas = self._params()[0]
        order = torch.argsort(alphas, descending=True, stable=True)
        return order[torch.argmin(self.errors_[order], dim=0)]

    def _target_shape(self):
        return () if self._one_d else (self.y_mean_.shape[0],)

    def _alpha_index(self, alpha):
        alphas = self._params()[0]
        if alpha is None:
            return None
        hits = torch.nonzero(alphas == float(alpha))
        if len(hits) == 0:
            raise invalid_value("alpha", f"None or one of the grid {alphas.tolist()}", alpha)
        return int(hits[0])

    def predict(self, X, alpha=None):
        """Predict ``X`` (n_rows, n_features): at each target's ``alpha_``, or at ``alpha`` (a
        value of the grid) for all. Numpy in, numpy out (in the dtype of ``X``, computed in the
        model's); tensor in, tensor out on the device."""
        check_is_fitted(self)
        X, _, out_dtype = self._inputs(X)
        k = self._alpha_index(alpha)
        if k is None:
            P = _pick(self._predict_all(X), self._best())
        else:
            P = self._predict_all(X, [k])[0]
        return self._output(P.reshape(len(P), *self._target_shape()), out_dtype)

    def coefficients(self, alpha=None):
        """``(coef, intercept)`` as float64 tensors (n_targets, n_lagged) and (n_targets,)."""
        check_is_fitted(self)
        best = self._best() if alpha is None else torch.full_like(self._best(),
                                                                  self._alpha_index(alpha))
        xy = self.xy_.double()
        if not self.fit_intercept:
            xy = xy + self.weight_sum_ * torch.outer(self.x_mean_, self.y_mean_.double())
        W = torch.empty_like(xy)
        for k in torch.unique(best).tolist():  # voxels grouped by their alpha: d^2 v in all
            cols = torch.nonzero(best == k)[:, 0]
            W[:, cols] = self._solve(xy[:, cols], [k])[0]
        b = self.y_mean_.double() - self.x_mean_ @ W if self.fit_intercept else torch.zeros(
            W.shape[1], dtype=torch.float64, device=W.device)
        return W.T, b

    @property
    def coef_(self):
        W = self.coefficients()[0].cpu().numpy()
        return W[0] if self._one_d else W

    @property
    def intercept_(self):
        b = self.coefficients()[1].cpu().numpy()
        return float(b[0]) if self._one_d else b

    @property
    def alpha_(self):
        check_is_fitted(self)
        a = self._params()[0][self._best()].cpu().numpy()
        return float(a[0]) if self._one_d else a

    # -- checkpoints --------------------------------------------------------------------------

    def state_dict(self):
        """Parameters and running statistics as ``{name: ndarray or scalar}`` (CPU copies)."""
        check_is_fitted(self)
        state = dict(self.get_params())
        state["alphas"] = np.asarray(self._params()[0].cpu().numpy())
        state["lags"] = np.asarray(check_lags(self.lags))
        state["one_d"] = bool(self._one_d)
        state["hrf"], state["frame_rate_hz"] = check_hrf(self.hrf, self.frame_rate_hz)
        for name, default in _STATE_DEFAULTS.items():
            if state[name] == default:  # a FIR state is the same as before the options existed
                del state[name]
        for name in _SCALARS:
            state[name] = getattr(self, name)
        for name in _STATE:
            state[name] = getattr(self, name).cpu().numpy().copy()
        return state

    def load_state_dict(self, state):
        """Restore what ``state_dict`` returned (onto this model's ``device``). Returns self."""
        # States saved before the hemodynamic options existed are FIR states.
        state = {**_STATE_DEFAULTS, **state}
        params = set(self.get_params())
        missing = sorted((params | {"one_d", *_SCALARS, *_STATE}) - set(state))
        if missing:
            raise ValueError("Invalid value for the 'state' parameter. Allowed values are dicts "
                             f"from OnlineRidge.state_dict(), but got one missing {missing} "
                             "instead.")
        self.set_params(**{k: state[k] for k in params if k != "device"})
        self.alphas, self.lags = tuple(state["alphas"].tolist()), tuple(state["lags"].tolist())
        _, _, dtype, device = self._params()
        self.n_features_in_ = int(state["n_features_in_"])
        self.n_samples_seen_ = int(state["n_samples_seen_"])
        self.n_batches_seen_ = int(state["n_batches_seen_"])
        self.weight_sum_ = float(state["weight_sum_"])
        self._one_d = bool(state["one_d"])
        for name in _STATE:
            big = name in ("y_mean_", "xy_")
            self.__dict__[name] = torch.tensor(np.asarray(state[name]), device=device,
                                               dtype=dtype if big else torch.float64)
        self._cache = {}
        return self
