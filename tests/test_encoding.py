"""PrequentialEncoder: predict before learn, equal to a batch pipeline on every prefix, warm-up."""
import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from encoders.encoding import PrequentialEncoder
from encoders.lags import lagged
from encoders.ridge import OnlineRidge
from encoders.scores import frame_stats, pearson_from_stats

LAGS = [0, 1, 2]


def _trials(seed, n_trials, n_frames=10, n_features=4, n_voxels=6, noise=0.3, dtype=np.float64):
    """Features and frames of a linear FIR cortex: Y = lagged(X) W + noise."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((n_features * len(LAGS), n_voxels))
    out = []
    for _ in range(n_trials):
        X = rng.standard_normal((n_frames, n_features))
        Y = lagged(X, LAGS) @ W + noise * rng.standard_normal((n_frames, n_voxels))
        out.append((X.astype(dtype), Y.astype(dtype)))
    return out


def _spy_predictions(enc):
    """Record, per layer, the prediction each trial was scored with (what ``update`` received)."""
    seen = {name: [] for name in enc.layers}
    for name, score in enc.scores.items():
        original = score.update

        def update(trial, sound, P, O, _name=name, _original=original):
            seen[_name].append(np.array(P))
            return _original(trial, sound, P, O)

        score.update = update
    return seen


def test_prediction_of_a_trial_does_not_depend_on_that_trial():
    trials = _trials(0, 6)
    predictions = []
    for variant in range(2):
        enc = PrequentialEncoder(["a"], n_voxels=6, n_units=6, lags=LAGS, alphas=[1.0])
        seen = _spy_predictions(enc)
        for t, (X, Y) in enumerate(trials):
            if t == 5 and variant == 1:
                Y = Y + 100.0 * np.random.default_rng(1).standard_normal(Y.shape)  # other frames
            enc.step(t, t, {"a": X}, Y)
        predictions.append(seen["a"][5])
    np.testing.assert_array_equal(predictions[0], predictions[1])


def test_random_targets_score_near_zero_although_learning_first_would_fit_them():
    # 24 lagged features, 2 trials of 8 frames: a ridge that had learned the trial (16 samples,
    # 24 features, tiny alpha) interpolates it (r ~ 1); predicting it beforehand cannot do better
    # than chance on targets independent of everything before.
    rng = np.random.default_rng(2)
    n_frames, n_voxels = 8, 200
    X0, X1 = (rng.standard_normal((n_frames, 8)) for _ in range(2))
    Y0, Y1 = (rng.standard_normal((n_frames, n_voxels)) for _ in range(2))
    enc = PrequentialEncoder(["a"], n_voxels=n_voxels, n_units=2, lags=LAGS, alphas=[1e-6])
    enc.step(0, 0, {"a": X0}, Y0)
    trial_r = enc.step(1, 1, {"a": X1}, Y1)["a"]

    cheat = OnlineRidge(alphas=[1e-6], standardize=True, dtype="float64")
    cheat.partial_fit(lagged(X0, LAGS), Y0).partial_fit(lagged(X1, LAGS), Y1)
    cheat_r = pearson_from_stats(frame_stats(cheat.predict(lagged(X1, LAGS)), Y1)).mean()
    assert cheat_r > 0.99
    assert abs(trial_r) < 0.2


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-7), (np.float32, 2e-3)])
def test_equals_batch_standardscaler_ridge_on_every_prefix(dtype, rtol):
    alpha = 3.0
    trials = _trials(3, 8, dtype=dtype)
    enc = PrequentialEncoder(["a", "b"], n_voxels=6, n_units=8, lags=LAGS, alphas=[alpha],
                             dtype=np.dtype(dtype).name)
    seen = _spy_predictions(enc)
    for t, (X, Y) in enumerate(trials):
        # Layer b sees other features (a scaled, shifted copy) of the same trial.
        enc.step(t, t, {"a": X, "b": 5.0 * X[:, ::-1] + 2.0}, Y)
    for name, transform in (("a", lambda X: X), ("b", lambda X: 5.0 * X[:, ::-1] + 2.0)):
        np.testing.assert_array_equal(seen[name][0], np.zeros_like(trials[0][1]))
        for k in range(1, len(trials)):
            X_past = np.vstack([lagged(transform(X), LAGS) for X, _ in trials[:k]]).astype(np.float64)
            Y_past = np.vstack([Y for _, Y in trials[:k]]).astype(np.float64)
            batch = make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(X_past, Y_past)
            expected = batch.predict(lagged(transform(trials[k][0]), LAGS).astype(np.float64))
            assert seen[name][k].dtype == dtype
            np.testing.assert_allclose(seen[name][k], expected, rtol=rtol,
                                       atol=rtol * np.abs(expected).max(), err_msg=f"{name} {k}")


def test_warmup_trials_are_learned_from_but_not_scored():
    trials = _trials(4, 9)
    warmup = 3
    enc = PrequentialEncoder(["a"], n_voxels=6, n_units=9, lags=LAGS, alphas=[1.0], warmup=warmup)
    seen = _spy_predictions(enc)
    for t, (X, Y) in enumerate(trials):
        enc.step(t, t, {"a": X}, Y)
    stats = enc.unit_stats()
    assert stats.shape == (1, 9, 6, 6)
    assert not stats[0, :warmup].any()
    assert (stats[0, warmup:, 0] == 10).all()  # n frames of each scored sound
    assert enc.scores["a"].n_scored_trials == len(trials) - warmup
    assert enc.models["a"].n_samples_seen_ == 10 * len(trials)  # learned from every trial
    P = np.vstack(seen["a"][warmup:])
    O = np.vstack([Y for _, Y in trials[warmup:]])
    np.testing.assert_allclose(enc.r()["a"], pearson_from_stats(frame_stats(P, O)), rtol=1e-10)
    assert enc.r()["a"].mean() > 0.8  # learned during the warm-up: the first scored trial is good
    np.testing.assert_allclose(seen["a"][warmup], trials[warmup][1], atol=3.0)


def test_repeated_sound_pools_into_one_row():
    trials = _trials(5, 4)
    enc = PrequentialEncoder(["a"], n_voxels=6, n_units=2, lags=LAGS, alphas=[1.0])
    for t, (X, Y) in enumerate(trials):
        enc.step(t, t % 2, {"a": X}, Y)
    assert enc.unit_stats()[0, :, 0, 0].tolist() == [20.0, 20.0]


def test_trial_r_is_the_voxel_mean_r_of_the_trial():
    trials = _trials(6, 5)
    enc = PrequentialEncoder(["a"], n_voxels=6, n_units=5, lags=LAGS, alphas=[1.0])
    seen = _spy_predictions(enc)
    for t, (X, Y) in enumerate(trials):
        trial_r = enc.step(t, t, {"a": X}, Y)["a"]
    assert trial_r == pytest.approx(pearson_from_stats(frame_stats(seen["a"][-1], Y)).mean())
    assert trial_r > 0.8


def test_frames_and_features_of_different_lengths_are_refused():
    enc = PrequentialEncoder(["a"], n_voxels=6, n_units=2, lags=LAGS)
    X = np.zeros((8, 4))
    with pytest.raises(ValueError, match=r"features of layer 'a' have 8 frames but the trial has 7 "
                                         r"brain frames"):
        enc.step(0, 0, {"a": X}, np.zeros((7, 6)))


def test_missing_layer_is_refused():
    enc = PrequentialEncoder(["a", "b"], n_voxels=6, n_units=2, lags=LAGS)
    with pytest.raises(ValueError, match=r"trial 0 lacks features for layer\(s\) \['b'\]"):
        enc.step(0, 0, {"a": np.zeros((8, 4))}, np.zeros((8, 6)))


@pytest.mark.parametrize("features, frames, match", [
    ({"a": np.ones((10, 4)), "b": np.ones((9, 4))}, np.ones((10, 6)), "layer 'b' have 9 frames"),
    ({"a": np.ones((10, 4)), "b": np.ones((10, 5))}, np.ones((10, 6)), "layer 'b' has 5 features"),
    ({"a": np.ones((10, 4)), "b": np.ones((10, 4))}, np.ones((10, 7)), r"6 voxels\), but got shape \(10, 7\)"),
    ({"a": np.ones((10, 4)), "b": np.ones((10, 4))}, np.ones(10), "2-D"),
    ({"a": np.ones((10, 4)), "b": np.ones((10, 4))}, np.array(1.0), "2-D"),
    ({"a": np.ones((10, 4)), "b": np.full((10, 4), np.nan)}, np.ones((10, 6)), "finite"),
])
def test_a_refused_trial_changes_nothing(features, frames, match):
    # A trial refused for any layer must leave every layer as it was: a service that answers
    # 'error' and carries on would otherwise keep a half-learned trial.
    trials = _trials(7, 3)
    enc = PrequentialEncoder(["a", "b"], n_voxels=6, n_units=4, lags=LAGS)
    for t, (X, Y) in enumerate(trials[:2]):
        enc.step(t, t, {"a": X, "b": X}, Y)
    before = enc.unit_stats().copy(), {n: m.state_dict() for n, m in enc.models.items()}
    with pytest.raises(ValueError, match=match):
        enc.step(2, 2, features, frames)
    np.testing.assert_array_equal(enc.unit_stats(), before[0])
    for name, model in enc.models.items():
        assert model.n_samples_seen_ == before[1][name]["n_samples_seen_"]
        np.testing.assert_array_equal(model.xx_.numpy(), before[1][name]["xx_"])
    X, Y = trials[2]
    assert enc.step(2, 2, {"a": X, "b": X}, Y)["a"] > 0.5  # and it still works


def test_each_voxel_keeps_the_penalty_that_predicts_it_best():
    # Voxels 0-2 follow the features, 3-5 are noise: the first want a light penalty, the others
    # the heaviest of the grid.
    rng = np.random.default_rng(8)
    W = rng.standard_normal((4 * len(LAGS), 6)) * [1, 1, 1, 0, 0, 0]
    enc = PrequentialEncoder(["a"], n_voxels=6, n_units=30, lags=LAGS, alphas=[0.1, 1e5])
    for t in range(30):
        X = rng.standard_normal((10, 4))
        enc.step(t, t, {"a": X}, lagged(X, LAGS) @ W + 0.3 * rng.standard_normal((10, 6)))
    assert enc.alpha()["a"].tolist() == [0.1] * 3 + [1e5] * 3
    assert np.isnan(PrequentialEncoder(["a"], 6, 1).alpha()["a"]).all()  # nothing seen yet


def test_drift_is_reported_where_and_when_the_mapping_changes():
    rng = np.random.default_rng(9)
    n_voxels, change = 12, 80
    W = rng.standard_normal((4 * len(LAGS), n_voxels))
    enc = PrequentialEncoder(["a"], n_voxels=n_voxels, n_units=140, lags=LAGS, alphas=[1.0],
                             warmup=20, drift_threshold=3.0)
    for t in range(140):
        if t == change:  # the first half of the voxels remap to other features
            W[:, : n_voxels // 2] = rng.standard_normal((W.shape[0], n_voxels // 2))
        X = rng.standard_normal((10, 4))
        enc.step(t, t, {"a": X}, lagged(X, LAGS) @ W + 0.3 * rng.standard_normal((10, n_voxels)))
    events = enc.drift_events()
    assert events.shape[1] == 3 and (events[:, 0] == 0).all()
    first = {v: events[events[:, 2] == v, 1].min() for v in set(events[:, 2].tolist())}
    assert set(first) == set(range(n_voxels // 2))  # where: the remapped voxels only
    assert all(change <= t < change + 10 for t in first.values())  # when: right after


def test_an_encoder_of_unknown_length_matches_one_sized_in_advance_and_resumes():
    rng = np.random.default_rng(11)
    trials = [(rng.standard_normal((6, 3)).astype(np.float32),
               rng.standard_normal((6, 6)).astype(np.float32)) for _ in range(8)]
    sized = PrequentialEncoder(["a"], n_voxels=6, n_units=8, lags=LAGS, alphas=[1.0], warmup=1)
    live = PrequentialEncoder(["a"], n_voxels=6, n_units=0, lags=LAGS, alphas=[1.0], warmup=1)
    for t, (X, Y) in enumerate(trials[:5]):
        assert sized.step(t, t, {"a": X}, Y) == live.step(t, t, {"a": X}, Y)
    resumed = PrequentialEncoder(["a"], n_voxels=6, n_units=0, lags=LAGS, alphas=[1.0], warmup=1)
    resumed.load_state_dict(live.state_dict())
    for t, (X, Y) in enumerate(trials[5:], start=5):
        assert sized.step(t, t, {"a": X}, Y) == resumed.step(t, t, {"a": X}, Y)
    np.testing.assert_array_equal(resumed.unit_stats(), sized.unit_stats())


# -- random projection (components) ---------------------------------------------------------


def _wide_trials(seed, n_trials, n_features=12, n_frames=10, n_voxels=6):
    """Features wider than the projection of the tests below, frames of a linear FIR cortex."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((n_features * len(LAGS), n_voxels))
    out = []
    for _ in range(n_trials):
        X = rng.standard_normal((n_frames, n_features)).astype(np.float32)
        Y = lagged(X, LAGS) @ W + 0.3 * rng.standard_normal((n_frames, n_voxels))
        out.append((X, Y.astype(np.float32)))
    return out


