"""Uncertainty over sounds, from per-sound score statistics (n_sounds, 6, n_voxels).

Replicates of a run (learner seeds, subjects with the same voxels) are passed stacked as
(n_replicates, n_sounds, 6, n_voxels): the score is then the mean over replicates of each
replicate's score, and every resample draws the same sounds for all replicates.

The score of a set of sounds is the mean over voxels of Pearson r computed from the sum of their
stats (``encoders.scores.pearson_from_stats``). Sounds are the unit of resampling: a resample draws
multinomial counts ``c`` (n_boot, n_sounds) and pools ``c @ stats``, so all resamples are a single
matrix product (chunked to bound memory). Sounds with ``n == 0`` (never scored) are left out.
"""

import numpy as np

from encoders.scores import STAT_NAMES, pearson_from_stats

__all__ = ["score", "bootstrap_ci", "paired_bootstrap", "paired_permutation_test"]

# Bytes of pooled stats held at once per chunk of resamples.
_CHUNK_BYTES = 64 * 2**20


def _check(stats, name="stats"):
    """Scored sounds of ``stats`` as an (n_scored, n_reps * 6 * n_voxels) float64 matrix, and the
    mask of scored sounds. ``stats`` is (n_sounds, 6, n_voxels) or (n_reps, n_sounds, 6, n_voxels)."""
    stats = np.asarray(stats, dtype=np.float64)
    if stats.ndim == 3:
        stats = stats[None]
    if stats.ndim != 4 or stats.shape[2] != len(STAT_NAMES) or stats.shape[3] < 1:
        raise ValueError(
            f"Invalid value for the '{name}' parameter. Allowed values are arrays of shape "
            f"([n_replicates,] n_sounds, 6, n_voxels), but got shape {stats.shape} instead."
        )
    counts = stats[:, :, 0, 0]
    scored = (counts > 0).all(axis=0)
    if (counts[:, ~scored] > 0).any():
        raise ValueError(
            f"Invalid value for the '{name}' parameter. Allowed values are replicates scored on "
            f"the same sounds, but sounds {np.flatnonzero((counts > 0).any(0) & ~scored)[:10].tolist()} "
            "are scored in some replicates only."
        )
    if not scored.any():
        raise ValueError(
            f"Invalid value for the '{name}' parameter. Allowed values are stats with at least "
            "one scored sound (n > 0), but got none instead."
        )
    return np.moveaxis(stats[:, scored], 1, 0).reshape(int(scored.sum()), -1), scored


def _check_pair(stats_a, stats_b):
    a, scored_a = _check(stats_a, "stats_a")
    b, scored_b = _check(stats_b, "stats_b")
    n_a, n_b = np.asarray(stats_a)[..., 0, 0], np.asarray(stats_b)[..., 0, 0]
    if a.shape[1] != b.shape[1] or n_a.shape != n_b.shape or not np.array_equal(n_a, n_b):
        raise ValueError(
            "Invalid value for the 'stats_a' and 'stats_b' parameters. Allowed values are stats "
            "of the same sounds, replicates, voxels and frame counts (n), but got shapes "
            f"{np.shape(stats_a)} and {np.shape(stats_b)} with n differing at sounds "
            f"{_differing(n_a, n_b)} instead."
        )
    return a, b


def _differing(n_a, n_b):
    if n_a.shape != n_b.shape:
        return "(count differs)"
    return np.flatnonzero(np.atleast_2d(n_a != n_b).any(axis=0))[:10].tolist()


def _pooled_score(pooled, n_voxels):
    """Mean over replicates of mean-over-voxels r: pooled stats (k, n_reps * 6 * n_voxels) -> (k,)."""
    r = pearson_from_stats(pooled.reshape(pooled.shape[0] if pooled.ndim > 1 else 1, -1,
                                          len(STAT_NAMES), n_voxels))
    return r.mean(axis=(-2, -1))


