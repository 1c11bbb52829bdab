"""Noise ceiling per voxel from repeated presentations of the same sounds.

The prequential score correlates predictions with *single* presentations, so the ceiling is the
highest correlation any prediction can reach with one presentation. With ``y_j = s + e_j`` (the
same evoked signal ``s`` in every presentation ``j``, independent noise ``e_j``), a prediction
``p`` independent of the noise has ``corr(p, y) = corr(p, s) sd(s) / sd(y) <= sqrt(r_single)``,
where ``r_single = corr(y_1, y_2) = var(s) / (var(s) + var(e))`` is the correlation between two
single presentations; equality holds for ``p = s``. ``r_single`` comes from split-half
reliability: the correlation of the averages of two halves, brought back to one presentation by
inverting Spearman-Brown.
"""

import itertools
from math import comb

import numpy as np

from encoders.scores import frame_stats, pearson_from_stats

__all__ = ["CEILING_FORMULA", "split_half_reliability", "spearman_brown", "noise_ceiling",
           "normalised_score"]

CEILING_FORMULA = (
    "ceiling = sqrt(max(r_single, 0)), r_single = r_half / (h - (h - 1) r_half) (Spearman-Brown "
    "inverted from h presentations to one), h = floor(n_repeats / 2), r_half = mean over splits "
    "of the Pearson r per voxel, over all sounds' frames concatenated, between the averages of "
    "two disjoint halves of h presentations each (every split when there are at most n_splits, "
    "else n_splits seeded random ones; with an odd n_repeats each split leaves one out); "
    "normalised r = r / ceiling, NaN where ceiling < min_ceiling"
)


def _check_responses(responses):
    responses = np.asarray(responses, dtype=np.float64)
    if responses.ndim != 4 or responses.shape[1] < 2 or 0 in responses.shape:
        raise ValueError(
            "Invalid value for the 'responses' parameter. Allowed values are arrays of shape "
            "(n_sounds, n_repeats >= 2, n_frames, n_voxels) with no empty axis, but got shape "
            f"{responses.shape} instead."
        )
    return responses


def _finite_stats(a, b):
    """`frame_stats` of the rows where both ``a`` and ``b`` are finite, voxel by voxel: a frame
    lost (NaN, inf) in any presentation leaves that frame out of the voxel's reliability."""
    valid = np.isfinite(a) & np.isfinite(b)
    stats = frame_stats(np.where(valid, a, 0.0), np.where(valid, b, 0.0))
    stats[0] = valid.sum(axis=0)
    return stats


def _splits(n_repeats, n_splits, seed):
    """Pairs of index arrays, two disjoint halves of ``n_repeats // 2`` presentations each."""
    h = n_repeats // 2
    n_distinct = comb(n_repeats, h) * comb(n_repeats - h, h) // 2
    if n_distinct <= n_splits:
        # Every split once; the lowest kept presentation goes to the first half so that no split
        # appears twice with its halves swapped.
        splits = []
        for kept in itertools.combinations(range(n_repeats), 2 * h):
            for rest in itertools.combinations(kept[1:], h - 1):
                first = (kept[0], *rest)
                splits.append((list(first), [j for j in kept if j not in first]))
        return splits
    rng = np.random.default_rng(seed)
    return [(order[:h], order[h:2 * h]) for order in
            (rng.permutation(n_repeats) for _ in range(n_splits))]


def split_half_reliability(responses, seed=0, n_splits=20):
    """Split-half reliability per voxel, (n_sounds, n_repeats, n_frames, n_voxels) -> (n_voxels,).

    ``r_half`` is the Pearson r per voxel, over all sounds' frames concatenated, between the
    averages of two disjoint halves of ``h = n_repeats // 2`` presentations, averaged over splits:
    every distinct split when there are at most ``n_splits`` of them (two repeats: the one split
    ``0`` vs ``1``; four: three splits), else ``n_splits`` random splits drawn with ``seed``. With
    an odd ``n_repeats`` each split leaves one presentation out, so both halves average ``h`` and
    ``spearman_brown(r_half, 1 / h)`` is exact. A constant half gives r = 0
    (``encoders.scores.pearson_from_stats``). Returns float64.

    >>> rng = np.random.default_rng(0)
    >>> s = rng.standard_normal((20, 1, 50, 2))
    >>> responses = s + rng.standard_normal((20, 2, 50, 2))  # signal-to-noise ratio 1: r = 0.5
    >>> np.round(split_half_reliability(responses), 2)
    array([0.5 , 0.49])
    """
    responses = _check_responses(responses)
    if not (isinstance(n_splits, (int, np.integer)) and n_splits >= 1):
        raise ValueError(
            "Invalid value for the 'n_splits' parameter. Allowed values are integers >= 1, but "
            f"got {n_splits!r} instead."
        )
    n_sounds, n_repeats, n_frames, n_voxels = responses.shape
    r = np.zeros(n_voxels)
    splits = _splits(n_repeats, n_splits, seed)
    for first, second in splits:
        a = responses[:, first].mean(axis=1).reshape(n_sounds * n_frames, n_voxels)
        b = responses[:, second].mean(axis=1).reshape(n_sounds * n_frames, n_voxels)
        r += pearson_from_stats(_finite_stats(a, b))
    return r / len(splits)


