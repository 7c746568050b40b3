"""Evaluation candidates of the SML protocol (docs/architecture.md, "Training and evaluation negatives").

For each interaction (u, i) of a period, in sorted order: up to 999 distinct negatives,
drawn uniformly from the items seen up to and including that interaction, none in u's
history up to and including it. Drawn once per period and shared by every strategy.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numba
import numpy as np

from learner.history import History, key_items, pair_keys, user_ranges


@dataclass
class Candidates:
    negatives: np.ndarray  # (rows, n_negatives) item codes, -1 where fewer were eligible
    counts: np.ndarray  # (rows,) valid negatives per row


class _PeriodPairs:
    """The period's own (user, item) pairs with the position where each first occurs."""

    def __init__(self, history: History, users: np.ndarray, items: np.ndarray) -> None:
        keys, first = np.unique(pair_keys(users, items), return_index=True)
        fresh = ~history.contains_keys(keys)  # pairs already in history are covered there
        self.keys, self.first = keys[fresh], first[fresh]


# Rows sampled together. Fixed, not a setting: the random numbers a row gets depend on its
# chunk, and the negatives must be the same in every run and export with the same seed.
CHUNK_ROWS = 512


@dataclass
class HistoryChunk:
    """Rows lo..hi of a period with what the protocol allows as candidates for each."""

    lo: int
    hi: int
    seen: np.ndarray  # seen[r, i]: item i is in the history of row lo + r up to and including it
    pool: np.ndarray  # items 0..pool[r]-1 are the ones seen up to and including row lo + r
    eligible: np.ndarray  # pool minus the user's history, per row


def history_chunks(
    history: History, users: np.ndarray, items: np.ndarray, n_items_before: int, chunk_rows: int = CHUNK_ROWS
) -> Iterator[HistoryChunk]:
    """The period's rows in chunks, each with its history bitmap (valid until the next chunk)."""
    n = len(users)
    if n == 0:
        return
    pool = np.maximum.accumulate(np.maximum(items.astype(np.int64) + 1, n_items_before))
    period = _PeriodPairs(history, users, items)
    seen = np.zeros((min(chunk_rows, n), int(pool[-1])), dtype=bool)  # reused, cleared after use
    for lo in range(0, n, chunk_rows):
        hi = min(n, lo + chunk_rows)
        rows, cols = _mark_history(seen, history, period, users[lo:hi], np.arange(lo, hi))
        yield HistoryChunk(lo, hi, seen, pool[lo:hi], pool[lo:hi] - np.bincount(rows, minlength=hi - lo))
        seen[rows, cols] = False


def sample_eval_candidates(
    history: History,
    users: np.ndarray,
    items: np.ndarray,
    n_items_before: int,
    n_negatives: int,
    rng: np.random.Generator,
) -> Candidates:
    """`history` holds the periods before this one; users/items are this period's codes."""
    out = np.full((len(users), n_negatives), -1, dtype=np.int64)
    counts = np.zeros(len(users), dtype=np.int64)
    for c in history_chunks(history, users, items, n_items_before):
        _fill_chunk(out[c.lo : c.hi], counts[c.lo : c.hi], c.seen, c.pool, c.eligible, n_negatives, rng)
    return Candidates(out, counts)


def _mark_history(
    seen: np.ndarray, history: History, period: _PeriodPairs, users: np.ndarray, positions: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Set seen[r, item] for the history of users[r] up to and including positions[r]."""
    rows_h, pos_h = user_ranges(history.keys, users)
    rows_p, pos_p = user_ranges(period.keys, users)
    keep = period.first[pos_p] <= positions[rows_p]
    rows = np.concatenate([rows_h, rows_p[keep]])
    cols = np.concatenate([key_items(history.keys[pos_h]), key_items(period.keys[pos_p[keep]])])
    seen[rows, cols] = True
    return rows, cols


def _fill_chunk(
    out: np.ndarray,
    counts: np.ndarray,
    seen: np.ndarray,
    pool: np.ndarray,
    eligible: np.ndarray,
    n_neg: int,
    rng: np.random.Generator,
) -> None:
    # Small pools (early periods): enumerate the eligible items exactly.
    small = np.flatnonzero(eligible <= 2 * n_neg)
    for r in small:
        free = np.flatnonzero(~seen[r, : pool[r]])
        if len(free) > n_neg:
            free = rng.choice(free, n_neg, replace=False)
        out[r, : len(free)] = free
        counts[r] = len(free)
    # Large pools: draw with replacement, drop history hits and repeats (sorting each row
    # makes repeats adjacent), then keep a uniformly random n_neg of the distinct valid
    # values: a uniform sample without replacement from the eligible items.
    pending = np.flatnonzero(eligible > 2 * n_neg)
    if len(pending) == 0:
        return
    frac = np.min((1.1 * n_neg) / eligible[pending])
    draws = int(np.ceil(-np.max(pool[pending]) * np.log1p(-frac))) + 16
    _large_pools(out, counts, seen, pool, pending, n_neg, draws, rng)


def _large_pools(
    out: np.ndarray,
    counts: np.ndarray,
    seen: np.ndarray,
    pool: np.ndarray,
    pending: np.ndarray,
    n_neg: int,
    draws: int,
    rng: np.random.Generator,
) -> None:
    """Rounds of `draws` candidates per pending row (doubling) until each has n_neg valid."""
    while len(pending):
        cand = np.sort((rng.random((len(pending), draws)) * pool[pending, None]).astype(np.int32), axis=1)
        valid, done = _valid_candidates(seen, pending, cand, n_neg)
        keys = rng.random((int(done.sum()), draws))
        _bar_invalid(keys, valid, done)
        # NumPy's argpartition, not a compiled twin: which of the kept values lands in which
        # column is its choice, and the candidates must stay exactly as they were
        pick = np.argpartition(keys, n_neg - 1, axis=1)[:, :n_neg]
        _take_picked(out, counts, pending, cand, done, pick)
        pending = pending[~done]
        draws *= 2


@numba.njit(cache=True)
def _valid_candidates(
    seen: np.ndarray, pending: np.ndarray, cand: np.ndarray, n_neg: int
) -> tuple[np.ndarray, np.ndarray]:
    """valid: not in the row's history and not a repeat (rows are sorted); done: rows with
    at least n_neg valid candidates."""
    valid = np.empty(cand.shape, np.bool_)
    done = np.empty(len(pending), np.bool_)
    for r in range(len(pending)):
        history = seen[pending[r]]
        n_valid, prev = 0, -1
        for k in range(cand.shape[1]):
            c = cand[r, k]
            ok = (c != prev) & ~history[c]  # no short-circuit: a branch here mispredicts often
            valid[r, k] = ok
            n_valid += ok
            prev = c
        done[r] = n_valid >= n_neg
    return valid, done


@numba.njit(cache=True)
def _bar_invalid(keys: np.ndarray, valid: np.ndarray, done: np.ndarray) -> None:
    """Key 2.0 for the done rows' invalid candidates: never picked, random keys live in [0, 1)."""
    d = 0
    for r in range(len(done)):
        if done[r]:
            for k in range(keys.shape[1]):
                if not valid[r, k]:
                    keys[d, k] = 2.0
            d += 1


@numba.njit(cache=True)
def _take_picked(
    out: np.ndarray, counts: np.ndarray, pending: np.ndarray, cand: np.ndarray, done: np.ndarray, pick: np.ndarray
) -> None:
    d = 0
    for r in range(len(done)):
        if done[r]:
            row = pending[r]
            for k in range(pick.shape[1]):
                out[row, k] = cand[r, pick[d, k]]
            counts[row] = pick.shape[1]
            d += 1
