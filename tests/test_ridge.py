"""OnlineRidge: online equals batch (scikit-learn, himalaya) on every prefix, at every penalty of
the grid; the per-voxel penalty follows the prequential evidence; forgetting equals sample weights;
torch in, torch out; checkpoints; the scikit-learn contract."""
import numpy as np
import pytest
import torch
from himalaya.ridge import Ridge as HimalayaRidge
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from encoders.hrf import convolved, glover_kernel
from encoders.lags import lagged
from encoders.ridge import OnlineRidge

ALPHAS = (0.3, 7.0, 500.0)
TOLERANCE = {"float64": 1e-6, "float32": 1e-3}


def _random(rng, n=60, p=5, t=3):
    X = rng.standard_normal((n, p))
    Y = X @ rng.standard_normal((p, t)) + 0.5 * rng.standard_normal((n, t)) + 2.0
    return X, Y


def _structured(rng, n=60, p=6, t=3, offset=1e3):
    """Strongly correlated columns around an offset (raw sums X'X - n mx mx' would cancel)."""
    base = rng.standard_normal((n, 2))
    X = base @ rng.standard_normal((2, p)) + 1e-2 * rng.standard_normal((n, p)) + offset
    Y = base @ rng.standard_normal((2, t)) + 0.1 * rng.standard_normal((n, t)) - 50.0
    return X, Y


def _batches(n, rng, k=7):
    cuts = np.sort(rng.choice(np.arange(1, n), size=k, replace=False))
    return np.split(np.arange(n), cuts)


def _close(actual, expected, dtype):
    rtol = TOLERANCE[dtype]
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * np.abs(expected).max())


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("make", [_random, _structured])
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("one_d", [False, True])
def test_online_equals_sklearn_batch_on_every_prefix_at_every_alpha(make, fit_intercept, one_d,
                                                                     dtype):
    rng = np.random.default_rng(0)
    # Without an intercept an offset is a direction of X'X far larger than the others: ill
    # conditioned for any solver, scikit-learn's included, so that case uses no offset.
    X, Y = make(rng) if make is _random or fit_intercept else make(rng, offset=0.0)
    if one_d:
        Y = Y[:, 0]
    model = OnlineRidge(alphas=ALPHAS, fit_intercept=fit_intercept, dtype=dtype)
    X, Y = X.astype(dtype), Y.astype(dtype)  # float32 in, float32 out
    X_test = X[::3] + 0.1
    for batch in _batches(len(X), rng):
        assert model.partial_fit(X[batch], Y[batch]) is model
        end = batch[-1] + 1
        for alpha in ALPHAS:
            ref = Ridge(alpha=alpha, fit_intercept=fit_intercept).fit(X[:end].astype(float),
                                                                      Y[:end].astype(float))
            pred = model.predict(X_test, alpha=alpha)
            assert pred.dtype == dtype and pred.shape == ref.predict(X_test).shape
            _close(pred, ref.predict(X_test.astype(float)), dtype)
            coef, intercept = model.coefficients(alpha)
            _close(coef.numpy().reshape(ref.coef_.shape), ref.coef_, dtype)
        assert model.n_samples_seen_ == end
    assert model.coef_.shape == ref.coef_.shape


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_online_equals_himalaya_batch(dtype):
    rng = np.random.default_rng(11)
    X, Y = _random(rng, n=90, p=7, t=5)
    model = OnlineRidge(alphas=ALPHAS, dtype=dtype)
    for batch in _batches(len(X), rng):
        model.partial_fit(X[batch].astype(dtype), Y[batch].astype(dtype))
    # himalaya fits no intercept of its own (fit_intercept centres X and Y, as here).
    for alpha in ALPHAS:
        ref = HimalayaRidge(alpha=alpha, fit_intercept=True).fit(X, Y)
        _close(model.predict(X.astype(dtype), alpha=alpha), ref.predict(X), dtype)


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_standardize_equals_scaler_then_ridge_on_every_prefix(fit_intercept):
    rng = np.random.default_rng(8)
    X, Y = _random(rng, n=50, p=4)
    X = X * [1e-3, 1.0, 1e3, 0.0] + [0.0, 5.0, -2.0, 1.0]  # scales far apart, one constant
    model = OnlineRidge(alphas=[3.0], fit_intercept=fit_intercept, standardize=True,
                        dtype="float64")
    plain = OnlineRidge(alphas=[3.0], fit_intercept=fit_intercept, dtype="float64")
    for batch in _batches(len(X), rng):
        model.partial_fit(X[batch], Y[batch])
        plain.partial_fit(X[batch], Y[batch])
        end = batch[-1] + 1
        ref = make_pipeline(StandardScaler(with_mean=fit_intercept),
                            Ridge(alpha=3.0, fit_intercept=fit_intercept)).fit(X[:end], Y[:end])
        _close(model.predict(X), ref.predict(X), "float64")
    # Without standardising, the penalty all but removes the small-scale feature.
    assert abs(plain.coef_[0, 0]) < 0.1 * abs(model.coef_[0, 0])


