"""A uniform reservoir sample of a stream of interactions (Vitter's Algorithm R)."""

from __future__ import annotations

import numpy as np


class Reservoir:
    """Keeps `capacity` (user, item) rows, each offered row equally likely to be kept.

    Row n of the stream (1-based) fills slot n while the reservoir is not full; after
    that it is accepted with probability capacity / n and overwrites a uniform slot.
    Vectorised over a batch of offered rows, with the same result as offering them one
    by one (of several accepted rows aimed at one slot, the last one wins).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.users = np.zeros(0, dtype=np.int64)
        self.items = np.zeros(0, dtype=np.int64)
        self.offered = 0

    def __len__(self) -> int:
        return len(self.users)

    def offer(self, users: np.ndarray, items: np.ndarray, rng: np.random.Generator) -> None:
        fill = max(0, min(len(users), self.capacity - len(self.users)))
        self.users = np.concatenate([self.users, users[:fill].astype(np.int64)])
        self.items = np.concatenate([self.items, items[:fill].astype(np.int64)])
        self.offered += fill
        rest_u, rest_i = users[fill:], items[fill:]
        if len(rest_u) == 0:
            return
        n = self.offered + 1 + np.arange(len(rest_u))
        accepted = np.flatnonzero(rng.random(len(rest_u)) < self.capacity / n)
        slots = rng.integers(0, self.capacity, size=len(accepted))
        self.offered += len(rest_u)
        # keep the last write per slot, as sequential offers would
        last = len(slots) - 1 - np.unique(slots[::-1], return_index=True)[1]
        self.users[slots[last]] = rest_u[accepted[last]]
        self.items[slots[last]] = rest_i[accepted[last]]

    def state_dict(self) -> dict:
        return {"capacity": self.capacity, "users": self.users, "items": self.items, "offered": self.offered}

    def load_state_dict(self, state: dict) -> None:
        self.capacity = int(state["capacity"])
        self.users, self.items = state["users"], state["items"]
        self.offered = int(state["offered"])