def spearman_brown(r, k=2):
    """Reliability of an average of ``k`` measurements, each of reliability ``r``; any shape.

    ``r_k = k r / (1 + (k − 1) r)``. ``k`` is any number > 0: ``spearman_brown(r_k, 1 / k)``
    returns ``r``, so ``k < 1`` goes from an average back to one measurement.

    The formula assumes ``r >= 0`` (parallel measurements); a negative estimate is noise around
    0. To stay finite and within correlations, ``r`` is clipped to [-1, 1] first and the result to
    [-1, 1]; for ``k > 1`` and ``r <= -1 / (k − 1)`` (the pole and beyond, where the formula
    changes sign) the result is -1, its limit from above. So the inverse holds exactly for
    ``r >= -1 / (2k − 1)``, and ``r >= 0`` maps to [0, 1]. NaN stays NaN.

    >>> spearman_brown(np.array([0.5, 0.0, -0.8]), k=2).tolist()
    [0.6666666666666666, 0.0, -1.0]
    >>> round(float(spearman_brown(spearman_brown(0.3, k=4), k=1 / 4)), 12)
    0.3
    """
    if not (isinstance(k, (int, float, np.integer, np.floating)) and np.isfinite(k) and k > 0):
        raise ValueError(
            "Invalid value for the 'k' parameter. Allowed values are finite numbers > 0, but got "
            f"{k!r} instead."
        )
    r = np.clip(np.asarray(r, dtype=np.float64), -1.0, 1.0)
    den = 1.0 + (k - 1.0) * r
    past_pole = den <= 0.0
    out = k * r / np.where(past_pole, 1.0, den)
    return np.where(past_pole, -1.0, np.clip(out, -1.0, 1.0))


def noise_ceiling(responses, seed=0, n_splits=20):
    """Ceiling on the Pearson r of a prediction with single presentations, per voxel.

    ``ceiling = sqrt(max(r_single, 0))`` with ``r_single = spearman_brown(r_half, 1 / h)``,
    ``r_half = split_half_reliability(responses, seed, n_splits)``, ``h = n_repeats // 2``
    (two repeats: ``r_single = r_half``); ``CEILING_FORMULA`` says it in one line. With signal of
    variance 1 and noise of variance ``1 / snr`` the ceiling is ``sqrt(snr / (1 + snr))``.

    (n_sounds, n_repeats, n_frames, n_voxels) -> (n_voxels,) float64.

    >>> rng = np.random.default_rng(0)
    >>> s = rng.standard_normal((20, 1, 50, 2))
    >>> responses = s + rng.standard_normal((20, 4, 50, 2))  # snr 1: sqrt(1 / 2) = 0.71
    >>> np.round(noise_ceiling(responses), 2)
    array([0.72, 0.7 ])
    """
    responses = _check_responses(responses)
    h = responses.shape[1] // 2
    r_single = spearman_brown(split_half_reliability(responses, seed, n_splits), 1.0 / h)
    return np.sqrt(np.maximum(r_single, 0.0))


def normalised_score(r, ceiling, min_ceiling=0.1):
    """``r / ceiling`` per voxel: r (..., n_voxels), ceiling (n_voxels,) -> (normalised, count).

    Voxels whose ceiling is below ``min_ceiling`` (or NaN) are excluded: dividing by a ceiling near
    0 turns noise into huge ratios, so their normalised score is NaN and the count (int) says how
    many; average the rest with ``np.nanmean``. A normalised score can exceed 1 where the
    ceiling is underestimated by chance. Returns float64.

    >>> normalised, n_excluded = normalised_score([0.3, 0.2, 0.1], [0.6, 0.05, 0.5])
    >>> normalised.tolist(), n_excluded
    ([0.5, nan, 0.2], 1)
    """
    r = np.asarray(r, dtype=np.float64)
    ceiling = np.asarray(ceiling, dtype=np.float64)
    if ceiling.ndim != 1 or r.ndim < 1 or r.shape[-1] != ceiling.shape[0]:
        raise ValueError(
            "Invalid value for the 'r' and 'ceiling' parameters. Allowed values are arrays of "
            f"shapes (..., n_voxels) and (n_voxels,), but got {r.shape} and {ceiling.shape} "
            "instead."
        )
    if not (isinstance(min_ceiling, (int, float, np.integer, np.floating)) and
            0 < min_ceiling <= 1):
        raise ValueError(
            "Invalid value for the 'min_ceiling' parameter. Allowed values are numbers in (0, 1], "
            f"but got {min_ceiling!r} instead."
        )
    kept = ceiling >= min_ceiling  # False for NaN too
    normalised = np.where(kept, r / np.where(kept, ceiling, 1.0), np.nan)
    return normalised, int(np.count_nonzero(~kept))
