"""Activations of every layer, taken with no gradient and pooled to the brain's frame rate."""
from __future__ import annotations

import math

import numpy as np
import torch

from .model import layer_names, normalize_wave


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
        x = normalize_wave(wave).to(next(model.parameters()).device)
        out = model.wav2vec2(x, output_hidden_states=True)
    finally:
        model.train(was_training)
    spaces = [out.extract_features] + list(out.hidden_states[1:])
    n_model_frames = spaces[0].shape[1]
    pool = torch.from_numpy(pooling_matrix(n_model_frames, x.shape[1], sample_rate, frame_rate,
                                           offset_s))
    return {name: (pool @ h[0].float().cpu()).numpy()
            for name, h in zip(layer_names(model), spaces)}
