"""SoundNet: architecture, frame counts, weights files in the PyTorch port's layout, gradients."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from simulator.features import pooling_matrix
from simulator.model import ModelError
from simulator.soundnet import (SAMPLE_RATE, SoundNet, build_soundnet, frame_counts,
                                is_soundnet_file, load_soundnet, save_soundnet)

# The PyTorch port's blocks (smallflyingpig/SoundNet_Pytorch, pytorch_model.py), written out
# again here so the tests check the module against the port rather than against itself:
# name, kernel, stride, padding, max-pool
PORT = [("conv1", 64, 2, 32, 8), ("conv2", 32, 2, 16, 8), ("conv3", 16, 2, 8, 0),
        ("conv4", 8, 2, 4, 0), ("conv5", 4, 2, 2, 4), ("conv6", 4, 2, 2, 0), ("conv7", 4, 2, 2, 0)]
CHANNELS = [16, 32, 64, 128, 256, 512, 1024]


def wave(seconds, seed=0):
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32)


def trained_stats(model, seed=0):
    """``model`` after one train-mode pass, so its batch-norm running statistics are not the
    defaults and a file that lost them would show."""
    with torch.no_grad():
        model.train()(SoundNet.normalize(wave(10, seed)))
    return model.eval()


def port_state(model, heads=True):
    """``model``'s weights as the port's converter writes them: Conv2d kernels (out, in, k, 1)
    and ``num_batches_tracked`` as the float 100.0."""
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            value = torch.tensor(100.0)
        elif value.ndim == 3:
            value = value.unsqueeze(-1)
        if heads or not key.startswith("conv8"):
            state[key] = value.clone()
    return state


def port_forward(state, x):
    """conv1..conv7 as the port computes them (Conv2d on (batch, 1, n_samples, 1)), in eval mode."""
    h, outs = x.view(x.shape[0], 1, -1, 1), []
    for name, kernel, stride, pad, pool in PORT:
        h = F.conv2d(h, state[f"{name}.0.weight"], state[f"{name}.0.bias"], (stride, 1), (pad, 0))
        h = F.batch_norm(h, state[f"{name}.1.running_mean"], state[f"{name}.1.running_var"],
                         state[f"{name}.1.weight"], state[f"{name}.1.bias"], False, 0.0, 1e-5)
        h = F.relu(h)
        if pool:
            h = F.max_pool2d(h, (pool, 1), (pool, 1))
        outs.append(h[..., 0].transpose(1, 2))
    return outs


def test_parameter_counts():
    model = build_soundnet()
    per_layer = {name: sum(p.numel() for p in m.parameters())
                 for name, m in model.layer_modules().items()}
    assert per_layer == {"conv1": 1072, "conv2": 16480, "conv3": 32960, "conv4": 65920,
                         "conv5": 131840, "conv6": 525824, "conv7": 2100224}
    assert sum(per_layer.values()) == 2_874_320  # the "about 2.5 to 2.9 M": the trunk
    assert sum(p.numel() for p in model.parameters()) - 2_874_320 == 8_193_000 + 3_285_393
    trunk_only = build_soundnet(heads=False)
    assert sum(p.numel() for p in trunk_only.parameters()) == 2_874_320
    assert model.layer_names() == [f"conv{k}" for k in range(1, 8)]


@pytest.mark.parametrize("seconds", [0.25, 1.0, 1.49, 3.7, 10.0])
def test_frames_per_layer(seconds):
    model = build_soundnet(heads=False).eval()
    x = SoundNet.normalize(wave(seconds))
    with torch.no_grad():
        states = model.hidden_states(x)
    counts = frame_counts(x.shape[1])
    assert [tuple(h.shape) for h in states] == [
        (1, counts[name], c) for name, c in zip(model.layer_names(), CHANNELS)]


def test_conv7_advances_one_frame_per_32768_samples():
    assert frame_counts(10 * SAMPLE_RATE)["conv7"] == 8  # 6.7 strides, plus the paddings' edges
    for n in (5000, 44100, 220500):
        assert [frame_counts(n + k * 32768)["conv7"] - frame_counts(n)["conv7"]
                for k in (1, 2, 3)] == [1, 2, 3]
    assert 32768 / SAMPLE_RATE == pytest.approx(1.486, abs=1e-3)


def test_too_short_a_sound_is_refused_clearly():
    model = build_soundnet().eval()
    with pytest.raises(ValueError, match="conv2 has no frame for a sound of 100 samples; "
                                         "it needs at least 222"):
        model.hidden_states(torch.zeros(1, 100))
    with pytest.raises(ValueError, match="heads need 8 conv7 frames"):
        model(torch.zeros(1, 5 * SAMPLE_RATE))
    with pytest.raises(ValueError, match="batch norm cannot train on one sound of 12765 samples"):
        model.train().hidden_states(torch.zeros(1, 12765))
    model.hidden_states(torch.zeros(1, 12766))
    with pytest.raises(ValueError, match=r"shape \(batch, n_samples\)"):
        model.hidden_states(torch.zeros(SAMPLE_RATE))


def test_heads_outputs():
    model = build_soundnet(seed=2).eval()
    with torch.no_grad():
        objects, places = model(SoundNet.normalize(wave(14)))
        top = build_soundnet(seed=2, heads=False).eval()(SoundNet.normalize(wave(14)))
    n_conv7 = frame_counts(14 * SAMPLE_RATE)["conv7"]
    assert n_conv7 == 11 and top.shape == (1, 11, 1024)
    assert objects.shape == (1, 2, 1000) and places.shape == (1, 2, 401)  # kernel 8, stride 2


def test_normalize_scales_to_the_original_range():
    x = SoundNet.normalize(np.array([0.5, -1.0, 0.0]))
    assert x.dtype == torch.float32 and x.tolist() == [[128.0, -256.0, 0.0]]


def test_build_is_deterministic_and_leaves_the_global_stream():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a, b, c = build_soundnet(seed=5), build_soundnet(seed=5), build_soundnet(seed=6)
    assert torch.equal(torch.rand(3), expected)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key])
    assert not torch.equal(a.conv7[0].weight, c.conv7[0].weight)
    # the original's initialisation: N(0, 0.01) kernels, zero biases, N(1, 0.02) BN scales
    assert a.conv7[0].weight.std().item() == pytest.approx(0.01, rel=0.02)
    assert a.conv6[1].weight.mean().item() == pytest.approx(1.0, abs=0.005)
    assert not a.conv3[0].bias.any()


def test_hidden_states_carry_gradients():
    model = build_soundnet(heads=False).train()
    states = model.hidden_states(SoundNet.normalize(wave(2.0)))
    assert all(h.requires_grad for h in states)
    (states[-1].pow(2).mean() + states[4].mean()).backward()
    for name in ("conv7", "conv5", "conv1"):
        grad = model.layer_modules()[name][0].weight.grad
        assert grad is not None and grad.abs().sum() > 0


def test_save_load_gives_identical_outputs(tmp_path):
    model = trained_stats(build_soundnet(seed=1))
    save_soundnet(model, tmp_path / "net.safetensors")
    loaded = load_soundnet(tmp_path / "net.safetensors")
    assert loaded.heads and not loaded.training
    x = SoundNet.normalize(wave(10, seed=3))
    with torch.no_grad():
        for a, b in zip(model(x) + tuple(model.hidden_states(x)),
                        loaded(x) + tuple(loaded.hidden_states(x))):
            assert torch.equal(a, b)


@pytest.mark.parametrize("writer", ["torch", "safetensors"])
def test_loads_the_ports_key_names_and_computes_as_the_port(tmp_path, writer):
    state = port_state(trained_stats(build_soundnet(seed=4)))
    path = tmp_path / ("sound8.pth" if writer == "torch" else "sound8.safetensors")
    if writer == "torch":
        torch.save(state, path)
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    model = load_soundnet(path)
    assert model.heads and model.conv1[0].weight.shape == (16, 1, 64)
    x = SoundNet.normalize(wave(10, seed=5))
    with torch.no_grad():
        ours, port = model.hidden_states(x), port_forward(state, x)
        objects, places = model(x)
    for a, b in zip(ours, port):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    heads = F.conv2d(port[-1].transpose(1, 2).unsqueeze(-1), state["conv8_2.0.weight"],
                     state["conv8_2.0.bias"], (2, 1))
    torch.testing.assert_close(places, heads[..., 0].transpose(1, 2), rtol=1e-4, atol=1e-4)
    assert objects.shape[-1] == 1000


def test_loads_a_neuromod_encoding_checkpoint(tmp_path):
    reference = trained_stats(build_soundnet(seed=7))
    state = {f"soundnet.{k}": v for k, v in port_state(reference).items()}
    state["encoding_fmri.weight"] = torch.zeros(10, 1024, 1, 1)
    torch.save({"checkpoint": state, "out_size": 10, "output_layer": "conv7", "kernel_size": 1},
               tmp_path / "encoding.pt")
    model = load_soundnet(tmp_path / "encoding.pt")
    x = SoundNet.normalize(wave(2.0))
    with torch.no_grad():
        torch.testing.assert_close(model.hidden_states(x)[-1], reference.hidden_states(x)[-1])


@pytest.mark.parametrize("writer", ["ours", "port"])
def test_a_file_without_heads_loads_a_trunk(tmp_path, writer):
    path = tmp_path / "trunk.pth"
    if writer == "ours":
        save_soundnet(build_soundnet(seed=8, heads=False), path)
    else:
        torch.save(port_state(build_soundnet(seed=8), heads=False), path)
    model = load_soundnet(path)
    assert not model.heads and not hasattr(model, "conv8")
    assert torch.equal(model.conv7[0].weight, build_soundnet(seed=8).conv7[0].weight)


def test_bad_files_fail_with_one_line(tmp_path):
    good = port_state(build_soundnet())
    cases = {
        "missing.pth": (None, "no such file"),
        "garbage.pth": (b"not a weights file at all", "not a safetensors or PyTorch weights file"),
        "list.pth": ([torch.zeros(2)], "holds a list, not a state dict"),
        "w2v.pth": ({"wav2vec2.masked_spec_embed": torch.zeros(4)},
                    r"not a SoundNet state dict \(missing conv1\.0\.bias, conv1\.0\.weight, "
                    r"conv1\.1\.bias and 39 more; unexpected wav2vec2\.masked_spec_embed\)"),
        "shape.pth": ({**good, "conv3.0.weight": torch.zeros(64, 32, 15, 1)},
                      r"conv3\.0\.weight has shape \(64, 32, 15, 1\), but SoundNet expects "
                      r"\(64, 32, 16\)"),
        "half_heads.pth": ({k: v for k, v in good.items() if not k.startswith("conv8_2")},
                           r"missing conv8_2\.0\.bias, conv8_2\.0\.weight\)"),
        "extra.pth": ({**good, "conv9.0.weight": torch.zeros(1)}, r"unexpected conv9\.0\.weight"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            torch.save(content, path)
        with pytest.raises(ModelError, match=message) as err:
            load_soundnet(path)
        assert "\n" not in str(err.value) and repr(str(path)) in str(err.value)
    with pytest.raises(ModelError, match="is a directory"):
        load_soundnet(tmp_path)


def test_is_soundnet_file(tmp_path):
    save_soundnet(build_soundnet(heads=False), tmp_path / "net.safetensors")
    (tmp_path / "notes.txt").write_text("hello")
    assert is_soundnet_file(tmp_path / "net.safetensors")
    assert not is_soundnet_file(tmp_path)  # a wav2vec 2.0 model is a directory
    assert not is_soundnet_file(tmp_path / "notes.txt")
    assert not is_soundnet_file(tmp_path / "missing.pth")


def test_conv7_pools_to_one_brain_frame_per_tr():
    tr = 1.49
    model = build_soundnet(heads=False).eval()
    x = SoundNet.normalize(wave(10))
    with torch.no_grad():
        conv7 = model.hidden_states(x)[-1][0]
    pool = pooling_matrix(conv7.shape[0], x.shape[1], SAMPLE_RATE, 1 / tr)
    assert pool.shape == (math.ceil(10 / tr), 8)  # 7 brain frames from 8 conv7 frames
    pooled = torch.from_numpy(pool) @ conv7
    assert pooled.shape == (7, 1024) and torch.isfinite(pooled).all()
    assert (pool > 0).sum(axis=1).min() >= 1
