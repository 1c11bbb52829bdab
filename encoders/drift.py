"""Page-Hinkley change detection on many streams at once: one detector per voxel.

An online encoding model scores each voxel prequentially (predict, then learn); when a voxel's
prequential error changes level, the model it learned no longer fits, e.g. the recorded cortex
adapted. ``PageHinkley`` watches one error stream per voxel and says, update by update, which
voxels changed. All voxels update together as numpy arrays, with no Python loop over voxels.

Each stream runs the recurrence of ``river.drift.PageHinkley``, which is the reference: every
stream here gives the same detections, at the same updates, as river's detector fed that stream
alone. With ``t = 1, 2, ...`` counting the values since the stream's last reset::

    m_t  = m_{t-1} + (1 / t) (x_t - m_{t-1})              m_0 = 0      running mean
    d_t  = x_t - m_t
    U_t  = alpha U_{t-1} + d_t - delta                    U_0 = 0      faded sum, rises on increases
    L_t  = alpha L_{t-1} + d_t + delta                    L_0 = 0      faded sum, falls on decreases
    Umin_t = min(Umin_{t-1}, U_t)                         Umin_0 = +inf
    Lmax_t = max(Lmax_{t-1}, L_t)                         Lmax_0 = -1  (river's start value)

and, once ``t >= min_instances``, a change is detected when ``U_t - Umin_t > threshold`` (mode
``"up"``), ``Lmax_t - L_t > threshold`` (``"down"``) or either (``"both"``). A stream that detected
a change starts afresh at its next update, whose value is its ``t = 1``; the others go on.
"""
from __future__ import annotations

import numbers

import numpy as np

from replay.checks import check_choice, invalid_value

__all__ = ["PageHinkley"]

MODES = ("up", "down", "both")
# Per-stream running state, float64 (river's are Python floats); n is float as river's Mean.n is.
_ARRAYS = ("n", "mean", "sum_increase", "sum_decrease", "min_increase", "max_decrease")
_PARAMS = ("n_streams", "min_instances", "delta", "threshold", "alpha", "mode")


def _invalid(name, allowed, got):
    return invalid_value(name, allowed, got=got)


def _integer(name, value, low):
    # bool is an Integral, but True streams or instances is a mistake, not a number.
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
        raise _invalid(name, f"integers >= {low}", repr(value))
    return int(value)


def _real(name, value, allowed, ok):
    if (not isinstance(value, numbers.Real) or isinstance(value, bool)
            or not np.isfinite(value) or not ok(value)):
        raise _invalid(name, allowed, repr(value))
    # A Python float, so that the recurrence rounds as river's does on Python floats.
    return float(value)


