"""Everything the learner has seen so far, in code space: interactions and user-item sets."""

from __future__ import annotations

import numba
import numpy as np

from learner.native import prefetch

_SHIFT = np.int64(32)
ITEM_MASK = np.int64(0xFFFFFFFF)  # a pair key's low 32 bits: its item
_AHEAD = 16  # queries looked up ahead: each costs two dependent random reads


def pair_keys(users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """One sortable int64 per (user, item) pair, grouped by user."""
    return (users.astype(np.int64) << _SHIFT) | items.astype(np.int64)


def user_ranges(keys: np.ndarray, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For sorted pair keys: (row, position in keys) of every pair of users[row]."""
    users = users.astype(np.int64)
    starts = np.searchsorted(keys, users << _SHIFT)
    lengths = np.searchsorted(keys, (users + 1) << _SHIFT) - starts
    rows = np.repeat(np.arange(len(users)), lengths)
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return rows, np.repeat(starts, lengths) + offsets


def key_items(keys: np.ndarray) -> np.ndarray:
    return keys & ITEM_MASK


class PeriodPairs:
    """A period's own (user, item) pairs not already in `history`, sorted, with the row
    where each first occurs: what becomes a row's history during the period."""

    def __init__(self, history: History, users: np.ndarray, items: np.ndarray) -> None:
        keys, first = np.unique(pair_keys(users, items), return_index=True)
        fresh = ~history.contains_keys(keys)  # pairs already in history are covered there
        self.keys, self.first = keys[fresh], first[fresh]


class History:
    """Interactions of all closed periods, in order, and a sorted set of (user, item) pairs.

    The pair set answers "has u interacted with i?" for whole arrays at once (binary
    search), which the negative samplers need; `user_items` lists a user's items.
    """

    def __init__(self) -> None:
        self.users = np.zeros(0, dtype=np.int64)
        self.items = np.zeros(0, dtype=np.int64)
        self.period_ends: list[int] = []  # history offset after each closed period
        self.keys = np.zeros(0, dtype=np.int64)  # sorted unique pair keys
        self._starts: np.ndarray | None = None  # where each user's keys start; from keys

    def __len__(self) -> int:
        return len(self.users)

    def extend(self, users: np.ndarray, items: np.ndarray) -> None:
        self.users = np.concatenate([self.users, users.astype(np.int64)])
        self.items = np.concatenate([self.items, items.astype(np.int64)])
        self.period_ends.append(len(self.users))
        new = np.unique(pair_keys(users, items))
        new = new[~self.contains_keys(new)]
        # insertion into the sorted array: O(history) per period instead of a re-sort
        self.keys = np.insert(self.keys, np.searchsorted(self.keys, new), new)
        self._starts = None

    def contains_keys(self, keys: np.ndarray) -> np.ndarray:
        out = np.empty(keys.size, dtype=bool)
        _contains(self.keys, self._user_starts(), np.ascontiguousarray(keys, dtype=np.int64).reshape(-1), out)
        return out.reshape(keys.shape)

    def _user_starts(self) -> np.ndarray:
        """starts[u]..starts[u+1]: user u's keys, for users 0..the largest in the history."""
        if self._starts is None:
            n_users = int(self.keys[-1] >> _SHIFT) + 1 if len(self.keys) else 0
            self._starts = np.searchsorted(self.keys, np.arange(n_users + 1, dtype=np.int64) << _SHIFT)
        return self._starts

    def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.contains_keys(pair_keys(users, items))

    def user_items(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, item) for every item in the history of users[row], concatenated."""
        rows, positions = user_ranges(self.keys, users)
        return rows, key_items(self.keys[positions])

    def period_slice(self, first: int, last: int) -> tuple[np.ndarray, np.ndarray]:
        """Interactions of closed periods first..last (indices into the closed list)."""
        lo = self.period_ends[first - 1] if first > 0 else 0
        hi = self.period_ends[last]
        return self.users[lo:hi], self.items[lo:hi]

    def state_dict(self) -> dict:
        return {"users": self.users, "items": self.items, "period_ends": list(self.period_ends), "keys": self.keys}

    def load_state_dict(self, state: dict) -> None:
        self.users, self.items = state["users"], state["items"]
        self.period_ends = list(state["period_ends"])
        self.keys = state["keys"]
        self._starts = None


@numba.njit(cache=True)
def _contains(keys: np.ndarray, starts: np.ndarray, queries: np.ndarray, out: np.ndarray) -> None:
    """out[q]: queries[q] in the sorted keys, by binary search within its user's keys only.

    The user's start and keys are fetched ahead: unsorted queries (one per training row)
    then cost about one memory round trip each, not one per search step."""
    n_users = len(starts) - 1
    for q in range(len(queries)):
        if q + _AHEAD < len(queries) and (queries[q + _AHEAD] >> 32) < n_users:
            prefetch(starts, queries[q + _AHEAD] >> 32)
        half = q + _AHEAD // 2
        if half < len(queries) and (queries[half] >> 32) < n_users:
            lo = starts[queries[half] >> 32]
            for p in range(lo, min(starts[(queries[half] >> 32) + 1], lo + 64), 8):  # 8 keys per line
                prefetch(keys, p)
        key = queries[q]
        user = key >> 32
        found = False
        if user < n_users:
            lo, end = starts[user], starts[user + 1]
            hi = end
            while lo < hi:
                mid = (lo + hi) >> 1
                if keys[mid] < key:
                    lo = mid + 1
                else:
                    hi = mid
            found = lo < end and keys[lo] == key
        out[q] = found
