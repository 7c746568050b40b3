"""Evaluation candidates of the SML protocol (docs/architecture.md, "Training and evaluation negatives").

For each interaction (u, i) of a period, in sorted order: up to 999 distinct negatives,
drawn uniformly from the items seen up to and including that interaction, none in u's
history up to and including it. Drawn once per period and shared by every strategy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numba
import numpy as np

from learner.history import ITEM_MASK, History, PeriodPairs, pair_keys


@dataclass
class Candidates:
    negatives: np.ndarray  # (rows, n_negatives) int32 item codes, -1 where fewer were eligible
    counts: np.ndarray  # (rows,) valid negatives per row


# Rows sampled together. Fixed, not a setting: the random numbers a row gets depend on its
# chunk, and the negatives must be the same in every run and export with the same seed.
CHUNK_ROWS = 512


class _Known(NamedTuple):
    """Where each row's history up to and including it lies: its user's pairs among the
    closed periods' keys, and among the period's own keys those first seen at or before it."""

    history: np.ndarray  # the closed periods' sorted pair keys
    h_lo: np.ndarray  # row r's user: history[h_lo[r]:h_hi[r]]
    h_hi: np.ndarray
    period: np.ndarray  # the period's sorted pair keys
    first: np.ndarray  # the row where each of them first occurs
    p_lo: np.ndarray  # row r's user: period[p_lo[r]:p_hi[r]], those with first <= r
    p_hi: np.ndarray


def _known(history: History, users: np.ndarray, items: np.ndarray) -> _Known:
    period = PeriodPairs(history, users, items)
    lo, hi = pair_keys(users, np.zeros_like(users)), pair_keys(users + 1, np.zeros_like(users))
    return _Known(
        history.keys,
        np.searchsorted(history.keys, lo),
        np.searchsorted(history.keys, hi),
        period.keys,
        period.first,
        np.searchsorted(period.keys, lo),
        np.searchsorted(period.keys, hi),
    )


def sample_eval_candidates(
    history: History,
    users: np.ndarray,
    items: np.ndarray,
    n_items_before: int,
    n_negatives: int,
    rng: np.random.Generator,
) -> Candidates:
    """`history` holds the periods before this one; users/items are this period's codes."""
    if len(history) and int(history.items.max()) >= n_items_before:
        # the compiled passes index a buffer sized from it: refuse rather than write past it
        raise ValueError(
            f"the history holds item code {int(history.items.max())}, but n_items_before is {n_items_before}: "
            "it must count every item of the periods before this one"
        )
    n = len(users)
    out = np.empty((n, n_negatives), dtype=np.int32)  # every row is written below
    counts = np.zeros(n, dtype=np.int64)
    if n == 0:
        return Candidates(out, counts)
    pool = np.maximum.accumulate(np.maximum(items.astype(np.int64) + 1, n_items_before))
    known = _known(history, users.astype(np.int64), items)
    eligible = pool - _known_counts(known)
    bits = np.zeros((int(pool[-1]) + 7) // 8, dtype=np.uint8)  # one row's history, cleared after use
    for lo in range(0, n, CHUNK_ROWS):
        rows = np.arange(lo, min(n, lo + CHUNK_ROWS))
        _fill_chunk(out, counts, known, bits, rows, pool, eligible, n_negatives, rng)
    return Candidates(out, counts)


def _fill_chunk(
    out: np.ndarray,
    counts: np.ndarray,
    known: _Known,
    bits: np.ndarray,
    rows: np.ndarray,
    pool: np.ndarray,
    eligible: np.ndarray,
    n_neg: int,
    rng: np.random.Generator,
) -> None:
    # Small pools (early periods): enumerate the eligible items exactly.
    small = rows[eligible[rows] <= 2 * n_neg]
    for r in small:
        _mark_row(known, bits, r)
        free = np.flatnonzero(np.unpackbits(bits, count=pool[r], bitorder="little") == 0)
        _clear_row(known, bits, r)
        if len(free) > n_neg:
            free = rng.choice(free, n_neg, replace=False)
        out[r, : len(free)] = free
        out[r, len(free) :] = -1
        counts[r] = len(free)
    # Large pools: draw with replacement, drop history hits and repeats (sorting each row
    # makes repeats adjacent), then keep a uniformly random n_neg of the distinct valid
    # values: a uniform sample without replacement from the eligible items.
    pending = rows[eligible[rows] > 2 * n_neg]
    if len(pending) == 0:
        return
    frac = np.min((1.1 * n_neg) / eligible[pending])
    draws = int(np.ceil(-np.max(pool[pending]) * np.log1p(-frac))) + 16
    while len(pending):
        uniform = rng.random((len(pending), draws))
        cand = _scaled(uniform, pool[pending])
        cand.sort(axis=1)
        valid, done = _valid_candidates(known, bits, pending, cand, n_neg)
        keys = rng.random(out=uniform[: int(done.sum())])  # its draws are spent: reuse the buffer
        _bar_invalid(keys, valid, done)
        # NumPy's argpartition, not a compiled twin: which of the kept values lands in which
        # column is its choice, and the candidates must stay exactly as they were
        pick = np.argpartition(keys, n_neg - 1, axis=1)[:, :n_neg]
        _take_picked(out, counts, pending, cand, done, pick)
        pending = pending[~done]
        draws *= 2


@numba.njit(cache=True)
def _mark_row(known: _Known, bits: np.ndarray, row: int) -> None:
    """Set the bit of every item in the history of `row`'s user up to and including it."""
    history, h_lo, h_hi, period, first, p_lo, p_hi = known
    for j in range(h_lo[row], h_hi[row]):
        item = history[j] & ITEM_MASK
        bits[item >> 3] |= np.uint8(1 << (item & 7))
    for j in range(p_lo[row], p_hi[row]):
        if first[j] <= row:
            item = period[j] & ITEM_MASK
            bits[item >> 3] |= np.uint8(1 << (item & 7))


@numba.njit(cache=True)
def _clear_row(known: _Known, bits: np.ndarray, row: int) -> None:
    """Undo _mark_row: zero the bytes it may have touched, so the next row starts clean."""
    history, h_lo, h_hi, period, first, p_lo, p_hi = known
    for j in range(h_lo[row], h_hi[row]):
        bits[(history[j] & ITEM_MASK) >> 3] = 0
    for j in range(p_lo[row], p_hi[row]):
        bits[(period[j] & ITEM_MASK) >> 3] = 0


@numba.njit(cache=True)
def _known_counts(known: _Known) -> np.ndarray:
    history, h_lo, h_hi, period, first, p_lo, p_hi = known
    counts = h_hi - h_lo
    for r in range(len(counts)):
        for j in range(p_lo[r], p_hi[r]):
            counts[r] += first[j] <= r
    return counts


@numba.njit(cache=True)
def _scaled(uniform: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """Item codes from uniform draws, as NumPy's (uniform * pool).astype(int32) rounds them."""
    out = np.empty(uniform.shape, np.int32)
    for r in range(uniform.shape[0]):
        size = np.float64(pool[r])
        for k in range(uniform.shape[1]):
            out[r, k] = np.int32(uniform[r, k] * size)
    return out


@numba.njit(cache=True)
def _valid_candidates(
    known: _Known, bits: np.ndarray, pending: np.ndarray, cand: np.ndarray, n_neg: int
) -> tuple[np.ndarray, np.ndarray]:
    """valid: not in the row's history and not a repeat (rows are sorted); done: rows with
    at least n_neg valid candidates. A row's history is marked in `bits`, one bit an item:
    small enough to stay in cache while its sorted candidates are looked up."""
    valid = np.empty(cand.shape, np.bool_)
    done = np.empty(len(pending), np.bool_)
    for r in range(len(pending)):
        row = pending[r]
        _mark_row(known, bits, row)
        n_valid, prev = 0, -1
        for k in range(cand.shape[1]):
            c = cand[r, k]
            ok = (c != prev) & ((bits[c >> 3] >> (c & 7)) & 1 == 0)  # no short-circuit: it mispredicts
            valid[r, k] = ok
            n_valid += ok
            prev = c
        done[r] = n_valid >= n_neg
        _clear_row(known, bits, row)
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
