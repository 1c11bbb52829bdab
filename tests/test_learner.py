"""Tests of the learner: frozen and continuous modes, retention, carried-over optimizer, determinism."""
import copy

import numpy as np
import pytest
import torch

from simulator.learner import Learner, TrialRecord
from simulator.model import layer_names, layer_modules
from simulator.pretrain import load_checkpoint

SR = 16000


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
    """(model, optimizer state) of the tiny checkpoint; tests deep-copy them before use."""
    model, state, _ = load_checkpoint(tiny_checkpoint)
    return model, state


def fresh(checkpoint, with_state=False, **kwargs):
    model, state = checkpoint
    state = copy.deepcopy(state) if with_state else None
    return Learner(copy.deepcopy(model), optimizer_state=state, **kwargs)


def sound(seed, seconds=0.5):
    return np.random.default_rng(seed).standard_normal(int(seconds * SR)).astype(np.float32)


def params(learner):
    return [p.detach().clone() for p in learner.model.parameters()]


def test_frozen_never_changes_weights(checkpoint):
    learner = fresh(checkpoint, mode="frozen", lr=1e-2)
    before = params(learner)
    for seed in range(2):
        record = learner.learn(sound(seed))
        assert isinstance(record, TrialRecord)
        assert record.delta_w == {name: 0.0 for name in layer_names(learner.model)}
        assert np.isnan(record.loss)
    assert all(torch.equal(p, q) for p, q in zip(params(learner), before))


def test_continuous_changes_every_layer(checkpoint):
    learner = fresh(checkpoint, mode="continuous", lr=1e-3)
    modules = layer_modules(learner.model)
    before = {name: [p.detach().clone() for p in m.parameters()] for name, m in modules.items()}
    record = learner.learn(sound(0))
    assert np.isfinite([record.loss, record.grad_norm, record.perplexity]).all()
    assert list(record.delta_w) == layer_names(learner.model)
    for name, m in modules.items():
        with torch.no_grad():
            expected = torch.sqrt(sum(((p - q) ** 2).sum() for p, q in zip(m.parameters(), before[name])))
        assert record.delta_w[name] > 0, name
        assert record.delta_w[name] == pytest.approx(float(expected), rel=1e-5), name


def test_steps_per_sound_means(checkpoint):
    one = fresh(checkpoint, mode="continuous", lr=1e-3, seed=3)
    two = fresh(checkpoint, mode="continuous", lr=1e-3, seed=3, steps_per_sound=2)
    record_one, record_two = one.learn(sound(0)), two.learn(sound(0))
    # The first of two's steps is one's only step; its mean includes a second, different step.
    assert record_two.loss != record_one.loss
    assert record_two.delta_w["layer_2"] > record_one.delta_w["layer_2"]


def test_retention_zero_returns_to_theta0(checkpoint):
    learner = fresh(checkpoint, mode="continuous", lr=1e-2, retention=0.0)
    theta0 = params(learner)
    for seed in range(2):
        record = learner.learn(sound(seed))
        assert np.isfinite(record.loss)
        assert all(torch.equal(p, q) for p, q in zip(params(learner), theta0))
        assert all(v == 0.0 for v in record.delta_w.values())


@pytest.mark.parametrize("rho", [0.5, 0.25])  # 0.25 also tells rho from 1 - rho
def test_retention_shrinks_displacement_toward_theta0(checkpoint, rho):
    full = fresh(checkpoint, mode="continuous", lr=1e-3, retention=1.0, seed=5)
    half = fresh(checkpoint, mode="continuous", lr=1e-3, retention=rho, seed=5)
    theta0 = params(full)
    record_full, record_half = full.learn(sound(0)), half.learn(sound(0))
    moved = 0.0
    for p0, p1, ph in zip(theta0, params(full), params(half)):
        # theta <- theta0 + rho (theta - theta0), with theta from the identical twin step.
        torch.testing.assert_close(ph, p0 + rho * (p1 - p0), rtol=0, atol=1e-7)
        moved = max(moved, float((p1 - p0).abs().max()))
    assert moved > 1e-5  # the step moved the weights far more than the tolerance
    for name in record_full.delta_w:
        assert record_half.delta_w[name] == pytest.approx(rho * record_full.delta_w[name], rel=1e-3)