@pytest.mark.parametrize("standardize", [False, True])
def test_forgetting_equals_batch_ridge_with_geometric_sample_weights(standardize):
    rng = np.random.default_rng(9)
    X, Y = _random(rng, n=80, p=4)
    X[40:] += 3.0  # the features drift
    lam = 0.8
    model = OnlineRidge(alphas=[2.0], forgetting=lam, standardize=standardize, dtype="float64")
    batches = _batches(len(X), rng)
    for k, batch in enumerate(batches):
        model.partial_fit(X[batch], Y[batch])
        # A sample of batch j has weight lam ** (number of batches after it).
        weight = np.concatenate([np.full(len(b), lam ** (k - j))
                                 for j, b in enumerate(batches[:k + 1])])
        end = batch[-1] + 1
        Xs = X[:end]
        if standardize:
            Xs = StandardScaler().fit(Xs, sample_weight=weight).transform(Xs)
        ref = Ridge(alpha=2.0).fit(Xs, Y[:end], sample_weight=weight)
        expected = ref.predict(StandardScaler().fit(X[:end], sample_weight=weight).transform(X)
                               if standardize else X)
        _close(model.predict(X), expected, "float64")
        assert model.weight_sum_ == pytest.approx(weight.sum())


def test_lags_expand_each_batch_on_its_own():
    rng = np.random.default_rng(10)
    trials = [rng.standard_normal((12, 3)) for _ in range(5)]
    Y = [rng.standard_normal((12, 4)) for _ in range(5)]
    lags = (0, 2, 3)
    model = OnlineRidge(alphas=[1.0], lags=lags, dtype="float64")
    for X, y in zip(trials, Y):
        model.partial_fit(X, y)
    design = np.vstack([lagged(X, lags) for X in trials])  # zeros before each trial's start
    ref = Ridge(alpha=1.0).fit(design, np.vstack(Y))
    _close(model.predict(trials[0]), ref.predict(lagged(trials[0], lags)), "float64")
    assert model.n_features_in_ == 3 and model.coef_.shape == (4, 9)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("lags", [(0,), (0, 1)])
def test_glover_design_equals_batch_ridge_on_the_convolved_trials_on_every_prefix(lags, dtype):
    """hrf="glover": each trial convolved on its own (zeros before it), then lagged; the model
    equals batch StandardScaler + Ridge on that design after every trial, at every penalty."""
    rng = np.random.default_rng(21)
    rate = 1 / 1.49
    kernel = glover_kernel(rate)
    trials = [rng.standard_normal((int(n), 3)) for n in rng.integers(6, 25, size=7)]
    designs = [lagged(np.stack([np.convolve(X[:, j], kernel)[:len(X)] for j in range(3)], 1),
                      lags) for X in trials]
    W = rng.standard_normal((3 * len(lags), 4))
    Y = [D @ W + 0.3 * rng.standard_normal((len(D), 4)) + 1.0 for D in designs]
    model = OnlineRidge(alphas=ALPHAS, lags=lags, standardize=True, dtype=dtype, hrf="glover",
                        frame_rate_hz=rate)
    for k, (X, y) in enumerate(zip(trials, Y)):
        model.partial_fit(X.astype(dtype), y.astype(dtype))
        design, target = np.vstack(designs[:k + 1]), np.vstack(Y[:k + 1])
        for alpha in ALPHAS:
            ref = make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(design, target)
            _close(model.predict(trials[0].astype(dtype), alpha=alpha), ref.predict(designs[0]),
                   dtype)
    assert model.n_features_in_ == 3 and model.coef_.shape == (4, 3 * len(lags))
    # Not the FIR model: the same trials without the convolution give other predictions.
    fir = OnlineRidge(alphas=ALPHAS, lags=lags, standardize=True, dtype=dtype)
    for X, y in zip(trials, Y):
        fir.partial_fit(X.astype(dtype), y.astype(dtype))
    assert not np.allclose(fir.predict(trials[0].astype(dtype)),
                           model.predict(trials[0].astype(dtype)), rtol=1e-2)