def _run(enc, trials, features=lambda t, X: {"a": X, "b": X[:, :3]}):
    return [enc.step(t, t, features(t, X), Y) for t, (X, Y) in enumerate(trials)]


def test_components_0_changes_nothing():
    trials = _wide_trials(20, 6)
    plain = PrequentialEncoder(["a", "b"], n_voxels=6, n_units=6, lags=LAGS, alphas=[1.0, 10.0])
    zero = PrequentialEncoder(["a", "b"], n_voxels=6, n_units=6, lags=LAGS, alphas=[1.0, 10.0],
                              components=0)
    assert _run(plain, trials) == _run(zero, trials)
    state = zero.state_dict()
    assert "components" not in state and "n_features" not in state["layer-0"]
    assert zero.models["a"].n_features_in_ == 12


def test_projected_encoder_equals_a_plain_one_fed_the_documented_projection():
    # The projection is exactly what the docstring says: scikit-learn's GaussianRandomProjection
    # seeded with the layer's index, applied in float64; layer b (3 features <= 5) is left as it is.
    from sklearn.random_projection import GaussianRandomProjection

    trials = _wide_trials(21, 8)
    projected = PrequentialEncoder(["a", "b"], n_voxels=6, n_units=8, lags=LAGS,
                                   alphas=[1.0, 10.0], warmup=1, components=5)
    R = GaussianRandomProjection(n_components=5, random_state=0).fit(np.zeros((1, 12))).components_
    by_hand = PrequentialEncoder(["a", "b"], n_voxels=6, n_units=8, lags=LAGS,
                                 alphas=[1.0, 10.0], warmup=1)
    got = _run(projected, trials)
    expected = _run(by_hand, trials,
                    lambda t, X: {"a": X.astype(np.float64) @ R.T, "b": X[:, :3]})
    assert got == expected
    for name in ("a", "b"):
        np.testing.assert_array_equal(projected.r()[name], by_hand.r()[name])
    assert projected.models["a"].n_features_in_ == 5 and projected.models["b"].n_features_in_ == 3


