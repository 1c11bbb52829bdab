"""Helpers shared by the benchmarks: best-of-repeats after a warm-up, and the inputs of a bare
transformers pretraining step."""
import time

import numpy as np
import torch

from simulator.model import normalize_wave
from simulator.ssl import sample_mask, sample_negatives


def best_time(fn, repeats: int = 5, warmup: int = 1) -> float:
    """Minimum wall time of ``fn()`` over ``repeats`` calls (the least disturbed one)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def pretraining_inputs(model, wave, seed: int = 0):
    """``(x, mask_time_indices, sampled_negative_indices)`` for ``model(...)``: the normalised
    waveform and one draw of the masks and negatives `simulator.ssl.ssl_step` uses."""
    x = normalize_wave(wave)
    n = int(model._get_feat_extract_output_lengths(x.shape[1]))
    rng = np.random.default_rng(seed)
    mask = sample_mask(rng, n, 0.4, 3)
    neg = torch.from_numpy(sample_negatives(rng, mask, model.config.num_negatives)[None])
    return x, torch.from_numpy(mask[None]), neg


def bare_step(model, wave, lr: float = 1e-4):
    """``(step, nograd)``: what a user of transformers alone writes for one self-supervised step
    of ``model`` on ``wave`` (forward with the pretraining loss, backward, ``AdamW.step``), and the
    no-grad forward with hidden states that a continuous trial makes before it learns."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    x, mask_t, neg = pretraining_inputs(model, wave)

    def step():
        model.train()
        loss = model(x, mask_time_indices=mask_t, sampled_negative_indices=neg).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def nograd():
        model.eval()
        with torch.no_grad():
            model.wav2vec2(x, output_hidden_states=True)

    return step, nograd
