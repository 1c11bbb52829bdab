"""Tests of feature extraction: pooling to brain frames, layer keys and shapes, no grad, mode restored."""
import numpy as np
import pytest
import torch

from simulator.features import extract_features, n_brain_frames, pooling_matrix
from simulator.model import build_model, layer_names, normalize_wave

SR = 16000


@pytest.fixture(scope="module")
def tiny():
    return build_model("tiny", seed=0)


def sound(seconds, seed=0):
    return np.random.default_rng(seed).standard_normal(int(round(seconds * SR))).astype(np.float32)


@pytest.mark.parametrize("n_samples, frame_rate, expected", [
    (40000, 1.0, 3), (32000, 1.0, 2), (32001, 1.0, 3), (1, 1.0, 1), (0, 1.0, 1),
    (16000, 2.5, 3), (48000, 0.5, 2)])
def test_n_brain_frames(n_samples, frame_rate, expected):
    assert n_brain_frames(n_samples, SR, frame_rate) == expected


def test_pooling_matrix_rows_average():
    rng = np.random.default_rng(0)
    for _ in range(100):
        n_model = int(rng.integers(1, 400))
        n_samples = int(rng.integers(1, 10 * SR))
        frame_rate = float(rng.choice([0.5, 1.0, 2.0, 10.0]))
        pool = pooling_matrix(n_model, n_samples, SR, frame_rate)
        assert pool.shape == (n_brain_frames(n_samples, SR, frame_rate), n_model)
        assert pool.dtype == np.float32 and (pool >= 0).all()
        np.testing.assert_allclose(pool.sum(axis=1), 1.0, rtol=1e-6)
        # Each model frame lands in one bin, in time order; a bin no frame reaches (a short last
        # bin) copies the one before it.
        copied = np.r_[False, (pool[1:] == pool[:-1]).all(axis=1)]
        own = pool[~copied]
        assert ((own > 0).sum(axis=0) == 1).all()
        assert (np.diff(own.argmax(axis=0)) >= 0).all()


def test_pooling_matrix_bins_follow_time():
    # 2.5 s, 125 model frames (20 ms each): frames 0-49, 50-99 and 100-124 fill the three bins.
    pool = pooling_matrix(125, 40000, SR, 1.0)
    owner = pool.argmax(axis=0)
    np.testing.assert_array_equal(owner, np.repeat([0, 1, 2], [50, 50, 25]))
    np.testing.assert_allclose(pool[2, 100:], 1 / 25, rtol=1e-6)


def test_pooling_matrix_shorter_than_a_bin():
    # One model frame over three brain frames: its centre (1.5 s) fills bin 1; bins 0 and 2 reuse it.
    pool = pooling_matrix(1, 48000, SR, 1.0)
    np.testing.assert_array_equal(pool, np.ones((3, 1), dtype=np.float32))


def test_extract_features_keys_and_shapes(tiny):
    features = extract_features(tiny, sound(2.5), SR, 1.0)
    assert list(features) == layer_names(tiny)
    for name, X in features.items():
        assert isinstance(X, np.ndarray) and X.dtype == np.float32
        assert X.shape == (3, 128), name
        assert np.isfinite(X).all()
    assert not np.allclose(features["layer_1"], features["layer_4"])


def test_extract_features_no_grad_and_mode_restored(tiny):
    seen = []
    hook = tiny.wav2vec2.register_forward_hook(
        lambda module, args, out: seen.append((torch.is_grad_enabled(), module.training)))
    try:
        for training in (True, False):
            tiny.train(training)
            extract_features(tiny, sound(1.0), SR, 1.0)
            assert tiny.training is training
            assert all(m.training is training for m in tiny.modules())
    finally:
        hook.remove()
    assert seen == [(False, False), (False, False)]
    assert all(p.grad is None for p in tiny.parameters())


def test_extract_features_deterministic_in_train_mode(tiny):
    # Dropout is on in train mode; features must still be read without it.
    tiny.train()
    a = extract_features(tiny, sound(1.0, seed=1), SR, 1.0)
    b = extract_features(tiny, sound(1.0, seed=1), SR, 1.0)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


def test_extract_features_pool_is_mean_of_model_frames(tiny):
    # At 0.1 Hz a 2.5 s sound is one brain frame: the mean of every model frame. "layer_k" must be
    # the output of transformer block k, caught here by hooks on the blocks themselves.
    wave = sound(2.5, seed=2)
    features = extract_features(tiny, wave, SR, 0.1)
    blocks = []

    def keep(module, args, out):
        blocks.append(out[0] if isinstance(out, tuple) else out)

    hooks = [block.register_forward_hook(keep) for block in tiny.wav2vec2.encoder.layers]
    tiny.eval()
    try:
        with torch.no_grad():
            cnn = tiny.wav2vec2(normalize_wave(wave)).extract_features
    finally:
        for hook in hooks:
            hook.remove()
    assert len(blocks) == 4
    expected = {"cnn": cnn, **{f"layer_{k + 1}": h for k, h in enumerate(blocks)}}
    for name, h in expected.items():
        np.testing.assert_allclose(features[name], h[0].mean(0, keepdim=True).numpy(), rtol=1e-4,
                                   atol=1e-5, err_msg=name)


def test_pooling_follows_an_onset_between_frames():
    """A 2 s sound starting 0.5 s into its first frame spans 3 frames: 0.5 s, 1 s and 0.5 s of it."""
    pool = pooling_matrix(100, 32000, 16000, 1.0, offset_s=0.5)
    assert pool.shape == (3, 100)
    owners = pool.argmax(axis=0)
    assert np.bincount(owners).tolist() == [25, 50, 25]
    np.testing.assert_allclose(pool.sum(axis=1), 1.0, rtol=1e-6)