def test_projection_is_the_same_in_two_encoders_and_checks_the_feature_count():
    trials = _wide_trials(22, 5)
    encoders = [PrequentialEncoder(["a", "b"], n_voxels=6, n_units=5, lags=LAGS, components=4)
                for _ in range(2)]
    assert _run(encoders[0], trials) == _run(encoders[1], trials)
    np.testing.assert_array_equal(encoders[0]._projections["a"], encoders[1]._projections["a"])
    X, Y = trials[0]
    with pytest.raises(ValueError, match="layer 'a' has 11 features, but its encoder expects 12"):
        encoders[0].step(5, 0, {"a": X[:, :11], "b": X[:, :3]}, Y)


def test_a_projected_encoder_resumes_exactly_and_refuses_other_components():
    trials = _wide_trials(23, 8)
    whole = PrequentialEncoder(["a", "b"], n_voxels=6, n_units=8, lags=LAGS, components=4)
    first = PrequentialEncoder(["a", "b"], n_voxels=6, n_units=8, lags=LAGS, components=4)
    expected = _run(whole, trials)
    assert _run(first, trials[:5]) == expected[:5]
    state = first.state_dict()
    assert state["components"] == 4 and state["layer-0"]["n_features"] == 12
    resumed = PrequentialEncoder(["a", "b"], n_voxels=6, n_units=8, lags=LAGS, components=4)
    resumed.load_state_dict(state)
    got = [resumed.step(t, t, {"a": X, "b": X[:, :3]}, Y)
           for t, (X, Y) in enumerate(trials[5:], start=5)]
    assert got == expected[5:]
    np.testing.assert_array_equal(resumed.unit_stats(), whole.unit_stats())
    for other, made in ((0, 4), (8, 4)):
        with pytest.raises(ValueError, match=rf"^Invalid value for the 'state' parameter\. Allowed "
                                             rf"values are states of an encoder with "
                                             rf"components={other}, but got one made with "
                                             rf"components={made} instead\.$"):
            PrequentialEncoder(["a", "b"], 6, 8, lags=LAGS, components=other).load_state_dict(state)
    plain = PrequentialEncoder(["a", "b"], n_voxels=6, n_units=8, lags=LAGS)
    _run(plain, trials[:2])
    with pytest.raises(ValueError, match="components=4, but got one made with components=0"):
        resumed.load_state_dict(plain.state_dict())
    assert resumed.trials_seen == 8  # refused: nothing changed
    del state["layer-1"]["n_features"]
    with pytest.raises(ValueError, match="lacking 'n_features'"):
        PrequentialEncoder(["a", "b"], 6, 8, lags=LAGS, components=4).load_state_dict(state)


