"""FIR design: each block is X delayed by its lag, zero before the trial's first frame."""

import numpy as np
import pytest

from encoders.lags import lagged


def test_blocks_are_shifted_copies_with_zeros_before_the_trial():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((7, 3))
    lags = [0, 2, 5]
    out = lagged(X, lags)
    assert out.shape == (7, 9)
    for k, lag in enumerate(lags):
        block = out[:, 3 * k : 3 * (k + 1)]
        np.testing.assert_array_equal(block[:lag], 0.0)
        np.testing.assert_array_equal(block[lag:], X[: 7 - lag])


def test_keeps_dtype_and_does_not_touch_input():
    X = np.arange(12, dtype=np.float32).reshape(6, 2)
    before = X.copy()
    out = lagged(X, (1, 0))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(X, before)
    np.testing.assert_array_equal(out[:, 2:], X)  # lag 0 block is X itself
    out[:] = -1  # the output is not a view of X
    np.testing.assert_array_equal(X, before)


def test_lag_longer_than_trial_gives_zero_block():
    X = np.ones((3, 2))
    out = lagged(X, np.array([0, 3, 10]))  # numpy integers are accepted
    np.testing.assert_array_equal(out[:, 2:], 0.0)
    np.testing.assert_array_equal(out[:, :2], 1.0)


@pytest.mark.parametrize("lags", [[-1], [0, 1.5], [], [True], "01", 3])
def test_bad_lags_raise_one_line_value_error(lags):
    with pytest.raises(ValueError, match=r"'lags' parameter.*non-negative integers, but got") as e:
        lagged(np.zeros((4, 2)), lags)
    assert "\n" not in str(e.value)


def test_x_must_be_two_dimensional():
    with pytest.raises(ValueError, match=r"'X' parameter.*2-D.*shape \(4,\)"):
        lagged(np.zeros(4), [0])
