"""The canonical-HRF design: nilearn's Glover kernel at the frame rate, convolved causally within
each trial (an explicit np.convolve per column), checked parameters."""
import numpy as np
import pytest
import torch
from nilearn.glm.first_level import glover_hrf

from encoders.hrf import check_hrf, convolved, glover_kernel, hrf_kernel

TR = 1.49


@pytest.mark.parametrize("frame_rate", [1 / TR, 1.0, 2.0])
def test_glover_kernel_is_nilearns_sampled_once_per_frame(frame_rate):
    kernel = glover_kernel(frame_rate)
    # The TR positionally: nilearn names it `tr` before 0.11 and `t_r` since.
    np.testing.assert_array_equal(kernel, glover_hrf(1 / frame_rate, oversampling=1,
                                                     time_length=32.0))
    assert kernel.dtype == np.float64 and len(kernel) == round(32.0 * frame_rate)
    assert float(kernel.sum()) == pytest.approx(1.0)
    assert 4.0 <= np.argmax(kernel) / frame_rate <= 6.5  # the BOLD peak, about 5 s after
    with pytest.raises(ValueError, match="read-only"):
        kernel[0] = 1.0  # cached and shared


@pytest.mark.parametrize("n_frames", [1, 5, 15, 40])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_convolved_is_np_convolve_of_each_column_truncated_to_the_trial(n_frames, dtype):
    rng = np.random.default_rng(n_frames)
    X = rng.standard_normal((n_frames, 4)).astype(dtype)
    kernel = glover_kernel(1 / TR)  # 21 frames: longer than some trials, shorter than others
    out = convolved(X, kernel)
    expected = np.stack([np.convolve(X[:, j].astype(np.float64), kernel)[:n_frames]
                         for j in range(X.shape[1])], axis=1)
    assert out.dtype == dtype and out.shape == X.shape
    np.testing.assert_allclose(out, expected, rtol=1e-5 if dtype == np.float32 else 1e-12,
                               atol=1e-6 if dtype == np.float32 else 0)


def test_convolved_torch_in_torch_out_with_the_same_values():
    X = np.random.default_rng(1).standard_normal((12, 3))
    kernel = glover_kernel(1.0)
    out = convolved(torch.from_numpy(X), kernel)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), convolved(X, kernel), rtol=1e-12)


def test_convolved_never_reaches_before_the_trial_nor_mutates_its_input():
    X = np.zeros((6, 2))
    X[0] = 1.0
    before = X.copy()
    out = convolved(X, [0.5, 0.3, 0.2])
    np.testing.assert_array_equal(out[:, 0], [0.5, 0.3, 0.2, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(X, before)
    with pytest.raises(ValueError, match=r"'X' parameter.*2-D.*shape \(6,\)"):
        convolved(X[:, 0], [1.0])


def test_check_hrf():
    assert check_hrf("fir", None) == ("fir", None)
    assert check_hrf("fir", 2) == ("fir", 2.0)  # given to fir, the rate is checked and ignored
    assert check_hrf("glover", 1 / TR) == ("glover", 1 / TR)
    assert hrf_kernel("fir", 1.0) is None
    with pytest.raises(ValueError, match=r"^Invalid value for the 'hrf' parameter\. Allowed "
                                         r"values are 'fir' and 'glover', but got 'spm' instead"):
        check_hrf("spm", 1.0)
    with pytest.raises(ValueError, match=r"'frame_rate_hz' parameter\. Allowed values are a "
                                         r"finite number > 0 when hrf is 'glover'.*but got None"):
        check_hrf("glover", None)
    for bad in (0.0, -1.0, float("inf"), True, "1"):
        with pytest.raises(ValueError, match=r"'frame_rate_hz' parameter.*but got"):
            check_hrf("glover", bad)