@pytest.mark.parametrize("components", [-1, 2.0, True, "4", None])
def test_components_must_be_an_integer_at_least_0(components):
    with pytest.raises(ValueError, match=r"'components' parameter\. Allowed values are integers "
                                         r">= 0 \(0: no projection\)"):
        PrequentialEncoder(["a"], n_voxels=2, n_units=1, components=components)


def test_projection_scores_close_to_the_full_model_when_the_truth_is_low_dimensional():
    # 200 features that are a 5-dimensional latent mixed at random (plus a little isotropic
    # noise), voxels a FIR read-out of the latent (noise ceiling sqrt(1 / 1.09) = 0.96).
    # Projected to 40 dimensions the latent stays linearly readable (its 5 x 40 image has full
    # rank): what differs is only the noise the projection keeps and how the penalty shrinks,
    # so the prequential score must stay within 0.01 of the full model's (the gap measured is
    # 3e-4 at 0.94; the tolerance leaves room for other BLAS). Projecting to 4 dimensions, one
    # fewer than the latent's, loses a direction and scores about 0.1 lower: the check can fail.
    rng = np.random.default_rng(24)
    k, n_features, n_voxels = 5, 200, 40
    mix = rng.standard_normal((k, n_features))
    W = rng.standard_normal((k * len(LAGS), n_voxels)) / np.sqrt(k * len(LAGS))
    trials = []
    for _ in range(40):
        Z = rng.standard_normal((12, k))
        X = (Z @ mix + 0.1 * rng.standard_normal((12, n_features))).astype(np.float32)
        Y = (lagged(Z, LAGS) @ W + 0.3 * rng.standard_normal((12, n_voxels))).astype(np.float32)
        trials.append((X, Y))
    score = {}
    for components in (0, 40, 4):
        enc = PrequentialEncoder(["a"], n_voxels=n_voxels, n_units=40, lags=LAGS,
                                 alphas=[1.0, 10.0, 100.0, 1000.0], warmup=10,
                                 components=components)
        _run(enc, trials, lambda t, X: {"a": X})
        score[components] = float(enc.r()["a"].mean())
    assert score[0] > 0.9, score
    assert abs(score[40] - score[0]) < 0.01, score
    assert score[4] < score[0] - 0.05, score


