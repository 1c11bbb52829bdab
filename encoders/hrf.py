"""Hemodynamic designs: a trial's features convolved with the canonical (Glover) HRF.

FIR lags (`encoders.lags`) let each voxel learn its own delay; with slow frames (fMRI, a TR of
1.49 s) and few trials, the canonical response is the usual prior instead: each feature is
convolved with the Glover HRF sampled at the frame rate, then the lags apply on top, so
``hrf="glover", lags=[0]`` is the classic GLM design and ``lags=[0, 1]`` lets a voxel shift its
response by a frame. Like the lags, the convolution never reaches into the previous trial: each
trial is convolved on its own, with zeros before its first frame.
"""
from __future__ import annotations

import functools
import math
import numbers

import numpy as np
import torch
from scipy.linalg import toeplitz

from replay.checks import check_choice, invalid_value

__all__ = ["HRFS", "check_hrf", "convolved", "glover_kernel", "hrf_kernel"]

HRFS = ("fir", "glover")
GLOVER_LENGTH_S = 32.0  # nilearn's default: the response and its undershoot are over by then


def check_hrf(hrf, frame_rate_hz) -> tuple[str, float | None]:
    """``(hrf, frame_rate_hz as a float or None)`` checked, or a one-line ValueError.

    ``frame_rate_hz`` is needed by ``"glover"`` (the kernel is sampled at it) and ignored by
    ``"fir"``; given, it must be a finite number > 0 either way.
    """
    check_choice("hrf", hrf, HRFS)
    if frame_rate_hz is not None:
        ok = (isinstance(frame_rate_hz, numbers.Real) and not isinstance(frame_rate_hz, bool)
              and math.isfinite(frame_rate_hz) and frame_rate_hz > 0)
        if not ok:
            raise invalid_value("frame_rate_hz", "None or a finite number > 0", frame_rate_hz)
        frame_rate_hz = float(frame_rate_hz)
    elif hrf == "glover":
        raise invalid_value("frame_rate_hz", "a finite number > 0 when hrf is 'glover' (the "
                            "kernel is sampled at the frame rate)", frame_rate_hz)
    return hrf, frame_rate_hz


@functools.lru_cache(maxsize=16)
def glover_kernel(frame_rate_hz: float, length_s: float = GLOVER_LENGTH_S) -> np.ndarray:
    """The Glover HRF sampled once per frame (nilearn's ``glover_hrf``, ``t_r = 1 /
    frame_rate_hz``, ``oversampling=1``), float64, read-only; it sums to 1.

    >>> np.round(glover_kernel(1 / 1.49)[:8], 3)
    array([ 0.   ,  0.   ,  0.05 ,  0.356,  0.555,  0.428,  0.169, -0.037])
    """
    # Imported here: nilearn is slow to import and only glover designs need it.
    from nilearn.glm.first_level import glover_hrf

    # Positional: the first parameter is `tr` before nilearn 0.11 and `t_r` since.
    kernel = np.asarray(glover_hrf(1.0 / frame_rate_hz, 1, length_s), dtype=np.float64)
    kernel.flags.writeable = False  # cached and shared: nobody may change it
    return kernel


def hrf_kernel(hrf: str, frame_rate_hz: float | None) -> np.ndarray | None:
    """The kernel of ``hrf`` at the frame rate: None for ``"fir"`` (no convolution)."""
    hrf, frame_rate_hz = check_hrf(hrf, frame_rate_hz)
    return None if hrf == "fir" else glover_kernel(frame_rate_hz)


def convolved(X, kernel):
    """Each column of ``X`` convolved with ``kernel``, causally, within the trial.

    ``out[t] = sum_{k <= t} kernel[k] X[t - k]``: ``np.convolve(X[:, j], kernel)[:n_frames]`` for
    every column ``j``, as if the trial were preceded by zeros.

    Parameters
    ----------
    X : array or torch tensor of shape (n_frames, n_features)
        Features of one trial at the brain frame rate.
    kernel : 1-D array
        The response to one frame of unit input, one value per frame from lag 0.

    Returns
    -------
    out : array of the shape, type (numpy or torch), device and dtype of ``X``.

    Examples
    --------
    >>> convolved(np.array([[1.0], [0.0], [2.0]]), [0.5, 0.25])
    array([[0.5 ],
           [0.25],
           [1.  ]])
    """
    is_tensor = isinstance(X, torch.Tensor)
    X = X if is_tensor else np.asarray(X)
    if X.ndim != 2:
        raise ValueError(
            "Invalid value for the 'X' parameter. Allowed values are 2-D arrays "
            f"(n_frames, n_features), but got an array of shape {tuple(X.shape)} instead.")
    n_frames = X.shape[0]
    column = np.zeros(n_frames)
    kernel = np.asarray(kernel, dtype=np.float64)[:n_frames]
    column[: len(kernel)] = kernel
    # The lower-triangular Toeplitz matrix of the kernel: one product per trial (a few dozen
    # frames), never a loop over frames or features.
    T = toeplitz(column, np.zeros(n_frames))
    if is_tensor:
        return torch.as_tensor(T, dtype=X.dtype, device=X.device) @ X
    return (T.astype(X.dtype, copy=False) @ X) if X.dtype.kind == "f" else T @ X
