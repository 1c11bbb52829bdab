"""One self-supervised wav2vec 2.0 step on a single sound, with the learner's own random streams.

transformers' ``_compute_mask_indices`` and ``_sample_negative_indices`` draw from numpy's global
random state and the Gumbel quantizer and dropout from torch's, so two learners in one process (or
a teacher and its student) would share and perturb one stream. Here masks and negatives come from
a ``numpy.random.Generator`` owned by the learner, and torch's global state is swapped for the
learner's own for the duration of the step (:meth:`RandomStreams.active`).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np
import torch

from .model import normalize_wave

MIN_MASKED = 2  # the negative sampler needs another masked frame to draw from


class RandomStreams:
    """Independent numpy and torch random streams for one learner, seeded once.

    >>> a, b = RandomStreams(0), RandomStreams(0)
    >>> with a.active():
    ...     x = torch.rand(2)
    >>> with b.active():
    ...     y = torch.rand(2)
    >>> bool(torch.equal(x, y)), int(a.numpy.integers(100)) == int(b.numpy.integers(100))
    (True, True)
    """

    def __init__(self, seed: int, device="cpu"):
        self.numpy = np.random.default_rng(seed)
        # On CUDA, dropout and the Gumbel noise draw from the device's generator: own that too.
        device = torch.device(device)
        self._cuda = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=self._cuda):
            torch.manual_seed(seed)
            self._torch_state = torch.get_rng_state()
            self._cuda_state = torch.cuda.get_rng_state(self._cuda[0]) if self._cuda else None
        self._numpy_global = np.random.RandomState(seed).get_state()

    def state_dict(self) -> dict:
        """The streams' positions (numpy arrays and JSON scalars), to resume them exactly."""
        state = {"numpy": self.numpy.bit_generator.state,
                 "torch": self._torch_state.numpy().copy()}
        legacy = np.random.RandomState()  # a carrier, to give the legacy state its dict form
        legacy.set_state(self._numpy_global)
        state["numpy_global"] = legacy.get_state(legacy=False)
        if self._cuda:
            state["cuda"] = self._cuda_state.cpu().numpy().copy()
        return state

    def load_state_dict(self, state: dict) -> RandomStreams:
        """Continue from positions that `state_dict` returned. Returns self."""
        self.numpy.bit_generator.state = state["numpy"]
        legacy = np.random.RandomState()
        legacy.set_state(state["numpy_global"])
        self._numpy_global = legacy.get_state()
        self._torch_state = torch.from_numpy(np.array(state["torch"], dtype=np.uint8))
        if self._cuda:
            self._cuda_state = torch.from_numpy(np.array(state["cuda"], dtype=np.uint8))
        return self

    @contextlib.contextmanager
    def active(self):
        """Make this learner's torch and numpy streams the global ones, restoring the caller's after."""
        saved_numpy = np.random.get_state()
        with torch.random.fork_rng(devices=self._cuda):
            torch.set_rng_state(self._torch_state)
            if self._cuda:
                torch.cuda.set_rng_state(self._cuda_state, self._cuda[0])
            np.random.set_state(self._numpy_global)
            try:
                yield self
            finally:
                self._torch_state = torch.get_rng_state()
                if self._cuda:
                    self._cuda_state = torch.cuda.get_rng_state(self._cuda[0])
                self._numpy_global = np.random.get_state()
                np.random.set_state(saved_numpy)