def test_glover_features_are_convolved_before_the_lags():
    X = np.random.default_rng(22).standard_normal((10, 2))
    model = OnlineRidge(lags=(0, 2), hrf="glover", frame_rate_hz=1.0, dtype="float64")
    design, _, _ = model._inputs(X, reset=True)
    np.testing.assert_allclose(design.numpy(), lagged(convolved(X, glover_kernel(1.0)), (0, 2)),
                               rtol=1e-12)


def _prequential_choice(trials, alphas):
    """The reference: at each batch after the first, every alpha's batch Ridge on the past
    predicts it; the per-target alpha with the least summed squared error, ties to the largest."""
    errors = np.zeros((len(alphas), trials[0][1].shape[1]))
    for k in range(1, len(trials)):
        X_past = np.vstack([X for X, _ in trials[:k]])
        Y_past = np.vstack([Y for _, Y in trials[:k]])
        X, Y = trials[k]
        for i, alpha in enumerate(alphas):
            errors[i] += ((Ridge(alpha=alpha).fit(X_past, Y_past).predict(X) - Y) ** 2).sum(0)
    order = np.argsort(alphas)[::-1]
    return np.asarray(alphas)[order[np.argmin(errors[order], axis=0)]], errors


def test_alpha_per_target_is_the_prequential_argmin():
    rng = np.random.default_rng(12)
    n_voxels = 40
    W = rng.standard_normal((6, n_voxels)) * np.linspace(0, 1, n_voxels) ** 2  # weak to strong
    trials = []
    for _ in range(12):
        X = rng.standard_normal((10, 6))
        trials.append((X, X @ W + rng.standard_normal((10, n_voxels))))
    alphas = [0.01, 1.0, 30.0, 1e3, 1e5]
    model = OnlineRidge(alphas=alphas, dtype="float64")
    for X, Y in trials:
        model.partial_fit(X, Y)
    expected, errors = _prequential_choice(trials, alphas)
    np.testing.assert_allclose(model.errors_.numpy(), errors, rtol=1e-8)
    np.testing.assert_array_equal(model.alpha_, expected)
    # Noise voxels want the strongest penalty, strong ones a weak one.
    assert model.alpha_[0] >= 1e3 and model.alpha_[-1] <= 30.0
    # Predictions and coefficients use each target's own alpha.
    for alpha in alphas:
        cols = model.alpha_ == alpha
        np.testing.assert_allclose(model.predict(X)[:, cols],
                                   model.predict(X, alpha=alpha)[:, cols],
                                   rtol=1e-12)
        np.testing.assert_allclose(model.coef_[cols], model.coefficients(alpha)[0].numpy()[cols])


def test_before_any_evidence_the_largest_alpha_serves():
    rng = np.random.default_rng(13)
    model = OnlineRidge(alphas=[5.0, 50.0, 0.5]).partial_fit(*_random(rng))
    assert model.alpha_.tolist() == [50.0, 50.0, 50.0]


def test_test_then_train_returns_the_prediction_made_before_learning():
    rng = np.random.default_rng(14)
    X, Y = _random(rng, n=40, t=6)
    model = OnlineRidge(alphas=ALPHAS)
    assert model.test_then_train(X[:20], Y[:20]) is None  # nothing to predict from yet
    before = model.predict(X[20:])
    np.testing.assert_array_equal(model.test_then_train(X[20:], Y[20:]), before)
    assert not np.allclose(model.predict(X[20:]), before)


def test_torch_tensors_in_give_tensors_out_with_the_same_values():
    rng = np.random.default_rng(15)
    X, Y = (a.astype(np.float32) for a in _random(rng))
    on_numpy = OnlineRidge(alphas=ALPHAS, lags=(0, 1)).partial_fit(X[:30], Y[:30])
    on_torch = OnlineRidge(alphas=ALPHAS, lags=(0, 1)).partial_fit(torch.from_numpy(X[:30]),
                                                                   torch.from_numpy(Y[:30]))
    P = on_torch.test_then_train(torch.from_numpy(X[30:]), torch.from_numpy(Y[30:]))
    assert isinstance(P, torch.Tensor) and P.dtype == torch.float32
    np.testing.assert_array_equal(P.numpy(), on_numpy.test_then_train(X[30:], Y[30:]))
    np.testing.assert_array_equal(on_torch.alpha_, on_numpy.alpha_)
    with pytest.raises(ValueError, match="X has 4 features, but OnlineRidge is expecting 5"):
        on_torch.predict(torch.zeros(3, 4))