def test_optimizer_state_carried_over(checkpoint):
    _, state = checkpoint
    steps = {float(s["step"]) for s in state["state"].values()}
    assert steps == {4.0}  # the fixture's pretraining took 4 steps
    learner = fresh(checkpoint, with_state=True, mode="continuous", lr=7e-4, weight_decay=0.01)
    for group in learner.optimizer.param_groups:  # the scenario's rate, not the checkpoint's
        assert group["lr"] == 7e-4 and group["weight_decay"] == 0.01
    loaded = learner.optimizer.state_dict()["state"]
    for k, s in state["state"].items():
        assert torch.equal(loaded[k]["exp_avg_sq"], s["exp_avg_sq"])
    learner.learn(sound(0))
    assert {float(s["step"]) for s in learner.optimizer.state.values()} == {5.0}
    cold = fresh(checkpoint, mode="continuous", lr=7e-4)
    cold.learn(sound(0))
    assert {float(s["step"]) for s in cold.optimizer.state.values()} == {1.0}


def test_carried_state_changes_the_update(checkpoint):
    warm = fresh(checkpoint, with_state=True, mode="continuous", lr=1e-3, seed=2)
    cold = fresh(checkpoint, mode="continuous", lr=1e-3, seed=2)
    rw, rc = warm.learn(sound(1)), cold.learn(sound(1))
    assert rw.loss == rc.loss  # same weights and streams: same loss before the update
    assert rw.delta_w["layer_1"] != pytest.approx(rc.delta_w["layer_1"], rel=1e-3)


def test_same_seed_same_features(checkpoint):
    def run(seed):
        learner = fresh(checkpoint, with_state=True, mode="continuous", lr=1e-3, seed=seed)
        for s in range(2):
            learner.learn(sound(s))
        return learner.features(sound(7), SR, 1.0)

    a, b, c = run(0), run(0), run(1)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert not np.array_equal(a["layer_4"], c["layer_4"])


def test_bad_mode_message(checkpoint):
    with pytest.raises(ValueError, match=r"^Invalid value for the 'mode' parameter\. Allowed values are "
                                         r"'frozen', 'continuous' and 'reset', but got 'online' instead\.$"):
        Learner(checkpoint[0], mode="online")


@pytest.mark.parametrize("retention", [-0.1, 1.5])
def test_bad_retention(checkpoint, retention):
    with pytest.raises(ValueError, match=rf"retention must lie in \[0, 1\], got {retention}"):
        Learner(checkpoint[0], retention=retention)


def test_reset_adapts_to_each_sound_then_forgets(checkpoint):
    """reset: the features come from the network adapted to *this* sound, and nothing carries over."""
    model, state = checkpoint[0], checkpoint[1]
    waves = [np.random.default_rng(s).standard_normal(16000).astype(np.float32) for s in (1, 2)]
    reset = Learner(copy.deepcopy(model), "reset", lr=3e-3, steps_per_sound=2, seed=3,
                    optimizer_state=state)
    frozen = Learner(copy.deepcopy(model), "frozen")
    twin = Learner(copy.deepcopy(model), "continuous", lr=3e-3, steps_per_sound=2, seed=3,
                   optimizer_state=state)
    steps0 = [s["step"].item() for s in reset.optimizer.state_dict()["state"].values()]
    features, record = reset.observe(waves[0], 16000, 1.0)
    twin.learn(waves[0])  # the same update, kept
    expected = twin.features(waves[0], 16000, 1.0)
    for name in features:
        np.testing.assert_allclose(features[name], expected[name], rtol=1e-5, atol=1e-6)
    assert record.delta_w["layer_1"] > 0
    for p, q in zip(reset.model.parameters(), frozen.model.parameters()):
        assert torch.equal(p, q)  # back to the start
    assert [s["step"].item() for s in reset.optimizer.state_dict()["state"].values()] == steps0
    second, _ = reset.observe(waves[1], 16000, 1.0)
    assert not np.allclose(second["layer_1"], frozen.features(waves[1], 16000, 1.0)["layer_1"])


def test_reset_restores_the_whole_optimizer_state_with_or_without_a_checkpoint(checkpoint):
    wave = np.random.default_rng(5).standard_normal(16000).astype(np.float32)
    for state in (checkpoint[1], None):
        learner = Learner(copy.deepcopy(checkpoint[0]), "reset", lr=3e-3, seed=0, optimizer_state=state)
        before = copy.deepcopy(learner.optimizer.state_dict())
        for _ in range(2):
            learner.observe(wave, 16000, 1.0)
        after = learner.optimizer.state_dict()
        assert after["state"].keys() == before["state"].keys()
        for i, entry in before["state"].items():
            for k, v in entry.items():
                assert torch.equal(after["state"][i][k], v)