class PageHinkley:
    """Page-Hinkley test on many streams at once (one per voxel), as ``river.drift.PageHinkley``.

    Parameters
    ----------
    n_streams : int >= 1
        The number of independent streams (voxels).
    min_instances : int >= 1, default 30
        Values a stream must have seen since its last reset before it may detect a change.
    delta : float >= 0, default 0.005
        The magnitude of change tolerated (subtracted from, or added to, each deviation).
    threshold : float > 0, default 50
        The detection threshold (lambda).
    alpha : float in (0, 1], default 1 - 0.0001
        The forgetting factor of the cumulative sums.
    mode : {"up", "down", "both"}, default "both"
        Detect increases of the mean, decreases, or both.

    Examples
    --------
    Three streams; the second steps up by 5 at update 100:

    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(0.0, 0.1, size=(200, 3))
    >>> X[100:, 1] += 5.0
    >>> ph = PageHinkley(3)
    >>> for t, x in enumerate(X):
    ...     if ph.update(x).any():
    ...         print(t, np.flatnonzero(ph.drift_detected))
    110 [1]
    >>> ph.n_detections
    array([0, 1, 0])
    """

    def __init__(self, n_streams, min_instances=30, delta=0.005, threshold=50.0,
                 alpha=1 - 0.0001, mode="both"):
        self.n_streams = _integer("n_streams", n_streams, 1)
        self.min_instances = _integer("min_instances", min_instances, 1)
        self.delta = _real("delta", delta, "numbers >= 0", lambda v: v >= 0)
        self.threshold = _real("threshold", threshold, "numbers > 0", lambda v: v > 0)
        self.alpha = _real("alpha", alpha, "numbers in (0, 1]", lambda v: 0 < v <= 1)
        self.mode = check_choice("mode", mode, MODES)
        self._n_detections = np.zeros(self.n_streams, dtype=np.int64)
        self._drift_detected = np.zeros(self.n_streams, dtype=bool)
        self._arrays = {name: np.empty(self.n_streams) for name in _ARRAYS}
        self._reset(np.ones(self.n_streams, dtype=bool))

    def _reset(self, mask):
        a = self._arrays
        for name in ("n", "mean", "sum_increase", "sum_decrease"):
            a[name][mask] = 0.0
        a["min_increase"][mask] = np.inf
        # -1 as in river, not -inf. With delta >= 0 it never decides anything (the first update
        # gives L_1 = delta > -1), but a state read before any update then matches river's.
        a["max_decrease"][mask] = -1.0

    @property
    def drift_detected(self) -> np.ndarray:
        """Bool mask (n_streams,): the streams that detected a change at the last update."""
        return self._drift_detected.copy()

    @property
    def n_detections(self) -> np.ndarray:
        """Int array (n_streams,): how many changes each stream has detected so far."""
        return self._n_detections.copy()

    def update(self, x) -> np.ndarray:
        """Feed one value per stream; return the mask of streams that detect a change now.

        A stream that detected a change at the previous update is reset first, as river resets at
        the start of the update after a detection. A refused ``x`` changes nothing.
        """
        x = self._check_x(x)
        if self._drift_detected.any():
            self._reset(self._drift_detected)
        a = self._arrays
        # Every expression keeps river's operands and order, so the floats round the same way.
        n = a["n"] + 1.0
        mean = a["mean"] + (1.0 / n) * (x - a["mean"])
        dev = x - mean
        up = self.alpha * a["sum_increase"] + dev - self.delta
        down = self.alpha * a["sum_decrease"] + dev + self.delta
        low = np.minimum(a["min_increase"], up)
        high = np.maximum(a["max_decrease"], down)
        if self.mode == "up":
            change = up - low > self.threshold
        elif self.mode == "down":
            change = high - down > self.threshold
        else:
            change = (up - low > self.threshold) | (high - down > self.threshold)
        change &= n >= self.min_instances
        a.update(n=n, mean=mean, sum_increase=up, sum_decrease=down, min_increase=low,
                 max_decrease=high)
        self._drift_detected = change
        self._n_detections += change
        return change.copy()

    def _check_x(self, x):
        shape = (self.n_streams,)
        allowed = f"finite real numbers in an array of shape {shape}"
        try:
            arr = np.asarray(x)
        except (TypeError, ValueError):  # ragged lists and the like
            got = f"a {type(x).__name__} numpy cannot make an array of"
            raise _invalid("x", allowed, got) from None
        if arr.dtype.kind not in "biuf":
            raise _invalid("x", allowed, f"an array of dtype {arr.dtype}")
        if arr.shape != shape:
            raise _invalid("x", allowed, f"an array of shape {arr.shape}")
        arr = arr.astype(np.float64)
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        if bad:
            raise _invalid("x", allowed, f"an array with {bad} non-finite value(s)")
        return arr

    # -- checkpoints --------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Parameters and per-stream state as ``{name: ndarray or scalar}`` (copies)."""
        state = {name: getattr(self, name) for name in _PARAMS}
        state.update({name: v.copy() for name, v in self._arrays.items()})
        state["drift_detected"] = self._drift_detected.copy()
        state["n_detections"] = self._n_detections.copy()
        return state

    def load_state_dict(self, state) -> PageHinkley:
        """Restore what ``state_dict`` returned, parameters included. Returns self.

        A state that is incomplete, or holds bad parameters or arrays, changes nothing.
        """
        keys = (*_PARAMS, *_ARRAYS, "drift_detected", "n_detections")
        missing = [k for k in keys if k not in state] if isinstance(state, dict) else list(keys)
        if missing:
            raise _invalid("state", "dicts from PageHinkley.state_dict()",
                           f"a {type(state).__name__} missing {missing}")
        # A fresh detector checks the parameters; the arrays are checked against its shape.
        new = PageHinkley(**{k: state[k] for k in _PARAMS})
        shape = (new.n_streams,)
        arrays = {}
        for name, dtype in [*((k, np.float64) for k in _ARRAYS), ("drift_detected", bool),
                            ("n_detections", np.int64)]:
            value = np.asarray(state[name])
            if value.shape != shape or not np.can_cast(value.dtype, dtype, casting="same_kind"):
                raise _invalid("state", f"dicts from PageHinkley.state_dict() with {name!r} of "
                               f"shape {shape}", f"{name!r} of shape {value.shape} and dtype "
                               f"{value.dtype}")
            arrays[name] = value.astype(dtype)
        self.__dict__.update(new.__dict__)
        self._arrays = {name: arrays[name] for name in _ARRAYS}
        self._drift_detected = arrays["drift_detected"]
        self._n_detections = arrays["n_detections"]
        return self
