"""Orders in which a session's events are replayed."""
from __future__ import annotations

import numpy as np

from .checks import check_choice

ORDERS = ("recorded", "shuffled", "reversed", "blocked")


def check_order(order: str) -> str:
    """Return ``order`` if it is a known ordering, else raise a one-line ValueError."""
    return check_choice("order", order, ORDERS)


def event_order(n_events: int, order: str = "recorded", seed: int = 0, categories=None) -> np.ndarray:
    """Indices of the recorded events in replay order.

    ``shuffled`` is a seeded permutation, so every run with the same seed replays the same order.
    ``blocked`` groups the events by the category of their sound (``categories``, one label per
    event): the blocks come in a seeded order, events keep their recorded order within a block.

    >>> event_order(4, "reversed").tolist()
    [3, 2, 1, 0]
    >>> sorted(event_order(4, "shuffled", seed=1).tolist())
    [0, 1, 2, 3]
    >>> event_order(5, "blocked", seed=0, categories=["a", "b", "a", "c", "b"]).tolist()
    [3, 0, 2, 1, 4]
    """
    check_order(order)
    if order == "recorded":
        return np.arange(n_events)
    if order == "reversed":
        return np.arange(n_events)[::-1].copy()
    rng = np.random.default_rng(seed)
    if order == "shuffled":
        return rng.permutation(n_events)
    if categories is None or len(categories) != n_events:
        raise ValueError("the 'blocked' order needs one category label per event")
    labels = np.asarray(categories)
    blocks = sorted(set(labels.tolist()))
    if len(blocks) < 2:
        raise ValueError(f"the 'blocked' order needs sounds of at least two categories, but every "
                         f"sound is {blocks[0]!r}")
    return np.concatenate([np.flatnonzero(labels == blocks[b]) for b in rng.permutation(len(blocks))])