def sample_mask(rng: np.random.Generator, n_frames: int, prob: float, span: int) -> np.ndarray:
    """Boolean mask of spans over ``n_frames`` feature frames, with at least two masked frames.

    As in wav2vec 2.0, ``prob * n_frames / span`` span starts are drawn without replacement
    (probabilistic rounding) and each masks ``span`` frames; overlaps make ``prob`` an upper bound.

    >>> m = sample_mask(np.random.default_rng(0), 50, 0.4, 3)
    >>> m.shape, int(m.sum()) >= 2
    ((50,), True)
    """
    if n_frames < MIN_MASKED + 1:
        raise ValueError(f"a sound of {n_frames} feature frames is too short for a self-supervised "
                         f"step: it needs at least {MIN_MASKED + 1} (about 60 ms of audio)")
    span = max(1, min(span, n_frames - 1))
    n_starts = int(prob * n_frames / span + rng.random())
    n_starts = max(1, min(n_starts, n_frames - span + 1))
    starts = rng.choice(n_frames - span + 1, size=n_starts, replace=False)
    mask = np.zeros(n_frames, dtype=bool)
    mask[(starts[:, None] + np.arange(span)).ravel()] = True
    if mask.sum() < MIN_MASKED:  # one short span: add a second frame next to it
        free = np.flatnonzero(~mask)
        mask[rng.choice(free)] = True
    return mask


def sample_negatives(rng: np.random.Generator, mask: np.ndarray, n_negatives: int) -> np.ndarray:
    """For every frame, ``n_negatives`` indices of *other masked* frames of the same sound.

    Rows of unmasked frames are unused by the loss and left at 0, as transformers does.

    >>> mask = np.array([True, False, True, True])
    >>> neg = sample_negatives(np.random.default_rng(0), mask, 5)
    >>> neg.shape, bool(np.all(neg[0] != 0)), set(neg[mask].ravel()) <= {0, 2, 3}
    ((4, 5), True, True)
    """
    masked = np.flatnonzero(mask)
    m = len(masked)
    if m < MIN_MASKED:
        raise ValueError(f"negatives need at least {MIN_MASKED} masked frames, got {m}")
    # Draw from the m-1 others and shift past the positive itself: uniform, never the positive.
    draws = rng.integers(0, m - 1, size=(m, n_negatives))
    draws += draws >= np.arange(m)[:, None]
    negatives = np.zeros((len(mask), n_negatives), dtype=np.int64)
    negatives[masked] = masked[draws]
    return negatives


@dataclass(frozen=True)
class StepResult:
    """What one self-supervised step measured (loss per masked frame)."""

    loss: float
    contrastive: float
    diversity: float
    perplexity: float
    grad_norm: float
    skipped: bool = False          # the loss or gradient was not finite: no update was made


def ssl_step(model, optimizer, wave, streams: RandomStreams, mask_prob: float = 0.4,
             mask_span: int = 3, max_grad_norm: float = 1.0) -> StepResult:
    """One contrastive + diversity step of wav2vec 2.0 on one sound, then an optimizer step.

    The loss is divided by the number of masked frames (as transformers' pretraining example
    does) so the learning rate means the same for short and long sounds. A step whose loss or
    gradient is not finite (a rate too high for the network) is skipped, as
    ``torch.amp.GradScaler`` skips one, so the weights stay finite; the result says so.
    """
    x = normalize_wave(wave).to(next(model.parameters()).device)
    n_frames = int(model._get_feat_extract_output_lengths(x.shape[1]))
    mask = sample_mask(streams.numpy, n_frames, mask_prob, mask_span)
    negatives = sample_negatives(streams.numpy, mask, model.config.num_negatives)
    n_masked = int(mask.sum())
    model.train()
    with streams.active():
        out = model(x, mask_time_indices=torch.from_numpy(mask[None]).to(x.device),
                    sampled_negative_indices=torch.from_numpy(negatives[None]).to(x.device))
        loss = out.loss / n_masked
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm))
        skipped = not (math.isfinite(float(loss.detach())) and math.isfinite(grad_norm))
        if skipped:
            optimizer.zero_grad(set_to_none=True)
        else:
            optimizer.step()
    return StepResult(float(loss.detach()), float(out.contrastive_loss.detach()) / n_masked,
                      float(out.diversity_loss.detach()) / n_masked,
                      float(out.codevector_perplexity.detach()), grad_norm, skipped)
