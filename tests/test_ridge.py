"""OnlineRidge: online equals batch on every prefix, sklearn contract, checkpoints."""

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from encoders.ridge import OnlineRidge


def _random(rng, n=60, p=5, t=3):
    X = rng.standard_normal((n, p))
    Y = X @ rng.standard_normal((p, t)) + 0.5 * rng.standard_normal((n, t)) + 2.0
    return X, Y


def _structured(rng, n=60, p=6, t=3, offset=1e6):
    """Strongly correlated columns around a large offset (raw sums X'X - n mx mx' would cancel)."""
    base = rng.standard_normal((n, 2))
    X = base @ rng.standard_normal((2, p)) + 1e-3 * rng.standard_normal((n, p)) + offset
    Y = base @ rng.standard_normal((2, t)) + 0.1 * rng.standard_normal((n, t)) - 50.0
    return X, Y


def _batches(n, rng):
    cuts = np.sort(rng.choice(np.arange(1, n), size=7, replace=False))
    return np.split(np.arange(n), cuts)


@pytest.mark.parametrize("make", [_random, _structured])
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("one_d", [False, True])
def test_online_equals_batch_on_every_prefix(make, fit_intercept, one_d):
    rng = np.random.default_rng(0)
    # Without an intercept the offset itself is a direction of X'X ~1e12 times larger than the
    # others: ill conditioned for any solver, sklearn included, so that case uses no offset.
    X, Y = make(rng) if make is _random or fit_intercept else make(rng, offset=0.0)
    if one_d:
        Y = Y[:, 0]
    alpha = 0.7
    model = OnlineRidge(alpha=alpha, fit_intercept=fit_intercept)
    X_test = X[::3] + 0.1
    end = 0
    for batch in _batches(len(X), rng):
        assert model.partial_fit(X[batch], Y[batch]) is model
        end = batch[-1] + 1
        ref = Ridge(alpha=alpha, fit_intercept=fit_intercept).fit(X[:end], Y[:end])
        assert model.coef_.shape == ref.coef_.shape
        np.testing.assert_allclose(model.coef_, ref.coef_, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(model.predict(X_test), ref.predict(X_test), rtol=1e-6,
                                   atol=1e-6)
        assert model.n_samples_seen_ == end
    assert end == len(X)


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_standardize_equals_scaler_then_ridge_on_every_prefix(fit_intercept):
    rng = np.random.default_rng(8)
    X, Y = _random(rng, n=50, p=4)
    X = X * [1e-3, 1.0, 1e3, 0.0] + [0.0, 5.0, -2.0, 1.0]  # scales far apart, one constant
    model = OnlineRidge(alpha=3.0, fit_intercept=fit_intercept, standardize=True)
    plain = OnlineRidge(alpha=3.0, fit_intercept=fit_intercept)
    for batch in _batches(len(X), rng):
        model.partial_fit(X[batch], Y[batch])
        plain.partial_fit(X[batch], Y[batch])
        end = batch[-1] + 1
        ref = make_pipeline(StandardScaler(with_mean=fit_intercept),
                            Ridge(alpha=3.0, fit_intercept=fit_intercept)).fit(X[:end], Y[:end])
        np.testing.assert_allclose(model.predict(X), ref.predict(X), rtol=1e-6, atol=1e-6)
    # Without standardising, the penalty all but removes the small-scale feature.
    assert abs(plain.coef_[0, 0]) < 0.1 * abs(model.coef_[0, 0])


def test_float32_in_float32_out_close_to_float64_batch():
    rng = np.random.default_rng(1)
    X, Y = _random(rng, n=80, p=8, t=4)
    X32, Y32 = X.astype(np.float32), Y.astype(np.float32)
    model = OnlineRidge(alpha=2.0)
    for batch in _batches(len(X), rng):
        model.partial_fit(X32[batch], Y32[batch])
        end = batch[-1] + 1
        ref = Ridge(alpha=2.0).fit(X[:end], Y[:end])
        pred = model.predict(X32)
        assert pred.dtype == np.float32
        np.testing.assert_allclose(pred, ref.predict(X), rtol=1e-3, atol=1e-3)
    assert model.xx_.dtype == np.float64


def test_fit_is_reset_then_partial_fit():
    rng = np.random.default_rng(2)
    X, Y = _random(rng)
    model = OnlineRidge().partial_fit(X[:30], Y[:30]).partial_fit(X[30:], Y[30:])
    refit = OnlineRidge().partial_fit(X[:10] + 5, Y[:10]).fit(X, Y)
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


@pytest.mark.parametrize("alpha", [-1.0, np.inf, "1"])
def test_bad_alpha(alpha):
    model = OnlineRidge(alpha=alpha)  # __init__ only stores
    with pytest.raises(ValueError, match=r"'alpha' parameter.*>= 0, but got"):
        model.partial_fit(np.ones((3, 2)), np.ones(3))


def test_state_dict_round_trip_gives_identical_predictions():
    rng = np.random.default_rng(5)
    X, Y = _random(rng)
    model = OnlineRidge(alpha=0.3, fit_intercept=False).partial_fit(X[:40], Y[:40])
    state = model.state_dict()
    assert all(isinstance(v, (np.ndarray, int, float, bool)) for v in state.values())
    clone = OnlineRidge().load_state_dict(state)
    assert clone.get_params() == model.get_params()
    np.testing.assert_array_equal(clone.predict(X), model.predict(X))
    # Both keep learning identically after the restore; the state is a copy, not shared.
    state["xx_"][:] = 0
    model.partial_fit(X[40:], Y[40:])
    clone.partial_fit(X[40:], Y[40:])
    np.testing.assert_array_equal(clone.predict(X), model.predict(X))
    with pytest.raises(ValueError, match=r"'state' parameter.*missing \['xx_'\]"):
        OnlineRidge().load_state_dict({k: v for k, v in state.items() if k != "xx_"})


def test_inputs_are_neither_mutated_nor_kept():
    rng = np.random.default_rng(6)
    X, Y = _random(rng)
    X32 = X.astype(np.float32)
    X_before, Y_before = X32.copy(), Y.copy()
    model = OnlineRidge().partial_fit(X32, Y)
    np.testing.assert_array_equal(X32, X_before)
    np.testing.assert_array_equal(Y, Y_before)
    pred = model.predict(X_before)
    X32[:] = 0.0  # a receive buffer reused by the next message
    Y[:] = 0.0
    np.testing.assert_array_equal(model.predict(X_before), pred)


def test_memory_does_not_grow_with_samples():
    rng = np.random.default_rng(7)
    model = OnlineRidge()
    sizes = []
    for _ in range(3):
        X, Y = _random(rng, n=50)
        model.partial_fit(X, Y)
        sizes.append(sum(v.nbytes for v in model.state_dict().values() if hasattr(v, "nbytes")))
    assert sizes[0] == sizes[-1]


@parametrize_with_checks(
    [OnlineRidge(), OnlineRidge(alpha=0.1, fit_intercept=False, standardize=True)]
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
