"""A fixed Gaussian random projection of a layer's features, to make wide layers cheap to encode.

The online ridge factorises a ``d x d`` system per penalty on every trial (``d`` = features x
lags), a cost cubic in ``d``. Projecting each frame's ``n_features`` features onto ``n_components``
random Gaussian directions first keeps, by the Johnson-Lindenstrauss lemma, the inner products
between frames up to an error of about ``sqrt(log(n) / n_components)`` times their norms (``n``
the frames seen), and a ridge's predictions depend on the features only through those inner products (its kernel form),
so ridge on the projected features approximates ridge on the full ones.

The matrix is drawn by scikit-learn's ``GaussianRandomProjection`` from a seed alone, so every
process that asks for the same (n_features, n_components, seed) gets the same matrix: it needs no
place in a checkpoint.
"""
from __future__ import annotations

import numbers

import numpy as np
from sklearn.random_projection import GaussianRandomProjection

from replay.checks import invalid_value

__all__ = ["check_components", "random_projection"]


def check_components(components) -> int:
    """Return ``components`` as an int, or raise a one-line ValueError.

    >>> check_components(-1)
    Traceback (most recent call last):
    ...
    ValueError: Invalid value for the 'components' parameter. Allowed values are integers >= 0 (0: no projection), but got -1 instead.
    """
    if not (isinstance(components, numbers.Integral) and not isinstance(components, bool)
            and components >= 0):
        raise invalid_value("components", "integers >= 0 (0: no projection)", components)
    return int(components)


def random_projection(n_features: int, n_components: int, seed: int) -> np.ndarray | None:
    """The ``(n_components, n_features)`` float64 projection matrix of seed ``seed``, or None when
    there is nothing to reduce (``n_components`` is 0 or ``n_features <= n_components``).

    Its entries are independent ``N(0, 1 / n_components)`` (``GaussianRandomProjection``'s
    ``components_``); features ``X`` (n_frames, n_features) project to ``X @ matrix.T``.

    >>> P = random_projection(6, 2, seed=0)
    >>> P.shape, bool((P == random_projection(6, 2, seed=0)).all())
    ((2, 6), True)
    >>> random_projection(6, 6, seed=0) is None, random_projection(6, 0, seed=0) is None
    (True, True)
    """
    if n_components == 0 or n_features <= n_components:
        return None
    # fit only reads the number of features of its input: one row of zeros is enough.
    grp = GaussianRandomProjection(n_components=n_components, random_state=seed)
    return grp.fit(np.zeros((1, n_features))).components_
