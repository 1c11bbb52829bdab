"""Uncertainty over sounds, from per-sound score statistics (n_sounds, 6, n_voxels).

The score of a set of sounds is the mean over voxels of Pearson r computed from the sum of their
stats (``encoders.scores.pearson_from_stats``). Sounds are the unit of resampling: a resample draws
multinomial counts ``c`` (n_boot, n_sounds) and pools ``c @ stats``, so all resamples are a single
matrix product (chunked to bound memory). Sounds with ``n == 0`` (never scored) are left out.

Replicates and groups:

- replicates of a run with the same voxels (learner seeds) come stacked as
  (n_replicates, n_sounds, 6, n_voxels): the score is the mean over replicates;
- groups with different voxels (subjects) come as a list of such arrays, one per group, all over
  the same sounds: the score is the mean over groups.

Every resample draws the same sounds for every replicate and group (and, in the paired tests,
for both runs).
"""

import numpy as np

from encoders.scores import STAT_NAMES, pearson_from_stats

__all__ = ["score", "bootstrap_ci", "paired_bootstrap", "paired_permutation_test",
           "voxel_p_values", "fdr_bh"]

# Bytes of pooled stats held at once per chunk of resamples.
_CHUNK_BYTES = 64 * 2**20


def _groups(stats, name):
    """``stats`` as a list of float64 arrays (n_reps, n_sounds, 6, n_voxels), checked."""
    groups = list(stats) if isinstance(stats, (list, tuple)) else [stats]
    out = []
    for g in groups:
        g = np.asarray(g, dtype=np.float64)
        if g.ndim == 3:
            g = g[None]
        if g.ndim != 4 or g.shape[2] != len(STAT_NAMES) or g.shape[3] < 1:
            raise ValueError(
                f"Invalid value for the '{name}' parameter. Allowed values are arrays of shape "
                f"([n_replicates,] n_sounds, 6, n_voxels) or lists of them, but got shape "
                f"{g.shape} instead."
            )
        counts = g[:, :, 0, 0]
        partial = (counts > 0).any(0) & ~(counts > 0).all(0)
        if partial.any():
            raise ValueError(
                f"Invalid value for the '{name}' parameter. Allowed values are replicates scored "
                f"on the same sounds, but sounds {np.flatnonzero(partial)[:10].tolist()} are "
                "scored in some replicates only."
            )
        out.append(g)
    if len({g.shape[1] for g in out}) != 1:
        raise ValueError(f"Invalid value for the '{name}' parameter: its groups have different "
                         f"numbers of sounds {[g.shape[1] for g in out]}.")
    return out


def _check(stats, name="stats"):
    """Scored sounds as an (n_scored, width) float64 matrix, the groups' layout [(n_reps,
    n_voxels)], and the mask of scored sounds (scored in any group)."""
    groups = _groups(stats, name)
    scored = np.logical_or.reduce([g[0, :, 0, 0] > 0 for g in groups])
    if not scored.any():
        raise ValueError(
            f"Invalid value for the '{name}' parameter. Allowed values are stats with at least "
            "one scored sound (n > 0), but got none instead."
        )
    mats = [np.moveaxis(g[:, scored], 1, 0).reshape(int(scored.sum()), -1) for g in groups]
    layout = [(g.shape[0], g.shape[3]) for g in groups]
    return np.concatenate(mats, axis=1), layout, scored


def _check_pair(stats_a, stats_b):
    a, layout_a, _ = _check(stats_a, "stats_a")
    b, layout_b, _ = _check(stats_b, "stats_b")
    n_a = [g[..., 0, 0] for g in _groups(stats_a, "stats_a")]
    n_b = [g[..., 0, 0] for g in _groups(stats_b, "stats_b")]
    same = layout_a == layout_b and all(np.array_equal(x, y) for x, y in zip(n_a, n_b))
    if not same:
        raise ValueError(
            "Invalid value for the 'stats_a' and 'stats_b' parameters. Allowed values are stats "
            "of the same sounds, replicates, voxels and frame counts (n), but got layouts "
            f"{layout_a} and {layout_b} with n differing at sounds "
            f"{_differing(n_a, n_b)} instead."
        )
    return a, b, layout_a


def _differing(n_a, n_b):
    if len(n_a) != len(n_b) or any(x.shape != y.shape for x, y in zip(n_a, n_b)):
        return "(count differs)"
    diff = np.logical_or.reduce([np.atleast_2d(x != y).any(axis=0) for x, y in zip(n_a, n_b)])
    return np.flatnonzero(diff)[:10].tolist()


def _pooled_score(pooled, layout):
    """Scores of pooled stats (k, width) -> (k,): mean over groups of the mean over replicates
    of the mean-over-voxels r."""
    pooled = np.atleast_2d(pooled)
    scores, offset = [], 0
    for n_reps, n_voxels in layout:
        width = n_reps * len(STAT_NAMES) * n_voxels
        block = pooled[:, offset:offset + width].reshape(-1, n_reps, len(STAT_NAMES), n_voxels)
        scores.append(pearson_from_stats(block).mean(axis=(-2, -1)))
        offset += width
    return np.mean(scores, axis=0)


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
    X, layout, _ = _check(stats)
    return float(_pooled_score(X.sum(axis=0), layout)[0])


