"""Finite impulse response (FIR) design: features at several delays, side by side.

The brain answers a sound a few frames late (hemodynamics), so an encoder predicts frame ``t`` from
the features of frames ``t - lag`` for each lag. Lags never reach into the previous trial: each
trial is lagged on its own, with zeros before its first frame.
"""

import numbers

import numpy as np
import torch

__all__ = ["check_lags", "lagged"]


def check_lags(lags):
    """Return ``lags`` as a tuple of ints, or raise a one-line ValueError."""
    try:
        values = tuple(lags)
    except TypeError:
        values = None
    ok = (
        values is not None
        and len(values) > 0
        and all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 0 for v in values
        )
    )
    if not ok:
        raise ValueError(
            "Invalid value for the 'lags' parameter. Allowed values are a non-empty sequence of "
            f"non-negative integers, but got {lags!r} instead."
        )
    return tuple(int(v) for v in values)


def lagged(X, lags):
    """Stack delayed copies of ``X`` along the feature axis (FIR design of one trial).

    Block ``k`` of the output is ``X`` shifted down by ``lags[k]`` frames:
    ``out[t, k*n_features:(k+1)*n_features] = X[t - lags[k]]`` if ``t >= lags[k]``, else 0.

    Parameters
    ----------
    X : array or torch tensor of shape (n_frames, n_features)
        Features of one trial at the brain frame rate.
    lags : sequence of int >= 0
        Delays in frames; ``0`` is the frame itself.

    Returns
    -------
    out : array of shape (n_frames, n_features * len(lags)), a new array of the same type
        (numpy or torch) and dtype as ``X``.

    Examples
    --------
    >>> import numpy as np
    >>> lagged(np.arange(1.0, 4.0)[:, None], [0, 1, 2])
    array([[1., 0., 0.],
           [2., 1., 0.],
           [3., 2., 1.]])
    """
    lags = check_lags(lags)
    X = X if isinstance(X, torch.Tensor) else np.asarray(X)
    if X.ndim != 2:
        raise ValueError(
            "Invalid value for the 'X' parameter. Allowed values are 2-D arrays "
            f"(n_frames, n_features), but got an array of shape {X.shape} instead."
        )
    n_frames, n_features = X.shape
    shape = (n_frames, n_features * len(lags))
    out = X.new_zeros(shape) if isinstance(X, torch.Tensor) else np.zeros(shape, dtype=X.dtype)
    # One slice copy per lag (a handful), never a loop over frames.
    for k, lag in enumerate(lags):
        if lag < n_frames:
            out[lag:, k * n_features : (k + 1) * n_features] = X[: n_frames - lag]
    return out