def test_voxel_chunks_are_exact_so_memory_can_be_split():
    rng = np.random.default_rng(16)
    X, Y = _random(rng, n=60, t=10)
    whole = OnlineRidge(alphas=ALPHAS, dtype="float64")
    halves = [OnlineRidge(alphas=ALPHAS, dtype="float64") for _ in range(2)]
    for batch in _batches(len(X), rng):
        whole.partial_fit(X[batch], Y[batch])
        halves[0].partial_fit(X[batch], Y[batch, :4])
        halves[1].partial_fit(X[batch], Y[batch, 4:])
    # Equal up to the rounding of matrix products blocked differently.
    np.testing.assert_allclose(np.hstack([h.predict(X) for h in halves]), whole.predict(X),
                               rtol=1e-12)
    np.testing.assert_array_equal(np.concatenate([h.alpha_ for h in halves]), whole.alpha_)


def test_fit_is_reset_then_partial_fit():
    rng = np.random.default_rng(2)
    X, Y = _random(rng)
    model = OnlineRidge(dtype="float64").partial_fit(X[:30], Y[:30]).partial_fit(X[30:], Y[30:])
    refit = OnlineRidge(dtype="float64").partial_fit(X[:10] + 5, Y[:10]).fit(X, Y)
    np.testing.assert_allclose(refit.coef_, model.coef_, rtol=1e-10)
    assert refit.n_samples_seen_ == len(X)


def test_feature_count_error_uses_sklearn_wording():
    rng = np.random.default_rng(3)
    model = OnlineRidge().partial_fit(rng.standard_normal((4, 768)), rng.standard_normal(4))
    msg = "X has 512 features, but OnlineRidge is expecting 768 features as input."
    with pytest.raises(ValueError, match=msg):
        model.partial_fit(rng.standard_normal((4, 512)), rng.standard_normal(4))
    with pytest.raises(ValueError, match=msg):
        model.predict(rng.standard_normal((4, 512)))


def test_target_count_cannot_change():
    rng = np.random.default_rng(4)
    model = OnlineRidge().partial_fit(rng.standard_normal((5, 2)), rng.standard_normal((5, 3)))
    with pytest.raises(ValueError, match=r"y has shape \(2,\) per sample.*expecting \(3,\)"):
        model.partial_fit(rng.standard_normal((5, 2)), rng.standard_normal((5, 2)))


