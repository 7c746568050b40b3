"""The one training-negative sampler every strategy uses (docs/architecture.md, "Training and evaluation negatives")."""

from __future__ import annotations

import numpy as np

from learner.history import History, pair_keys

_MAX_ROUNDS = 64


def sample_training_negatives(
    history: History, n_items: int, users: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
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


def period_negatives(users: np.ndarray, items: np.ndarray):
    """A sampler of negatives from one period's own items, none of which the row's user
    interacted with in that period: the authors' rule for training the SML transfer
    (`TR_sample_type='alone'` in their data/dataset2.py).

    Items the period never shows (for news: nearly every older article) are never its
    negatives, so the transfer is not rewarded for pushing them ever further from the users.
    """
    pool = np.unique(items.astype(np.int64))
    pairs = np.unique(pair_keys(users, items))

    def seen(rows: np.ndarray, neg: np.ndarray) -> np.ndarray:
        keys = pair_keys(rows, neg)
        pos = np.minimum(np.searchsorted(pairs, keys), len(pairs) - 1)
        return pairs[pos] == keys

    def sample(rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        rows = rows.astype(np.int64)
        neg = pool[rng.integers(0, len(pool), size=len(rows))]
        bad = np.flatnonzero(seen(rows, neg))
        for _ in range(_MAX_ROUNDS):
            if len(bad) == 0:
                return neg
            neg[bad] = pool[rng.integers(0, len(pool), size=len(bad))]
            bad = bad[seen(rows[bad], neg[bad])]
        for row in bad:  # a user who took nearly every item of the period: draw exactly
            free = pool[~seen(np.full(len(pool), rows[row]), pool)]
            if len(free):  # one who took all of them keeps a draw among them
                neg[row] = free[rng.integers(0, len(free))]
        return neg

    return sample
