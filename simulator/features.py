"""Activations of every layer, taken with no gradient and pooled to the brain's frame rate."""
from __future__ import annotations

import math

import numpy as np
import torch

from .model import hidden_spaces, layer_names, model_input


def n_brain_frames(n_samples: int, sample_rate: float, frame_rate: float,
                   offset_s: float = 0.0) -> int:
    """Brain frames a sound spans when it starts ``offset_s`` into its first frame, at least one.

    >>> n_brain_frames(32000, 16000, 1.0), n_brain_frames(24000, 16000, 1.0)
    (2, 2)
    >>> n_brain_frames(32000, 16000, 1.0, offset_s=0.5)
    3
    """
    return max(1, math.ceil((offset_s + n_samples / sample_rate) * frame_rate - 1e-9))


def pooling_matrix(n_model_frames: int, n_samples: int, sample_rate: float,
                   frame_rate: float, offset_s: float = 0.0) -> np.ndarray:
    """(n_brain_frames, n_model_frames) matrix averaging model frames into brain-frame bins.

    Model frames are spread evenly over the sound, which starts ``offset_s`` after the start of
    its first brain frame (an onset between two frames); each goes to the brain frame its centre
    falls in. A bin that no model frame reaches (a sound far shorter than a frame) repeats the
    last one.

    >>> pooling_matrix(4, 32000, 16000, 1.0)
    array([[0.5, 0.5, 0. , 0. ],
           [0. , 0. , 0.5, 0.5]], dtype=float32)
    """
    n_out = n_brain_frames(n_samples, sample_rate, frame_rate, offset_s)
    centres = offset_s + (np.arange(n_model_frames) + 0.5) * (n_samples / sample_rate) / n_model_frames
    bins = np.minimum((centres * frame_rate).astype(int), n_out - 1)
    pool = np.zeros((n_out, n_model_frames), dtype=np.float32)
    pool[bins, np.arange(n_model_frames)] = 1.0
    for j in range(1, n_out):  # rare: a last bin of a few ms, or a sound shorter than a model frame
        if not pool[j].any():
            pool[j] = pool[j - 1]
    if not pool[0].any():
        pool[0, 0] = 1.0
    return pool / pool.sum(axis=1, keepdims=True)


@torch.no_grad()
def extract_features(model, wave, sample_rate: float, frame_rate: float,
                     offset_s: float = 0.0) -> dict[str, np.ndarray]:
    """Per-layer activations of ``model`` to ``wave``, pooled to brain frames (float32).

    ``offset_s`` is where the sound starts within its first brain frame (see `pooling_matrix`).
    Returns ``{layer name: (n_brain_frames, n_features)}``. The model runs in eval mode (no
    dropout, deterministic quantizer) and its training mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        x = model_input(model, wave)
        spaces = hidden_spaces(model, x)
    finally:
        model.train(was_training)
    return {name: pool_frames(h[0].float(), x.shape[1], sample_rate, frame_rate, offset_s)
            .cpu().numpy() for name, h in zip(layer_names(model), spaces)}


def pool_frames(h: torch.Tensor, n_samples: int, sample_rate: float, frame_rate: float,
                offset_s: float = 0.0) -> torch.Tensor:
    """One layer's activations ``h`` (n_model_frames, n_features) of a sound of ``n_samples``,
    averaged into brain frames (`pooling_matrix`); differentiable. Each layer has its own number
    of model frames (SoundNet's shrink with depth; wav2vec 2.0's are all the same)."""
    pool = torch.from_numpy(pooling_matrix(h.shape[0], n_samples, sample_rate, frame_rate,
                                           offset_s)).to(device=h.device, dtype=h.dtype)
    return pool @ h
