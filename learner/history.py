"""Everything the learner has seen so far, in code space: interactions and user-item sets."""
from __future__ import annotations

import numpy as np

_SHIFT = np.int64(32)
_ITEM_MASK = np.int64(0xFFFFFFFF)
_SORT_QUERIES_ABOVE = 50_000


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
    return keys & _ITEM_MASK


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

    def contains_keys(self, keys: np.ndarray) -> np.ndarray:
        if len(self.keys) == 0:
            return np.zeros(keys.shape, dtype=bool)
        if keys.size > _SORT_QUERIES_ABOVE:
            # numpy's searchsorted starts each search where the previous one ended when the
            # queries ascend: sorted queries stay in cache (3.5x faster for 2.9M in 3M keys)
            order = np.argsort(keys, axis=None)
            pos = np.empty(keys.size, dtype=np.int64)
            pos[order] = np.searchsorted(self.keys, keys.reshape(-1)[order])
            pos = pos.reshape(keys.shape)
        else:
            pos = np.searchsorted(self.keys, keys)
        pos = np.minimum(pos, len(self.keys) - 1)
        return self.keys[pos] == keys

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
