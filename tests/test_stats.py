"""Bootstrap and permutation over sounds from per-sound score statistics."""

import numpy as np
import pytest

from encoders.scores import frame_stats, pearson_from_stats
from encoders.stats import (bootstrap_ci, fdr_bh, paired_bootstrap, paired_permutation_test,
                            score)


def _runs(seed, n_sounds=40, n_voxels=10, n_frames=10, noise_a=1.0, noise_b=1.0):
    """Per-sound stats of two runs predicting the same observations.

    Sounds differ in difficulty (the gain of the evoked response, shared by both runs), so the
    runs' scores rise and fall together from sound to sound.
    """
    rng = np.random.default_rng(seed)
    gain = rng.uniform(0.1, 2.0, size=(n_sounds, 1, 1))
    S = gain * rng.standard_normal((n_sounds, n_frames, n_voxels))
    O = S + rng.standard_normal(S.shape)
    P_a = S + noise_a * rng.standard_normal(S.shape)
    P_b = S + noise_b * rng.standard_normal(S.shape)
    a = np.stack([frame_stats(p, o) for p, o in zip(P_a, O)])
    b = np.stack([frame_stats(p, o) for p, o in zip(P_b, O)])
    return a, b


def test_score_is_mean_voxel_r_of_pooled_sounds_and_skips_unscored():
    a, _ = _runs(0)
    assert score(a) == pytest.approx(pearson_from_stats(a.sum(0)).mean(), rel=1e-12)
    padded = np.concatenate([np.zeros((3, *a.shape[1:])), a])
    assert score(padded) == pytest.approx(score(a), rel=1e-12)
    # Unscored sounds are not resampled either: the same draws give the same interval.
    assert bootstrap_ci(padded, n_boot=200) == bootstrap_ci(a, n_boot=200)


def test_bootstrap_contains_estimate_and_narrows_with_more_sounds():
    few, _ = _runs(1, n_sounds=15)
    many, _ = _runs(1, n_sounds=240)
    widths = []
    for stats in (few, many):
        low, high = bootstrap_ci(stats, n_boot=500, seed=3)
        assert low < score(stats) < high
        widths.append(high - low)
    assert widths[1] < 0.5 * widths[0]
    assert bootstrap_ci(few, n_boot=500, seed=3, level=0.5)[1] - bootstrap_ci(
        few, n_boot=500, seed=3, level=0.5)[0] < widths[0]


def test_chunked_resamples_match_one_chunk(monkeypatch):
    import encoders.stats as st

    a, b = _runs(2)
    whole = paired_bootstrap(a, b, n_boot=300, seed=5)
    p_whole = paired_permutation_test(a, b, n_perm=300, seed=5)
    monkeypatch.setattr(st, "_CHUNK_BYTES", a[0].nbytes * 7)  # several small chunks
    np.testing.assert_allclose(paired_bootstrap(a, b, n_boot=300, seed=5)[1], whole[1])
    assert paired_permutation_test(a, b, n_perm=300, seed=5) == p_whole


def test_paired_interval_narrower_than_unpaired():
    a, b = _runs(4, n_sounds=60, noise_a=0.8, noise_b=1.0)
    delta, (low, high) = paired_bootstrap(a, b, n_boot=1000, seed=0)
    assert delta == pytest.approx(score(a) - score(b), rel=1e-12)
    assert low < delta < high
    wa = np.subtract(*bootstrap_ci(a, n_boot=1000, seed=1)[::-1])
    wb = np.subtract(*bootstrap_ci(b, n_boot=1000, seed=2)[::-1])
    # Independent intervals: the difference would spread about sqrt(wa^2 + wb^2) (< wa + wb).
    assert high - low < 0.5 * np.hypot(wa, wb)


def test_permutation_detects_a_planted_difference():
    a, b = _runs(5, n_sounds=30, noise_a=0.5, noise_b=1.5)
    p = paired_permutation_test(a, b, n_perm=1000, seed=0)
    assert p < 0.01
    assert p >= 1 / 1001  # the observed statistic counts as one permutation
    assert paired_permutation_test(b, a, n_perm=1000, seed=0) == p  # two-sided


def test_permutation_is_calibrated_under_the_null():
    p_values = []
    for seed in range(20):
        a, b = _runs(100 + seed, n_sounds=20, n_voxels=5)
        p_values.append(paired_permutation_test(a, b, n_perm=200, seed=seed))
    p_values = np.array(p_values)
    assert p_values[0] > 0.05
    assert np.mean(p_values < 0.05) <= 0.15
    assert 0.3 < np.mean(p_values) < 0.7
    assert np.mean(p_values > 0.5) >= 0.25  # spread, not piled up at one end


def test_identical_runs_give_zero_delta_and_p_one():
    a, _ = _runs(6)
    delta, (low, high) = paired_bootstrap(a, a.copy())
    assert delta == 0.0 and low == 0.0 and high == 0.0
    assert paired_permutation_test(a, a.copy(), n_perm=100) == 1.0


def test_runs_must_score_the_same_sounds():
    a, b = _runs(7, n_sounds=6)
    b[2] = 0.0  # sound 2 never scored in run b
    with pytest.raises(ValueError, match=r"same sounds.*n differing at sounds \[2\]"):
        paired_bootstrap(a, b)
    with pytest.raises(ValueError, match=r"same sounds.*differing"):
        paired_permutation_test(a, b[:5])
    with pytest.raises(ValueError, match=r"'stats' parameter.*at least one scored sound"):
        score(np.zeros((3, 6, 2)))
    with pytest.raises(ValueError, match=r"'stats' parameter.*n_sounds, 6, n_voxels\)"):
        bootstrap_ci(a[0])
    with pytest.raises(ValueError, match=r"'level' parameter.*\(0, 1\), but got 95"):
        bootstrap_ci(a, level=95)


