"""Noise ceiling from repeated presentations: known SNR in, known ceiling out."""

import numpy as np
import pytest

from encoders.ceiling import (CEILING_FORMULA, noise_ceiling, normalised_score, spearman_brown,
                              split_half_reliability)

SNRS = np.array([0.25, 1.0, 4.0])


def _responses(seed, n_repeats, snrs=SNRS, n_per_snr=8, n_noise=8, n_sounds=20, n_frames=50):
    """Signal of unit variance shared by every presentation plus noise of variance 1 / snr.

    Voxels come in blocks of ``n_per_snr`` per SNR, then ``n_noise`` noise-only voxels.
    """
    rng = np.random.default_rng(seed)
    n_signal = len(snrs) * n_per_snr
    S = rng.standard_normal((n_sounds, 1, n_frames, n_signal + n_noise))
    S[..., n_signal:] = 0.0
    noise_sd = np.concatenate([np.repeat(1 / np.sqrt(snrs), n_per_snr), np.ones(n_noise)])
    return S + noise_sd * rng.standard_normal((n_sounds, n_repeats, n_frames, S.shape[-1]))


@pytest.mark.parametrize("n_repeats", [2, 3, 4])
def test_ceiling_matches_the_known_snr(n_repeats):
    ceiling = noise_ceiling(_responses(n_repeats, n_repeats))
    expected = np.sqrt(SNRS / (1 + SNRS))  # 0.447, 0.707, 0.894
    by_snr = ceiling[:len(SNRS) * 8].reshape(len(SNRS), 8)
    # Over 1000 frames r_single has a standard error of about (1 - r^2) / sqrt(1000) <= 0.03, so
    # the ceiling sqrt(r_single) one of at most 0.03 / (2 sqrt(0.2)) = 0.034: 3 of them per voxel,
    # and 3 of the mean of 8 voxels.
    np.testing.assert_allclose(by_snr, np.repeat(expected[:, None], 8, axis=1), atol=0.1)
    np.testing.assert_allclose(by_snr.mean(axis=1), expected, atol=0.036)
    assert ceiling.dtype == np.float64 and ceiling.shape == (len(SNRS) * 8 + 8,)


@pytest.mark.parametrize("n_repeats", [2, 4])
def test_noise_only_voxels_have_a_ceiling_near_zero(n_repeats):
    ceiling = noise_ceiling(_responses(10 + n_repeats, n_repeats, n_noise=40, n_frames=100))
    ceiling = ceiling[-40:]
    # r_single scatters around 0 with sd 1 / sqrt(2000) = 0.022; the square root amplifies that
    # (4 sd: sqrt(0.089) = 0.3), yet stays below the 0.45 of the weakest signal above.
    assert ceiling.mean() < 0.1 and ceiling.max() < 0.32
    assert np.count_nonzero(ceiling == 0.0) >= 10  # negative reliabilities clip to 0


def test_two_repeats_is_the_pearson_r_of_the_two_presentations():
    responses = _responses(1, 2)
    a = responses[:, 0].reshape(-1, responses.shape[-1])
    b = responses[:, 1].reshape(-1, responses.shape[-1])
    expected = [np.corrcoef(a[:, v], b[:, v])[0, 1] for v in range(a.shape[1])]
    np.testing.assert_allclose(split_half_reliability(responses), expected, atol=1e-12)
    np.testing.assert_allclose(noise_ceiling(responses), np.sqrt(np.maximum(expected, 0)),
                               atol=1e-12)


def test_four_repeats_average_every_split_and_invert_spearman_brown():
    responses = _responses(2, 4)
    n_voxels = responses.shape[-1]
    r = []
    for first, second in ([0, 1], [2, 3]), ([0, 2], [1, 3]), ([0, 3], [1, 2]):
        a = responses[:, first].mean(axis=1).reshape(-1, n_voxels)
        b = responses[:, second].mean(axis=1).reshape(-1, n_voxels)
        r.append([np.corrcoef(a[:, v], b[:, v])[0, 1] for v in range(n_voxels)])
    r_half = np.mean(r, axis=0)
    # Every split is used once, so the seed does not matter.
    np.testing.assert_allclose(split_half_reliability(responses, seed=7), r_half, atol=1e-12)
    r_single = r_half / (2 - r_half)  # Spearman-Brown from 2 presentations back to 1
    np.testing.assert_allclose(noise_ceiling(responses), np.sqrt(np.maximum(r_single, 0)),
                               atol=1e-12)


