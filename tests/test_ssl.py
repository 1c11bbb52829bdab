"""Tests of the single-sound SSL step: mask and negative samplers, the learner's own random streams."""
import copy

import numpy as np
import pytest
import torch

from simulator.model import build_model
from simulator.ssl import MIN_MASKED, RandomStreams, StepResult, sample_mask, sample_negatives, ssl_step

SR = 16000


def runs(mask):
    """Lengths of the runs of True in a boolean vector."""
    padded = np.concatenate([[0], mask.astype(int), [0]])
    edges = np.flatnonzero(np.diff(padded))
    return edges[1::2] - edges[::2]


def wave(seed, seconds=0.5):
    return np.random.default_rng(seed).standard_normal(int(seconds * SR)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny():
    return build_model("tiny", seed=0)


def make_learner(model, seed, lr=1e-3):
    model = copy.deepcopy(model)
    return model, torch.optim.AdamW(model.parameters(), lr=lr), RandomStreams(seed)


def flat(model):
    return torch.cat([p.detach().ravel() for p in model.parameters()])


# --- sample_mask -------------------------------------------------------------------------------

@pytest.mark.parametrize("span", [1, 2, 3, 10])
def test_sample_mask_at_least_two_masked_frames(span):
    for seed in range(3):
        rng = np.random.default_rng(seed)
        for n_frames in range(3, 61):
            for prob in np.linspace(0.0, 1.0, 6):
                mask = sample_mask(rng, n_frames, prob, span)
                assert mask.shape == (n_frames,) and mask.dtype == bool
                assert mask.sum() >= MIN_MASKED, (seed, n_frames, prob, span)


@pytest.mark.parametrize("span", [2, 3, 5])
def test_sample_mask_masks_whole_spans(span):
    rng = np.random.default_rng(1)
    for n_frames in range(span + 1, 80):
        for prob in (0.0, 0.2, 0.65, 1.0):
            mask = sample_mask(rng, n_frames, prob, span)
            assert runs(mask).min() >= span, (n_frames, prob)
            # prob bounds the masked fraction (probabilistic rounding adds at most one span).
            assert mask.sum() <= prob * n_frames + span


def test_sample_mask_zero_prob_is_one_span():
    rng = np.random.default_rng(2)
    for n_frames in range(5, 40):
        mask = sample_mask(rng, n_frames, 0.0, 3)
        assert runs(mask).tolist() == [3]
    # With span 1 a single start masks one frame; the sampler adds a second one.
    assert all(sample_mask(rng, 20, 0.0, 1).sum() == 2 for _ in range(20))


def test_sample_mask_rate_and_seed():
    masks = [sample_mask(np.random.default_rng(s), 1000, 0.4, 3) for s in range(20)]
    # Span starts at 0.4 * n / span without replacement: overlaps leave ~1 - exp(-0.4) ~ 0.33 masked.
    assert 0.28 < np.mean([m.mean() for m in masks]) < 0.38
    np.testing.assert_array_equal(sample_mask(np.random.default_rng(5), 1000, 0.4, 3), masks[5])
    assert not np.array_equal(masks[0], masks[1])


@pytest.mark.parametrize("n_frames", [0, 1, 2])
def test_sample_mask_too_short(n_frames):
    with pytest.raises(ValueError, match=rf"a sound of {n_frames} feature frames is too short for a "
                                         r"self-supervised step: it needs at least 3"):
        sample_mask(np.random.default_rng(0), n_frames, 0.4, 3)


# --- sample_negatives --------------------------------------------------------------------------

def test_sample_negatives_masked_others_only():
    rng = np.random.default_rng(0)
    for trial in range(50):
        n = int(rng.integers(3, 60))
        mask = sample_mask(rng, n, float(rng.uniform()), int(rng.integers(1, 5)))
        neg = sample_negatives(rng, mask, 30)
        assert neg.shape == (n, 30) and neg.dtype == np.int64
        masked = np.flatnonzero(mask)
        assert np.isin(neg[mask], masked).all()
        assert (neg[mask] != masked[:, None]).all()  # never the positive itself
        assert (neg[~mask] == 0).all()


def test_sample_negatives_covers_every_other_masked_frame():
    mask = np.array([False, True, True, False, True, True])
    neg = sample_negatives(np.random.default_rng(0), mask, 200)
    for i in np.flatnonzero(mask):
        assert set(neg[i].tolist()) == set(np.flatnonzero(mask).tolist()) - {i}


def test_sample_negatives_needs_two_masked():
    with pytest.raises(ValueError, match="negatives need at least 2 masked frames, got 1"):
        sample_negatives(np.random.default_rng(0), np.array([False, True, False]), 5)


# --- RandomStreams -----------------------------------------------------------------------------

def draws(streams):
    with streams.active():
        return (torch.rand(5), np.random.random(5), streams.numpy.random(5))


def test_random_streams_same_seed_same_draws():
    a, b, c = draws(RandomStreams(4)), draws(RandomStreams(4)), draws(RandomStreams(5))
    for x, y, z in zip(a, b, c):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        assert not np.array_equal(np.asarray(x), np.asarray(z))


def test_random_streams_continue_across_activations():
    one, two = RandomStreams(0), RandomStreams(0)
    with one.active():
        both = torch.rand(6)
    with two.active():
        first = torch.rand(3)
    torch.rand(10)  # the caller's draws in between do not move the learner's stream
    with two.active():
        second = torch.rand(3)
    assert torch.equal(torch.cat([first, second]), both)


def test_random_streams_state_dict_round_trip():
    a = RandomStreams(7)
    draws(a)
    b = RandomStreams(0).load_state_dict(a.state_dict())
    for x, y in zip(draws(a), draws(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# --- ssl_step ----------------------------------------------------------------------------------

def test_ssl_step_measures_and_learns(tiny):
    model, opt, streams = make_learner(tiny, seed=0)
    before = flat(model)
    result = ssl_step(model, opt, wave(0), streams)
    assert isinstance(result, StepResult)
    for key in ("loss", "contrastive", "diversity", "perplexity", "grad_norm"):
        assert np.isfinite(getattr(result, key)), key
    assert result.loss == pytest.approx(result.contrastive + 0.5 * result.diversity, rel=1e-4)
    assert result.grad_norm > 0
    groups, codes = model.config.num_codevector_groups, model.config.num_codevectors_per_group
    assert 1.0 <= result.perplexity <= groups * codes
    assert not torch.equal(flat(model), before)


def test_two_learners_are_independent(tiny):
    sounds = [wave(1), wave(2)]
    torch.manual_seed(0)
    a_alone = make_learner(tiny, seed=0)
    alone = [ssl_step(*a_alone[:2], s, a_alone[2]) for s in sounds]
    a, b = make_learner(tiny, seed=0), make_learner(tiny, seed=1)
    interleaved = []
    for i, s in enumerate(sounds):
        torch.manual_seed(100 + i)  # nor does the caller's own use of the global streams
        np.random.seed(100 + i)
        interleaved.append(ssl_step(*a[:2], s, a[2]))
        ssl_step(*b[:2], wave(9), b[2])  # B's steps draw masks, dropout and Gumbel noise too
    assert interleaved == alone
    assert torch.equal(flat(a[0]), flat(a_alone[0]))
    assert not torch.equal(flat(b[0]), flat(a[0]))


def test_ssl_step_leaves_caller_random_state_alone(tiny):
    model, opt, streams = make_learner(tiny, seed=0)
    torch.manual_seed(11)
    np.random.seed(11)
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    ssl_step(model, opt, wave(3), streams)
    assert torch.equal(torch.get_rng_state(), torch_state)
    after = np.random.get_state()
    assert after[0] == numpy_state[0] and np.array_equal(after[1], numpy_state[1])
    assert after[2:] == numpy_state[2:]


def test_ssl_step_deterministic_per_seed(tiny):
    results = []
    for seed in (0, 0, 1):
        model, opt, streams = make_learner(tiny, seed=seed)
        results.append((ssl_step(model, opt, wave(4), streams), flat(model)))
    assert results[0][0] == results[1][0] and torch.equal(results[0][1], results[1][1])
    assert results[0][0] != results[2][0]


def test_ssl_step_too_short_sound(tiny):
    model, opt, streams = make_learner(tiny, seed=0)
    with pytest.raises(ValueError, match="too short for a self-supervised step"):
        ssl_step(model, opt, wave(0, seconds=0.03), streams)


# --- non-finite steps ----------------------------------------------------------------------------

def test_a_step_with_a_non_finite_gradient_is_skipped_and_leaves_the_weights_finite(tiny):
    model, opt, streams = make_learner(tiny, seed=0)
    before = flat(model).clone()
    # What a rate too high for the network produces: an overflowing gradient in one weight.
    handle = model.wav2vec2.encoder.layers[0].attention.q_proj.weight.register_hook(
        lambda g: g * float("inf"))
    try:
        result = ssl_step(model, opt, wave(0), streams)
    finally:
        handle.remove()
    assert result.skipped and not np.isfinite(result.grad_norm)
    assert torch.equal(flat(model), before)  # no update at all, not a partial one
    assert not opt.state  # nor any optimizer moment built from the bad gradient
    result = ssl_step(model, opt, wave(0), streams)
    assert not result.skipped and np.isfinite(result.loss)
    assert torch.isfinite(flat(model)).all() and not torch.equal(flat(model), before)