def _boot_scores(mats, n_boot, seed, layout):
    """Scores of each matrix in ``mats`` on the same ``n_boot`` resamples of sounds."""
    rng = np.random.default_rng(seed)
    n_sounds, width = mats[0].shape
    out = [[] for _ in mats]
    for k in _chunks(n_boot, width * 8):
        counts = rng.multinomial(n_sounds, np.full(n_sounds, 1.0 / n_sounds), size=k)
        counts = counts.astype(np.float64)
        for o, m in zip(out, mats):
            o.append(_pooled_score(counts @ m, layout))
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
    X, layout, _ = _check(stats)
    (boot,) = _boot_scores([X], n_boot, seed, layout)
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
    a, b, layout = _check_pair(stats_a, stats_b)
    boot_a, boot_b = _boot_scores([a, b], n_boot, seed, layout)
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
    a, b, layout = _check_pair(stats_a, stats_b)
    rng = np.random.default_rng(seed)
    total_a, total_b, D = a.sum(axis=0), b.sum(axis=0), b - a
    d_obs = abs(score(stats_a) - score(stats_b))
    # Ties count as extreme; the tolerance absorbs rounding between the two ways of pooling.
    threshold = d_obs - 1e-12 * max(1.0, d_obs)
    hits = 0
    for k in _chunks(n_perm, a.shape[1] * 8 * 2):
        shift = rng.integers(0, 2, size=(k, a.shape[0])).astype(np.float64) @ D
        d = _pooled_score(total_a + shift, layout) - _pooled_score(total_b - shift, layout)
        hits += int(np.count_nonzero(np.abs(d) >= threshold))
    return (1 + hits) / (1 + n_perm)


def voxel_p_values(stats, n_boot=1000, seed=0):
    """One-sided bootstrap p-value per voxel that its r is above 0, resampling sounds.

    ``stats`` is one group, (n_sounds, 6, n_voxels) or (n_reps, n_sounds, 6, n_voxels); a voxel's
    r is the mean over replicates. ``p = (1 + #{r_b <= 0}) / (1 + n_boot)`` over the resamples
    ``r_b``. Feed the map to `fdr_bh` for a voxel map corrected for multiple comparisons.

    >>> from encoders.scores import frame_stats
    >>> rng = np.random.default_rng(0)
    >>> O = rng.standard_normal((30, 5, 2))
    >>> P = np.stack([O[:, :, 0] + 0.5 * rng.standard_normal((30, 5)),
    ...               rng.standard_normal((30, 5))], axis=-1)
    >>> p = voxel_p_values(np.stack([frame_stats(a, b) for a, b in zip(P, O)]), n_boot=200)
    >>> bool(p[0] < 0.01), bool(p[1] > 0.01)
    (True, True)
    """
    X, layout, _ = _check(stats)
    if len(layout) != 1:
        raise ValueError("Invalid value for the 'stats' parameter. Allowed values are one group "
                         f"(one voxel set), but got {len(layout)} groups instead.")
    n_reps, n_voxels = layout[0]
    rng = np.random.default_rng(seed)
    n_sounds = X.shape[0]
    at_or_below = np.zeros(n_voxels, dtype=np.int64)
    for k in _chunks(n_boot, X.shape[1] * 8):
        counts = rng.multinomial(n_sounds, np.full(n_sounds, 1.0 / n_sounds), size=k)
        pooled = (counts.astype(np.float64) @ X).reshape(k, n_reps, len(STAT_NAMES), n_voxels)
        r = pearson_from_stats(pooled).mean(axis=1)
        at_or_below += np.count_nonzero(r <= 0, axis=0)
    return (1 + at_or_below) / (1 + n_boot)


def fdr_bh(p_values, alpha=0.05):
    """Benjamini-Hochberg false discovery rate control; any shape -> (rejected, q_values).

    With the ``m`` non-NaN p-values sorted, ``p_(1) <= … <= p_(m)``, the q-value (adjusted
    p-value) of ``p_(i)`` is ``q_(i) = min(1, min_{j >= i} m p_(j) / j)``, and ``rejected`` is
    ``q <= alpha``: the step-up rule that rejects ``p_(1) … p_(k)`` with ``k`` the largest ``i``
    such that ``p_(i) <= i alpha / m``. NaN p-values (untested voxels) are not counted in ``m``,
    not rejected, and get NaN q-values. ``rejected`` is bool, ``q_values`` float64, both shaped
    like ``p_values``.

    >>> rejected, q = fdr_bh([0.01, 0.04, 0.03, 0.2, np.nan])
    >>> rejected.tolist(), np.round(q, 4).tolist()
    ([True, False, False, False, False], [0.04, 0.0533, 0.0533, 0.2, nan])
    """
    p = np.asarray(p_values, dtype=np.float64)
    if not (isinstance(alpha, (int, float, np.integer, np.floating)) and 0 < alpha < 1):
        raise ValueError(
            "Invalid value for the 'alpha' parameter. Allowed values are numbers in (0, 1), but "
            f"got {alpha!r} instead."
        )
    tested = ~np.isnan(p)
    if ((p[tested] < 0) | (p[tested] > 1)).any():
        bad = p[tested][(p[tested] < 0) | (p[tested] > 1)][0]
        raise ValueError(
            "Invalid value for the 'p_values' parameter. Allowed values are numbers in [0, 1] or "
            f"NaN, but got {float(bad)!r} instead."
        )
    flat = p[tested]
    order = np.argsort(flat, kind="stable")
    m = flat.size
    adjusted = flat[order] * m / np.arange(1, m + 1)
    # Running minimum from the largest p down: the step-up part of the procedure.
    adjusted = np.minimum(np.minimum.accumulate(adjusted[::-1])[::-1], 1.0)
    q = np.full(p.shape, np.nan)
    q_tested = np.empty(m)
    q_tested[order] = adjusted
    q[tested] = q_tested
    return tested & (q <= alpha), q
