"""Weight-to-brain alignment: per-trial weight change against the gain over the frozen run."""
import numpy as np
import pytest

from simulator.alignment import (correlation_test, layer_similarity, linear_cka, similarity_to,
                                 trial_gain, weight_gain_alignment)

N, WARMUP = 60, 5
LAYERS = ["cnn", "layer_1"]


def _run(order, trial_r, delta_w=None, mode="continuous"):
    return {"layers": LAYERS, "delta_w_layers": LAYERS, "n_events": N, "mode": mode,
            "config": {"encoder": {"warmup": WARMUP}, "data": {"session": "0", "tail_s": 6.0}},
            "trials": {"event": np.asarray(order), "trial_r": trial_r,
                       "delta_w": np.zeros((N, 2)) if delta_w is None else delta_w}}


def test_gain_matches_trials_by_event_not_by_position():
    rng = np.random.default_rng(0)
    frozen_by_event = rng.random((N, 2))
    order = rng.permutation(N)  # the learning run replayed another order
    frozen = _run(np.arange(N), frozen_by_event, mode="frozen")
    run = _run(order, frozen_by_event[order] + 0.25)
    positions, gain = trial_gain(run, frozen, "layer_1", WARMUP)
    assert positions.tolist() == list(range(WARMUP, N))
    unscored = np.isin(order[WARMUP:], np.arange(WARMUP))  # the frozen run's warm-up events
    assert np.isnan(gain[unscored]).all() and unscored.any()
    np.testing.assert_allclose(gain[~unscored], 0.25)


def test_planted_alignment_is_found_and_its_absence_is_not():
    rng = np.random.default_rng(1)
    frozen = _run(np.arange(N), rng.random((N, 2)), mode="frozen")
    dw = rng.random(N)
    gain = 0.5 * dw + 0.05 * rng.standard_normal(N)
    trial_r = frozen["trials"]["trial_r"] + gain[:, None]
    run = _run(np.arange(N), trial_r, np.stack([dw, rng.random(N)], axis=1))
    result = weight_gain_alignment(run, frozen, "layer_1", n_perm=500)
    assert result["cnn"]["r"] > 0.9 and result["cnn"]["p"] < 0.01
    assert abs(result["layer_1"]["r"]) < 0.4 and result["layer_1"]["p"] > 0.01
    assert result["cnn"]["n_trials"] == N - WARMUP


def test_correlation_test_edge_cases():
    assert correlation_test(np.ones(10), np.arange(10.0)) == (0.0, 1.0)
    assert all(np.isnan(correlation_test(np.ones(2), np.ones(2))))
    r, p = correlation_test(np.arange(10.0), np.arange(10.0), n_perm=99)
    assert r == pytest.approx(1.0) and p == pytest.approx(0.01)


def test_drift_alignment_follows_a_planted_drift():
    from simulator.alignment import drift_alignment, pattern_drift

    rng = np.random.default_rng(2)
    n_sounds, d = 40, 16
    amount = rng.uniform(0.0, 1.0, n_sounds)  # how much each sound's pattern changes
    first = rng.standard_normal((n_sounds, d))
    second = first + amount[:, None] * 2 * rng.standard_normal((n_sounds, d))
    order = rng.permutation(2 * n_sounds)
    stimulus = np.tile(np.arange(n_sounds), 2)[order]
    repeat = np.repeat([0, 1], n_sounds)[order]
    pooled = np.where(repeat[:, None] == 0, first[stimulus], second[stimulus])
    run = {"layers": ["layer_1"], "trials": {"stimulus": stimulus, "repeat": repeat,
                                             "event": np.arange(2 * n_sounds),
                                             "pooled/layer_1": pooled}}
    brain = pattern_drift(np.stack([first, second], axis=1)) + 0.05 * rng.standard_normal(n_sounds)
    result = drift_alignment(run, brain, n_perm=200)["layer_1"]
    assert result["r"] > 0.8 and result["p"] < 0.01 and result["n_sounds"] == n_sounds
    unrelated = drift_alignment(run, rng.permutation(brain), n_perm=200)["layer_1"]
    assert abs(unrelated["r"]) < 0.5


def test_linear_cka_sees_through_the_encoders_standardisation_but_not_through_new_information():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((80, 6))
    # Rescaled, shifted and permuted features: the same space for a standardising linear encoder.
    assert linear_cka(X, 5 * X[:, [2, 0, 1, 5, 4, 3]] - 2) == pytest.approx(1.0)
    Y = rng.standard_normal((80, 4))
    assert linear_cka(X, Y) == pytest.approx(linear_cka(Y, X))
    assert linear_cka(X, Y) < 0.2
    mixed = np.hstack([X[:, :3], Y[:, :3]])  # half shared
    assert linear_cka(X, Y) < linear_cka(X, mixed) < 1.0


def test_layer_similarity_compares_each_layer_with_the_next():
    rng = np.random.default_rng(4)
    base = rng.standard_normal((40, 8))
    run = {"layers": ["cnn", "layer_1", "layer_2"],
           "trials": {"pooled/cnn": rng.standard_normal((40, 8)), "pooled/layer_1": base,
                      "pooled/layer_2": 2 * base}}
    similarity = layer_similarity(run)
    assert list(similarity) == ["cnn~layer_1", "layer_1~layer_2"]
    assert similarity["layer_1~layer_2"] == pytest.approx(1.0)
    assert similarity["cnn~layer_1"] < 0.3


def test_similarity_to_a_layer_names_the_layers_in_its_linear_space():
    rng = np.random.default_rng(5)
    base = rng.standard_normal((40, 8))
    run = {"layers": ["cnn", "layer_1", "layer_2"],
           "trials": {"pooled/cnn": rng.standard_normal((40, 8)), "pooled/layer_1": base,
                      "pooled/layer_2": base @ rng.standard_normal((8, 8)) - 3}}
    similarity = similarity_to(run, "layer_2")
    assert list(similarity) == run["layers"]
    assert similarity["layer_2"] == pytest.approx(1.0)
    assert similarity["layer_1"] > 0.5 > similarity["cnn"]  # a mixed copy, then an unrelated space
