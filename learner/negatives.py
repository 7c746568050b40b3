"""The one training-negative sampler every strategy uses (DESIGN.md, "Training negatives")."""
from __future__ import annotations

import numpy as np

from learner.history import History

_MAX_ROUNDS = 64


def sample_training_negatives(history: History, n_items: int, users: np.ndarray,
                              rng: np.random.Generator) -> np.ndarray:
    """One negative per row: uniform over the items known so far, not in the user's history.

    Vectorised rejection sampling: draw for every row, redraw only the rows that hit the
    user's history. A user who has seen (nearly) every item falls back to an exact draw
    from the complement; one who has seen all items keeps a uniform draw (counted by
    nobody: it cannot happen with the catalogues we replay, and the loss stays defined).
    """
    users = users.astype(np.int64)
    neg = rng.integers(0, n_items, size=len(users), dtype=np.int64)
    bad = np.flatnonzero(history.contains(users, neg))
    for _ in range(_MAX_ROUNDS):
        if len(bad) == 0:
            return neg
        neg[bad] = rng.integers(0, n_items, size=len(bad), dtype=np.int64)
        bad = bad[history.contains(users[bad], neg[bad])]
    for row in bad:
        _, seen = history.user_items(users[row : row + 1])
        free = np.setdiff1d(np.arange(n_items), seen, assume_unique=False)
        if len(free):
            neg[row] = free[rng.integers(0, len(free))]
    return neg
