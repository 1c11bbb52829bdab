"""Prequential scores kept as per-sound sufficient statistics.

Each trial is scored with predictions made before the encoder learned from it. Instead of keeping
predictions, six sums per voxel and per sound are kept, from which Pearson r and R^2 of any set of
trials follow exactly (and the bootstrap over sounds in ``encoders.stats`` too).
"""

import numpy as np

__all__ = ["STAT_NAMES", "frame_stats", "pearson_from_stats", "r2_from_stats", "PrequentialScore"]

STAT_NAMES = ("n", "sum_p", "sum_o", "sum_pp", "sum_oo", "sum_po")

# A centred sum of squares below this fraction of the raw one is rounding noise of a constant.
_RTOL = 1e-10


def frame_stats(P, O):
    """Sums over frames of predictions ``P`` and observations ``O``, both (n_frames, n_voxels).

    Returns a float64 array (6, n_voxels), rows in the order of ``STAT_NAMES``:
    ``n, Σp, Σo, Σp², Σo², Σpo`` (``n`` repeated for every voxel, so sums add up row-wise).

    >>> frame_stats(np.array([[1.0], [2.0]]), np.array([[3.0], [5.0]]))[:, 0].tolist()
    [2.0, 3.0, 8.0, 5.0, 34.0, 13.0]
    """
    P = np.asarray(P, dtype=np.float64)
    O = np.asarray(O, dtype=np.float64)
    if P.ndim != 2 or P.shape != O.shape:
        raise ValueError(
            "Invalid value for the 'P' and 'O' parameters. Allowed values are 2-D arrays of one "
            f"shape (n_frames, n_voxels), but got {P.shape} and {O.shape} instead."
        )
    n = np.full(P.shape[1], float(P.shape[0]))
    return np.stack(
        [n, P.sum(0), O.sum(0), np.einsum("ij,ij->j", P, P), np.einsum("ij,ij->j", O, O),
         np.einsum("ij,ij->j", P, O)]
    )


def _unpack(stats):
    stats = np.asarray(stats, dtype=np.float64)
    if stats.ndim < 2 or stats.shape[-2] != len(STAT_NAMES):
        raise ValueError(
            "Invalid value for the 'stats' parameter. Allowed values are arrays of shape "
            f"(..., 6, n_voxels), but got shape {stats.shape} instead."
        )
    return np.moveaxis(stats, -2, 0)


def pearson_from_stats(stats):
    """Pearson r per voxel from summed stats (..., 6, n_voxels) -> (..., n_voxels).

    ``r = (n Σpo − Σp Σo) / sqrt((n Σpp − Σp²)(n Σoo − Σo²))``.

    Where a variance is zero (a constant prediction, e.g. an encoder that has seen nothing yet, or a
    silent voxel, or no frames) r is undefined; it is set to 0, the r of a predictor that carries no
    information, so that means over voxels stay finite instead of turning NaN.

    >>> s = frame_stats(np.array([[1.0, 1], [2, 1], [3, 1]]), np.array([[2.0, 1], [4, 2], [7, 3]]))
    >>> np.round(pearson_from_stats(s), 3)
    array([0.993, 0.   ])
    """
    n, sp, so, spp, soo, spo = _unpack(stats)
    vp = n * spp - sp * sp
    vo = n * soo - so * so
    ok = (vp > _RTOL * n * spp) & (vo > _RTOL * n * soo)
    den = np.sqrt(np.where(ok, vp * vo, 1.0))
    return np.where(ok, np.clip((n * spo - sp * so) / den, -1.0, 1.0), 0.0)


def r2_from_stats(stats):
    """Coefficient of determination per voxel from summed stats (..., 6, n_voxels).

    ``R² = 1 − SS_res / SS_tot``, ``SS_res = Σoo − 2 Σpo + Σpp``, ``SS_tot = Σoo − Σo²/n``.
    Zero where ``SS_tot`` is zero (constant observation or no frames), as for r. Negative when the
    predictions do worse than the observations' own mean.

    >>> s = frame_stats(np.array([[1.0], [2.0], [3.0]]), np.array([[1.0], [2.0], [4.0]]))
    >>> np.round(r2_from_stats(s), 3)
    array([0.786])
    """
    n, sp, so, spp, soo, spo = _unpack(stats)
    ss_tot = soo - so * so / np.where(n > 0, n, 1.0)
    ss_res = soo - 2.0 * spo + spp
    ok = ss_tot > _RTOL * soo
    return np.where(ok, 1.0 - ss_res / np.where(ok, ss_tot, 1.0), 0.0)