def test_replicates_average_scores_and_share_resamples():
    a, b = _runs(3, n_sounds=20)
    c, d = _runs(4, n_sounds=20)
    reps = np.stack([a, c])
    assert score(reps) == pytest.approx((score(a) + score(c)) / 2)
    low, high = bootstrap_ci(reps)
    assert low < score(reps) < high
    delta, _ = paired_bootstrap(reps, np.stack([b, d]))
    assert delta == pytest.approx(score(reps) - score(np.stack([b, d])))
    partial = reps.copy()
    partial[1, 5] = 0.0  # sound 5 scored in one replicate only
    with pytest.raises(ValueError, match=r"scored in some replicates only"):
        score(partial)


def test_groups_with_different_voxels_average_their_scores():
    a, b = _runs(5, n_sounds=20, n_voxels=10)
    c, d = _runs(6, n_sounds=20, n_voxels=7)
    assert score([a, c]) == pytest.approx((score(a) + score(c)) / 2)
    low, high = bootstrap_ci([a, c])
    assert low < score([a, c]) < high
    delta, (low, high) = paired_bootstrap([a, c], [b, d])
    assert delta == pytest.approx(score([a, c]) - score([b, d]))
    assert paired_permutation_test([a, c], [a, c]) == 1.0
    with pytest.raises(ValueError, match="same sounds, replicates, voxels"):
        paired_bootstrap([a, c], [b])


def test_fdr_bh_hand_computed_step_up():
    p = np.array([0.001, 0.008, 0.039, 0.041, 0.042, 0.060, 0.074, 0.205, np.nan])
    # q_(i) = min over j >= i of m p_(j) / j with m = 8 (the NaN is not counted):
    # 8 p / i = .008 .032 .104 .082 .0672 .08 .08457 .205, then the running minimum from the right.
    q_expected = [0.008, 0.032, 0.0672, 0.0672, 0.0672, 0.08, 0.592 / 7, 0.205, np.nan]
    rejected, q = fdr_bh(p)
    np.testing.assert_allclose(q, q_expected, rtol=1e-12)
    assert rejected.tolist() == [True, True] + [False] * 7
    # At 0.07 the step-up rejects p = 0.039 too, whose own 8 p / 3 = 0.104 exceeds alpha:
    # the largest i with p_(i) <= 0.07 i / 8 is 5.
    assert fdr_bh(p, alpha=0.07)[0].tolist() == [True] * 5 + [False] * 4
    shuffled = np.random.default_rng(0).permutation(9)
    np.testing.assert_allclose(fdr_bh(p[shuffled])[1], np.array(q_expected)[shuffled])


def test_fdr_bh_matches_scipy_any_shape():
    from scipy.stats import false_discovery_control

    rng = np.random.default_rng(0)
    p = np.concatenate([rng.uniform(size=150), rng.uniform(0, 0.002, size=50)])
    p = rng.permutation(p).reshape(20, 10)
    rejected, q = fdr_bh(p, alpha=0.05)
    assert q.shape == rejected.shape == (20, 10) and rejected.dtype == bool
    np.testing.assert_allclose(q.ravel(), false_discovery_control(p.ravel(), method="bh"),
                               rtol=1e-12)
    assert np.array_equal(rejected, q <= 0.05)
    assert 50 <= rejected.sum() < 60
    p_nan = p.copy()
    p_nan[0] = np.nan
    rejected, q = fdr_bh(p_nan)
    assert np.isnan(q[0]).all() and not rejected[0].any()
    np.testing.assert_allclose(q[1:].ravel(), false_discovery_control(p[1:].ravel()), rtol=1e-12)


def test_fdr_bh_bad_values():
    with pytest.raises(ValueError, match=r"'alpha' parameter.*\(0, 1\), but got 1.5 instead"):
        fdr_bh([0.1], alpha=1.5)
    with pytest.raises(ValueError, match=r"'p_values'.*\[0, 1\] or NaN, but got 1.2 instead"):
        fdr_bh([0.1, 1.2])


def test_voxel_p_values_find_the_voxels_that_carry_signal():
    from encoders.scores import frame_stats
    from encoders.stats import fdr_bh, voxel_p_values

    rng = np.random.default_rng(7)
    n_sounds, n_frames, n_voxels, n_signal = 40, 6, 50, 10
    O = rng.standard_normal((n_sounds, n_frames, n_voxels))
    P = rng.standard_normal(O.shape)
    P[..., :n_signal] = O[..., :n_signal] + rng.standard_normal((n_sounds, n_frames, n_signal))
    stats = np.stack([frame_stats(p, o) for p, o in zip(P, O)])
    p = voxel_p_values(stats, n_boot=400, seed=0)
    assert (p[:n_signal] < 0.01).all()
    rejected, _ = fdr_bh(p, alpha=0.05)
    assert rejected[:n_signal].all() and rejected[n_signal:].sum() <= 2
    assert np.array_equal(voxel_p_values(np.stack([stats, stats]), n_boot=400), p)  # replicates
    with pytest.raises(ValueError, match="one group"):
        voxel_p_values([stats, stats])
