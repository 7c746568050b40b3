"""What the engine hands to strategies: one closed period, and the shared learner state."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch

from learner.history import History
from learner.negatives import sample_training_negatives


@dataclass(frozen=True)
class Period:
    """A closed period in code space, sorted by (ts, user, item)."""

    index: int
    phase: str
    users: np.ndarray
    items: np.ndarray
    n_users_before: int  # rows registered before this period: codes >= these are new
    n_items_before: int


def stream_rng(seed: int, *labels: str | int) -> np.random.Generator:
    """An independent, reproducible RNG per purpose (strategy, period, role).

    Enabling or disabling one strategy never shifts another strategy's random numbers.
    """
    words = [seed & 0xFFFFFFFF] + [
        label % 2**32 if isinstance(label, int) else zlib.crc32(label.encode()) for label in labels
    ]
    return np.random.default_rng(words)


class SharedState:
    """What every strategy may read: the history so far and the vocabulary sizes."""

    def __init__(self, seed: int, device: str, n_periods: int, phases: list[str]) -> None:
        self.seed = seed
        self.device = torch.device(device)
        self.n_periods = n_periods
        self.phases = phases
        self.history = History()
        self.n_users = 0
        self.n_items = 0

    def rng(self, *labels: str | int) -> np.random.Generator:
        return stream_rng(self.seed, *labels)

    def sample_negatives(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return sample_training_negatives(self.history, self.n_items, users, rng)