@pytest.mark.parametrize("params, match", [
    ({"alphas": [-1.0]}, "'alphas' parameter.*>= 0"),
    ({"alphas": [np.inf]}, "'alphas' parameter"),
    ({"alphas": []}, "'alphas' parameter.*non-empty"),
    ({"alphas": ["1"]}, "'alphas' parameter"),
    ({"forgetting": 0.0}, r"'forgetting' parameter.*\(0, 1\]"),
    ({"forgetting": 1.5}, "'forgetting' parameter"),
    ({"dtype": "float16"}, "'dtype' parameter.*'float32' or 'float64'"),
    ({"device": "gpu"}, "'device' parameter"),
    ({"lags": [-1]}, "'lags' parameter"),
    ({"hrf": "spm"}, "'hrf' parameter. Allowed values are 'fir' and 'glover', but got 'spm'"),
    ({"hrf": "glover"}, "'frame_rate_hz' parameter.*when hrf is 'glover'.*but got None"),
    ({"hrf": "glover", "frame_rate_hz": 0.0}, "'frame_rate_hz' parameter.*but got 0.0"),
])
def test_bad_parameters_give_one_line_errors(params, match):
    model = OnlineRidge(**params)  # __init__ only stores
    with pytest.raises(ValueError, match=match) as err:
        model.partial_fit(np.ones((3, 2)), np.ones(3))
    assert "\n" not in str(err.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_a_one_line_error():
    with pytest.raises(ValueError, match="no CUDA device"):
        OnlineRidge(device="cuda").partial_fit(np.ones((3, 2)), np.ones(3))


def test_a_refused_batch_changes_nothing():
    rng = np.random.default_rng(17)
    X, Y = _random(rng)
    model = OnlineRidge(alphas=ALPHAS).partial_fit(X[:30], Y[:30])
    before = model.state_dict()
    bad = Y[30:].copy()
    bad[0, 0] = np.nan
    for args in ((X[30:], bad), (torch.from_numpy(X[30:]), torch.from_numpy(bad))):
        with pytest.raises(ValueError, match="NaN"):
            model.partial_fit(*args)
    after = model.state_dict()
    for name, value in before.items():
        np.testing.assert_array_equal(after[name], value, err_msg=name)


def test_state_dict_round_trip_gives_identical_predictions():
    rng = np.random.default_rng(5)
    X, Y = _random(rng)
    model = OnlineRidge(alphas=ALPHAS, lags=(0, 1), forgetting=0.9, fit_intercept=False)
    model.partial_fit(X[:20], Y[:20]).partial_fit(X[20:40], Y[20:40])
    state = model.state_dict()
    assert all(isinstance(v, (np.ndarray, int, float, bool, str)) for v in state.values())
    clone = OnlineRidge().load_state_dict(state)
    assert clone.get_params() == {**model.get_params(), "alphas": ALPHAS, "lags": (0, 1)}
    np.testing.assert_array_equal(clone.predict(X), model.predict(X))
    # Both keep learning identically after the restore; the state is a copy, not shared.
    state["xx_"][:] = 0
    model.partial_fit(X[40:], Y[40:])
    clone.partial_fit(X[40:], Y[40:])
    np.testing.assert_array_equal(clone.predict(X), model.predict(X))
    np.testing.assert_array_equal(clone.alpha_, model.alpha_)
    with pytest.raises(ValueError, match=r"'state' parameter.*missing \['xx_'\]"):
        OnlineRidge().load_state_dict({k: v for k, v in state.items() if k != "xx_"})
    # A FIR state has no hemodynamic keys (as before they existed) and loads as FIR.
    assert "hrf" not in state and "frame_rate_hz" not in state and clone.hrf == "fir"


def test_state_dict_round_trip_keeps_the_glover_design():
    rng = np.random.default_rng(23)
    trials = [_random(rng, n=15) for _ in range(4)]
    model = OnlineRidge(alphas=ALPHAS, lags=(0, 1), hrf="glover", frame_rate_hz=1 / 1.49)
    for X, Y in trials[:3]:
        model.partial_fit(X, Y)
    state = model.state_dict()
    assert state["hrf"] == "glover" and state["frame_rate_hz"] == 1 / 1.49
    clone = OnlineRidge().load_state_dict(state)  # a default (FIR) model takes the state's design
    assert (clone.hrf, clone.frame_rate_hz) == ("glover", 1 / 1.49)
    X, Y = trials[3]
    np.testing.assert_array_equal(clone.predict(X), model.predict(X))
    np.testing.assert_array_equal(clone.test_then_train(X, Y), model.test_then_train(X, Y))
    np.testing.assert_array_equal(clone.predict(X), model.predict(X))


def test_inputs_are_neither_mutated_nor_kept():
    rng = np.random.default_rng(6)
    X, Y = _random(rng)
    X32, Y32 = X.astype(np.float32), Y.astype(np.float32)
    X_before, Y_before = X32.copy(), Y32.copy()
    model = OnlineRidge().partial_fit(X32, Y32)
    model.partial_fit(torch.from_numpy(X32), torch.from_numpy(Y32))
    np.testing.assert_array_equal(X32, X_before)
    np.testing.assert_array_equal(Y32, Y_before)
    pred = model.predict(X_before)
    X32[:] = 0.0  # a receive buffer reused by the next message
    Y32[:] = 0.0
    np.testing.assert_array_equal(model.predict(X_before), pred)


def test_memory_does_not_grow_with_samples():
    rng = np.random.default_rng(7)
    model = OnlineRidge(alphas=ALPHAS)
    sizes = []
    for _ in range(3):
        X, Y = _random(rng, n=50)
        model.partial_fit(X, Y)
        sizes.append(sum(v.nbytes for v in model.state_dict().values() if hasattr(v, "nbytes")))
    assert sizes[0] == sizes[-1]
    assert model.xy_.dtype == torch.float32 and model.xx_.dtype == torch.float64


# float64: float32 products round differently by row block, beyond the checks' 1e-7. No lags:
# they make a row's prediction depend on the rows before it, which the checks do not allow.
@parametrize_with_checks([
    OnlineRidge(dtype="float64"),
    OnlineRidge(alphas=(0.1, 10.0), fit_intercept=False, standardize=True, dtype="float64"),
])
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