class PrequentialScore:
    """Running prequential score: per-unit stats of every trial scored after a warm-up.

    ``update`` adds a trial's ``frame_stats`` to the row of its unit (a unit, or an event: whatever
    the caller resamples over later) when
    ``trial_index >= warmup``; ``r()`` and ``r2()`` pool all scored frames per voxel.

    Parameters
    ----------
    n_units : int
        Number of units; 0 for a count not known in advance (a live session): the rows grow with
        the highest unit seen, and ``n_units`` is then that unit + 1.
    n_voxels : int
    warmup : int
        Trials with a smaller index are not pooled (the encoder has seen too little).

    Attributes
    ----------
    stats : float64 array (n_units, 6, n_voxels)
    trial_stats : float64 array (6, n_voxels), the sums of the last trial given to ``update``
    n_scored_trials : int

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> score = PrequentialScore(n_units=2, n_voxels=3, warmup=1)
    >>> for trial, unit in enumerate([0, 1, 0]):
    ...     O = rng.standard_normal((5, 3))
    ...     r_trial = score.update(trial, unit, O + 0.5 * rng.standard_normal((5, 3)), O)
    >>> round(r_trial, 2), score.n_scored_trials, np.round(score.r(), 2).tolist()
    (0.94, 2, [0.94, 0.84, 0.88])
    """

    def __init__(self, n_units, n_voxels, warmup=0):
        for name, value, low in (("n_units", n_units, 0), ("n_voxels", n_voxels, 1),
                                 ("warmup", warmup, 0)):
            if not (isinstance(value, (int, np.integer)) and value >= low):
                raise ValueError(
                    f"Invalid value for the '{name}' parameter. Allowed values are integers "
                    f">= {low}, but got {value!r} instead."
                )
        self.n_units, self.n_voxels, self.warmup = int(n_units), int(n_voxels), int(warmup)
        self.growable = self.n_units == 0
        self.stats = np.zeros((self.n_units, len(STAT_NAMES), self.n_voxels))
        self.trial_stats = np.zeros((len(STAT_NAMES), self.n_voxels))
        self.n_scored_trials = 0

    def update(self, trial_index, unit, P, O):
        """Score one trial: ``P``, ``O`` (n_frames, n_voxels). Returns its voxel-mean r (float)."""
        self.check_unit(unit)
        s = frame_stats(P, O)
        if s.shape[1] != self.n_voxels:
            raise ValueError(
                f"Invalid value for the 'O' parameter. Allowed values are arrays with "
                f"{self.n_voxels} voxels, but got {s.shape[1]} instead."
            )
        self.trial_stats = s
        if unit >= self.n_units:  # growable (check_unit let it through): a unit seen has a row
            self._grow(unit + 1)
        if trial_index >= self.warmup:
            self.stats[unit] += s
            self.n_scored_trials += 1
        return float(pearson_from_stats(s).mean())

    def check_unit(self, unit) -> None:
        """Refuse a unit outside [0, n_units) (any unit >= 0 when growable)."""
        if not (isinstance(unit, (int, np.integer)) and 0 <= unit
                and (self.growable or unit < self.n_units)):
            allowed = "integers >= 0" if self.growable else f"integers in [0, {self.n_units})"
            raise ValueError(f"Invalid value for the 'unit' parameter. Allowed values are "
                             f"{allowed}, but got {unit!r} instead.")

    def _grow(self, n_units: int) -> None:
        # Capacity doubles, so a long live session copies its sums O(log n) times, not per trial.
        if n_units > len(self.stats):
            grown = np.zeros((max(n_units, 2 * len(self.stats)),) + self.stats.shape[1:])
            grown[: len(self.stats)] = self.stats
            self.stats = grown
        self.n_units = n_units

    @property
    def unit_stats(self) -> np.ndarray:
        """(n_units, 6, n_voxels): the sums of each unit's scored trials."""
        return self.stats[: self.n_units]

    def r(self):
        """Pearson r per voxel over all scored trials, (n_voxels,)."""
        return pearson_from_stats(self.stats.sum(axis=0))

    def r2(self):
        """R² per voxel over all scored trials, (n_voxels,)."""
        return r2_from_stats(self.stats.sum(axis=0))