def _chunks(total, row_bytes):
    size = max(1, _CHUNK_BYTES // max(1, row_bytes))
    for start in range(0, total, size):
        yield min(size, total - start)


def _interval(values, level):
    if not 0 < level < 1:
        raise ValueError(
            "Invalid value for the 'level' parameter. Allowed values are numbers in (0, 1), but "
            f"got {level!r} instead."
        )
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def score(stats):
    """Mean over voxels of Pearson r pooled over the scored sounds of ``stats``.

    >>> from encoders.scores import frame_stats
    >>> P = np.array([[1.0, 1], [2, 3], [3, 2]])
    >>> round(score(frame_stats(P, P + [[0, 1], [0, 0], [0, 0]])[None]), 3)  # (1 + 0.866) / 2
    0.933
    """
    X, _ = _check(stats)
    return float(_pooled_score(X.sum(axis=0)[None], np.shape(stats)[-1])[0])


def _boot_scores(mats, n_boot, seed, n_voxels):
    """Scores of each matrix in ``mats`` on the same ``n_boot`` resamples of sounds."""
    rng = np.random.default_rng(seed)
    n_sounds, width = mats[0].shape
    out = [[] for _ in mats]
    for k in _chunks(n_boot, width * 8):
        counts = rng.multinomial(n_sounds, np.full(n_sounds, 1.0 / n_sounds), size=k)
        counts = counts.astype(np.float64)
        for o, m in zip(out, mats):
            o.append(_pooled_score(counts @ m, n_voxels))
    return [np.concatenate(o) for o in out]


def bootstrap_ci(stats, n_boot=1000, seed=0, level=0.95):
    """Percentile bootstrap interval of ``score(stats)``, resampling sounds with replacement.

    >>> from encoders.scores import frame_stats
    >>> rng = np.random.default_rng(0)
    >>> O = rng.standard_normal((30, 5, 4))
    >>> stats = np.stack([frame_stats(o + rng.standard_normal(o.shape), o) for o in O])
    >>> low, high = bootstrap_ci(stats)
    >>> bool(low < score(stats) < high)
    True
    """
    X, _ = _check(stats)
    (boot,) = _boot_scores([X], n_boot, seed, np.shape(stats)[-1])
    return _interval(boot, level)


def paired_bootstrap(stats_a, stats_b, n_boot=1000, seed=0, level=0.95):
    """``delta = score(a) − score(b)`` and its bootstrap interval; both runs share each resample.

    Sharing resamples cancels what the runs have in common (sounds easy or hard for both), so the
    interval of the difference is narrower than the two separate intervals suggest.

    >>> from encoders.scores import frame_stats
    >>> rng = np.random.default_rng(0)
    >>> O = rng.standard_normal((30, 5, 4))
    >>> a = np.stack([frame_stats(o + 0.5 * rng.standard_normal(o.shape), o) for o in O])
    >>> b = np.stack([frame_stats(o + 2.0 * rng.standard_normal(o.shape), o) for o in O])
    >>> delta, (low, high) = paired_bootstrap(a, b)
    >>> bool(0 < low < delta < high)
    True
    """
    a, b = _check_pair(stats_a, stats_b)
    boot_a, boot_b = _boot_scores([a, b], n_boot, seed, np.shape(stats_a)[-1])
    delta = score(stats_a) - score(stats_b)
    return delta, _interval(boot_a - boot_b, level)


def paired_permutation_test(stats_a, stats_b, n_perm=1000, seed=0):
    """Two-sided p-value of ``score(a) − score(b)`` under exchangeability of runs per sound.

    Each permutation swaps the stats of a and b for a random half of the sounds (a sign flip of
    the pairing): with ``m`` in {0, 1}^n_sounds and ``D = b − a``, pooled ``A = Σa + m D``,
    ``B = Σb − m D``. ``p = (1 + #{|d_perm| >= |d_obs|}) / (1 + n_perm)``.

    >>> from encoders.scores import frame_stats
    >>> rng = np.random.default_rng(0)
    >>> O = rng.standard_normal((30, 5, 4))
    >>> a = np.stack([frame_stats(o + 0.5 * rng.standard_normal(o.shape), o) for o in O])
    >>> round(paired_permutation_test(a, a), 3)
    1.0
    """
    a, b = _check_pair(stats_a, stats_b)
    n_voxels = np.shape(stats_a)[-1]
    rng = np.random.default_rng(seed)
    total_a, total_b, D = a.sum(axis=0), b.sum(axis=0), b - a
    d_obs = abs(score(stats_a) - score(stats_b))
    # Ties count as extreme; the tolerance absorbs rounding between the two ways of pooling.
    threshold = d_obs - 1e-12 * max(1.0, d_obs)
    hits = 0
    for k in _chunks(n_perm, a.shape[1] * 8 * 2):
        shift = rng.integers(0, 2, size=(k, a.shape[0])).astype(np.float64) @ D
        d = _pooled_score(total_a + shift, n_voxels) - _pooled_score(total_b - shift, n_voxels)
        hits += int(np.count_nonzero(np.abs(d) >= threshold))
    return (1 + hits) / (1 + n_perm)