def _glover_trials(seed, n_trials, rate=1 / 1.49):
    """Frames of a canonical-HRF cortex: each trial's features convolved, then read out."""
    from encoders.hrf import convolved, glover_kernel

    rng = np.random.default_rng(seed)
    W = rng.standard_normal((4, 6))
    out = []
    for _ in range(n_trials):
        X = rng.standard_normal((14, 4))
        Y = convolved(X, glover_kernel(rate)) @ W + 0.3 * rng.standard_normal((14, 6))
        out.append((X, Y))
    return out


def test_a_glover_encoder_fits_a_glover_cortex_and_resumes_only_into_its_design():
    rate = 1 / 1.49
    trials = _glover_trials(31, 10)

    def encoder(**design):
        return PrequentialEncoder(["a"], n_voxels=6, n_units=10, lags=[0], alphas=[1.0, 100.0],
                                  warmup=2, **design)

    whole = encoder(hrf="glover", frame_rate_hz=rate)
    first = encoder(hrf="glover", frame_rate_hz=rate)
    expected = [whole.step(t, t, {"a": X}, Y) for t, (X, Y) in enumerate(trials)]
    fir = encoder()
    for t, (X, Y) in enumerate(trials):
        fir.step(t, t, {"a": X}, Y)
    # The right design explains the cortex; lag 0 alone without it cannot.
    assert whole.r()["a"].mean() > 0.9 > fir.r()["a"].mean() + 0.3
    for t, (X, Y) in enumerate(trials[:5]):
        first.step(t, t, {"a": X}, Y)
    state = first.state_dict()
    assert state["layer-0"]["ridge"]["hrf"] == "glover"
    resumed = encoder(hrf="glover", frame_rate_hz=rate).load_state_dict(state)
    got = [resumed.step(t, t, {"a": X}, Y) for t, (X, Y) in enumerate(trials[5:], start=5)]
    assert got == expected[5:]
    np.testing.assert_array_equal(resumed.unit_stats(), whole.unit_stats())
    for other, words in (({}, r"hrf='fir', frame_rate_hz=None, but got one made with "
                              r"hrf='glover', frame_rate_hz=0\.67"),
                         ({"hrf": "glover", "frame_rate_hz": 1.0},
                          r"hrf='glover', frame_rate_hz=1\.0, but got")):
        refusing = encoder(**other)
        with pytest.raises(ValueError, match=r"^Invalid value for the 'state' parameter\. Allowed "
                                             r"values are states of an encoder with " + words):
            refusing.load_state_dict(state)
        assert refusing.trials_seen == 0  # refused: nothing changed
    with pytest.raises(ValueError, match="hrf='glover'.*but got one made with hrf='fir'"):
        encoder(hrf="glover", frame_rate_hz=rate).load_state_dict(fir.state_dict())


def test_a_glover_encoder_needs_the_frame_rate_when_made():
    with pytest.raises(ValueError, match=r"'frame_rate_hz' parameter.*when hrf is 'glover'"):
        PrequentialEncoder(["a"], n_voxels=2, n_units=1, hrf="glover")
