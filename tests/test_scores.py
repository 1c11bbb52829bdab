"""Prequential scores from per-sound sums equal direct computations on the frames."""

import numpy as np
import pytest
from sklearn.metrics import r2_score

from encoders.scores import (
    STAT_NAMES,
    PrequentialScore,
    frame_stats,
    pearson_from_stats,
    r2_from_stats,
)


def _pearson(P, O):
    Pc, Oc = P - P.mean(0), O - O.mean(0)
    return (Pc * Oc).sum(0) / np.sqrt((Pc**2).sum(0) * (Oc**2).sum(0))


def _trial(rng, n_frames=8, n_voxels=5, noise=0.7):
    O = rng.standard_normal((n_frames, n_voxels)).astype(np.float32)
    P = (O + noise * rng.standard_normal(O.shape)).astype(np.float32)
    return P, O


def test_frame_stats_are_the_six_sums():
    rng = np.random.default_rng(0)
    P, O = _trial(rng)
    s = frame_stats(P, O)
    assert s.shape == (len(STAT_NAMES), 5) and s.dtype == np.float64
    P64, O64 = P.astype(np.float64), O.astype(np.float64)
    expected = [np.full(5, 8.0), P64.sum(0), O64.sum(0), (P64**2).sum(0), (O64**2).sum(0),
                (P64 * O64).sum(0)]
    np.testing.assert_allclose(s, np.stack(expected), rtol=1e-12)


def test_pearson_and_r2_from_pooled_stats_equal_direct_values():
    rng = np.random.default_rng(1)
    trials = [_trial(rng, n_frames=n) for n in (5, 8, 11)]
    pooled = sum(frame_stats(P, O) for P, O in trials)
    P = np.concatenate([t[0] for t in trials]).astype(np.float64)
    O = np.concatenate([t[1] for t in trials]).astype(np.float64)
    np.testing.assert_allclose(pearson_from_stats(pooled), _pearson(P, O), rtol=1e-10)
    np.testing.assert_allclose(r2_from_stats(pooled), r2_score(O, P, multioutput="raw_values"),
                               rtol=1e-10)


def test_leading_axes_are_kept():
    rng = np.random.default_rng(2)
    stats = np.stack([frame_stats(*_trial(rng)) for _ in range(4)])  # (4, 6, 5)
    r = pearson_from_stats(stats)
    assert r.shape == (4, 5)
    np.testing.assert_allclose(r[2], pearson_from_stats(stats[2]))
    assert r2_from_stats(stats).shape == (4, 5)


def test_zero_variance_gives_zero_not_nan():
    rng = np.random.default_rng(3)
    O = rng.standard_normal((6, 3))
    P = np.full((6, 3), 0.3)  # a constant prediction, e.g. before the first update
    O[:, 1] = 2.0  # a silent voxel
    assert np.all(pearson_from_stats(frame_stats(P, O)) == 0.0)
    P2 = O + 0.1 * rng.standard_normal(O.shape)
    r = pearson_from_stats(frame_stats(P2, O))
    assert r[1] == 0.0 and r[0] > 0.9
    assert r2_from_stats(frame_stats(P2, O))[1] == 0.0
    assert np.all(pearson_from_stats(np.zeros((6, 3))) == 0.0)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"'P' and 'O' parameters.*\(3, 2\) and \(3, 4\)"):
        frame_stats(np.zeros((3, 2)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"'stats' parameter.*\(\.\.\., 6, n_voxels\).*\(5, 3\)"):
        pearson_from_stats(np.zeros((5, 3)))


def test_prequential_score_pools_trials_after_warmup():
    rng = np.random.default_rng(4)
    score = PrequentialScore(n_units=3, n_voxels=5, warmup=2)
    order = [0, 1, 2, 0, 1, 2, 0]
    trials = [_trial(rng) for _ in order]
    for i, (sound, (P, O)) in enumerate(zip(order, trials)):
        r_trial = score.update(i, sound, P, O)
        assert isinstance(r_trial, float)
        np.testing.assert_allclose(r_trial, _pearson(P.astype(float), O.astype(float)).mean())
    assert score.n_scored_trials == 5
    kept = trials[2:]
    P = np.concatenate([t[0] for t in kept]).astype(np.float64)
    O = np.concatenate([t[1] for t in kept]).astype(np.float64)
    np.testing.assert_allclose(score.r(), _pearson(P, O), rtol=1e-10)
    np.testing.assert_allclose(score.r2(), r2_score(O, P, multioutput="raw_values"), rtol=1e-10)
    # Sound 0 was heard at trials 0, 3, 6 but trial 0 was warm-up: 2 trials of 8 frames.
    np.testing.assert_array_equal(score.stats[:, 0, 0], [16.0, 8.0, 16.0])


def test_prequential_score_rejects_bad_input():
    with pytest.raises(ValueError, match=r"'warmup' parameter.*>= 0, but got -1"):
        PrequentialScore(2, 3, warmup=-1)
    score = PrequentialScore(2, 3)
    with pytest.raises(ValueError, match=r"'unit' parameter.*\[0, 2\), but got 2"):
        score.update(0, 2, np.zeros((4, 3)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"'O' parameter.*3 voxels, but got 4"):
        score.update(0, 1, np.zeros((4, 4)), np.zeros((4, 4)))
    assert score.n_scored_trials == 0 and not score.stats.any()


def test_a_growable_score_equals_one_sized_in_advance():
    rng = np.random.default_rng(5)
    order = [0, 1, 2, 0, 3, 1, 4, 2]
    fixed, growing = PrequentialScore(5, 5, warmup=2), PrequentialScore(0, 5, warmup=2)
    for i, unit in enumerate(order):
        P, O = _trial(rng)
        assert fixed.update(i, unit, P, O) == growing.update(i, unit, P, O)
    assert growing.n_units == 5 and growing.unit_stats.shape == (5, 6, 5)
    np.testing.assert_array_equal(growing.unit_stats, fixed.unit_stats)
    np.testing.assert_array_equal(growing.r(), fixed.r())
    with pytest.raises(ValueError, match=r"'unit' parameter.*integers >= 0, but got -1"):
        growing.update(9, -1, P, O)
