"""Orders in which a session's events are replayed."""
from __future__ import annotations

import numpy as np

from .checks import check_choice

ORDERS = ("recorded", "shuffled", "reversed")


def check_order(order: str) -> str:
    """Return ``order`` if it is a known ordering, else raise a one-line ValueError."""
    return check_choice("order", order, ORDERS)


def event_order(n_events: int, order: str = "recorded", seed: int = 0) -> np.ndarray:
    """Indices of the recorded events in replay order.

    ``shuffled`` is a seeded permutation, so every run with the same seed replays the same order.

    >>> event_order(4, "reversed").tolist()
    [3, 2, 1, 0]
    >>> sorted(event_order(4, "shuffled", seed=1).tolist())
    [0, 1, 2, 3]
    """
    check_order(order)
    if order == "recorded":
        return np.arange(n_events)
    if order == "reversed":
        return np.arange(n_events)[::-1].copy()
    return np.random.default_rng(seed).permutation(n_events)