def test_many_repeats_draw_seeded_random_splits():
    responses = _responses(3, 8, n_sounds=5, n_frames=10)  # 35 distinct splits > n_splits
    r0 = split_half_reliability(responses, seed=0, n_splits=5)
    np.testing.assert_array_equal(r0, split_half_reliability(responses, seed=0, n_splits=5))
    assert not np.allclose(r0, split_half_reliability(responses, seed=1, n_splits=5))


def test_spearman_brown_known_values_and_inverse():
    np.testing.assert_allclose(spearman_brown([0.0, 0.5, 1.0, 0.2], k=2),
                               [0.0, 2 / 3, 1.0, 0.4 / 1.2])
    assert spearman_brown(0.2, k=5) == pytest.approx(1.0 / 1.8)
    assert spearman_brown(0.4, k=1) == pytest.approx(0.4)
    r = np.linspace(-1 / 7, 1, 50)  # the inverse holds for r >= -1 / (2k - 1)
    for k in (2, 4, 1 / 3):
        if k > 1:
            np.testing.assert_allclose(spearman_brown(spearman_brown(r, k), 1 / k), r, atol=1e-12)
        np.testing.assert_allclose(spearman_brown(spearman_brown(r[r >= 0], k), 1 / k), r[r >= 0],
                                   atol=1e-12)


def test_spearman_brown_stays_finite_past_the_pole():
    r = np.array([-1.0, -0.9, -0.5, -0.4, -2.0, 3.0, np.nan])
    out = spearman_brown(r, k=3)  # pole at r = -1 / (k - 1) = -0.5
    np.testing.assert_allclose(out[:6], [-1.0, -1.0, -1.0, -1.0, -1.0, 1.0])
    assert np.isnan(out[6])
    assert np.all(np.diff(spearman_brown(np.linspace(-1, 1, 101), k=3)) >= 0)  # monotone


def test_normalised_score_excludes_low_ceilings():
    r = np.array([[0.3, 0.2, 0.1, 0.05], [0.6, 0.1, 0.2, 0.0]])
    ceiling = np.array([0.6, 0.09, 0.5, np.nan])
    normalised, n_excluded = normalised_score(r, ceiling)
    np.testing.assert_allclose(normalised, [[0.5, np.nan, 0.2, np.nan],
                                            [1.0, np.nan, 0.4, np.nan]])
    assert n_excluded == 2
    assert normalised_score(r, ceiling, min_ceiling=0.05)[1] == 1
    assert "sqrt(max(r_single, 0))" in CEILING_FORMULA


@pytest.mark.parametrize("shape", [(3, 2, 4), (3, 1, 4, 2), (0, 2, 4, 2)])
def test_bad_responses_shape(shape):
    with pytest.raises(ValueError, match=r"'responses' parameter\. Allowed values are arrays of "
                                         r"shape \(n_sounds, n_repeats >= 2.*but got shape"):
        noise_ceiling(np.zeros(shape))


def test_lost_frames_are_left_out_voxel_by_voxel():
    """A NaN or inf in one presentation removes that frame from that voxel's reliability only."""
    responses = _responses(8, 2, n_sounds=6, n_frames=5)
    lost = responses.copy()
    lost[1, 0, 2, 0], lost[3, 1, 4, 0] = np.nan, np.inf
    got = split_half_reliability(lost)
    np.testing.assert_array_equal(got[1:], split_half_reliability(responses)[1:])
    keep = np.ones((6, 5), bool)
    keep[1, 2] = keep[3, 4] = False
    a, b = responses[:, 0, :, 0][keep], responses[:, 1, :, 0][keep]
    np.testing.assert_allclose(got[0], np.corrcoef(a, b)[0, 1], rtol=1e-12)


def test_bad_values():
    with pytest.raises(ValueError, match=r"'n_splits'.*integers >= 1, but got 0 instead"):
        split_half_reliability(np.zeros((2, 2, 3, 1)), n_splits=0)
    with pytest.raises(ValueError, match=r"'k' parameter.*numbers > 0, but got -1 instead"):
        spearman_brown(0.5, k=-1)
    with pytest.raises(ValueError, match=r"'r' and 'ceiling'.*but got \(3,\) and \(2,\) instead"):
        normalised_score(np.zeros(3), np.ones(2))
    with pytest.raises(ValueError, match=r"'min_ceiling'.*\(0, 1\], but got 0 instead"):
        normalised_score(np.zeros(2), np.ones(2), min_ceiling=0)
