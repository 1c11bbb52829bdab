"""Tests of the model factory: sizes, seeding, layer names, loading errors, waveform normalisation."""
import numpy as np
import pytest
import torch

from simulator.model import (SIZES, ModelError, build_model, layer_modules, layer_names, load_model,
                             normalize_wave)


@pytest.mark.parametrize("size, hidden, n_layers, n_params", [("tiny", 128, 4, (1.0e6, 1.5e6)),
                                                             ("small", 384, 6, (1.1e7, 1.4e7))])
def test_build_model_sizes(size, hidden, n_layers, n_params):
    model = build_model(size, seed=0)
    assert model.config.hidden_size == hidden
    assert model.config.num_hidden_layers == n_layers == len(model.wav2vec2.encoder.layers)
    assert n_params[0] < sum(p.numel() for p in model.parameters()) < n_params[1]
    # Shared settings the learner relies on: no layerdrop (it would draw from numpy's global state).
    assert model.config.layerdrop == 0.0 and model.config.diversity_loss_weight == 0.5


def test_base_size_is_transformers_default():
    assert SIZES["base"] == {}


def test_wide_init_is_tiny_with_wider_linear_weights():
    tiny, wide = build_model("tiny", seed=0), build_model("tiny-wide-init", seed=0)
    assert sum(p.numel() for p in tiny.parameters()) == sum(p.numel() for p in wide.parameters())
    w_tiny = tiny.wav2vec2.encoder.layers[0].feed_forward.intermediate_dense.weight.detach()
    w_wide = wide.wav2vec2.encoder.layers[0].feed_forward.intermediate_dense.weight.detach()
    assert float(w_tiny.std()) == pytest.approx(0.02, rel=0.05)
    assert float(w_wide.std()) == pytest.approx(0.3, rel=0.05)


@torch.no_grad()
def test_wide_init_layers_are_not_one_linear_space():
    from simulator.sounds import make_sound_set

    # Frame by frame, the part of layer_3 that no linear map of layer_1 explains, over more frames
    # (8 s of synthetic sounds: 399) than features (128).
    wave = normalize_wave(make_sound_set(4, 2.0, seed=0).audio.ravel())

    def unexplained(size):
        model = build_model(size, seed=0).eval()
        hidden = model.wav2vec2(wave, output_hidden_states=True).hidden_states
        x, y = (h[0] - h[0].mean(0) for h in (hidden[1], hidden[3]))
        residual = y - x @ torch.linalg.lstsq(x, y).solution
        return float(residual.pow(2).sum() / y.pow(2).sum())

    tiny, wide = unexplained("tiny"), unexplained("tiny-wide-init")
    assert tiny < 1e-3          # one linear space: the residual stream barely changes
    assert wide > 50 * tiny     # measured: 2e-4 against 4e-2


def test_build_model_seeded_and_leaves_global_stream_alone():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a, b, c = build_model("tiny", seed=0), build_model("tiny", seed=0), build_model("tiny", seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    pa, pb, pc = (torch.cat([p.detach().ravel() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb)
    assert not torch.equal(pa, pc)


def test_bad_size_message():
    with pytest.raises(ModelError, match=r"^Invalid value for the 'size' parameter\. Allowed values are "
                                         r"'tiny', 'tiny-wide-init', 'small' and 'base', but got 'huge' "
                                         r"instead\.$"):
        build_model("huge")
    assert issubclass(ModelError, ValueError)


def test_layer_names_and_modules():
    model = build_model("tiny")
    assert layer_names(model) == ["cnn", "layer_1", "layer_2", "layer_3", "layer_4"]
    modules = layer_modules(model)
    assert list(modules) == layer_names(model)
    assert modules["cnn"] is model.wav2vec2.feature_extractor
    assert modules["layer_4"] is model.wav2vec2.encoder.layers[3]


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_load_model_error_is_one_line_naming_pretrain(tmp_path, make):
    path = tmp_path / "nothing_here"
    if make == "empty":
        path.mkdir()
    with pytest.raises(ModelError) as info:
        load_model(str(path))
    message = str(info.value)
    assert "\n" not in message
    assert repr(str(path)) in message
    assert "'cortexreplay pretrain" in message


def test_load_model_round_trip(tmp_path):
    model = build_model("tiny", seed=3)
    model.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path))
    for (name, p), q in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(p, q), name


def test_normalize_wave():
    wave = np.random.default_rng(0).normal(3.0, 2.0, 1000)
    x = normalize_wave(wave)
    assert x.shape == (1, 1000) and x.dtype == torch.float32
    assert abs(float(x.mean())) < 1e-5
    assert float(x.var(unbiased=False)) == pytest.approx(1.0, abs=1e-4)
    # Silence stays finite (the epsilon in the denominator).
    assert torch.isfinite(normalize_wave(np.zeros(10))).all()
