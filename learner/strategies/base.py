"""The strategy interface and its registry: a new strategy is one new module here."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable
from typing import Any, ClassVar

import numpy as np
import torch

from learner.mf import MF
from learner.period import Period, SharedState

REGISTRY: dict[str, type["Strategy"]] = {}


def register(cls: type["Strategy"]) -> type["Strategy"]:
    REGISTRY[cls.name] = cls
    return cls


class Strategy(ABC):
    """One way of retraining. Owns its whole state and can save and restore it.

    Life cycle: `start` once from the shared pretrained model; then per closed period
    `grow` (new ids' initial rows), the engine scores `serving_embeddings()` on the
    period, and only then `retrain(period)`.
    """

    name: ClassVar[str]
    stream: ClassVar[str | None] = None  # label of its random streams; default: its name

    def __init__(self, cfg: Any, shared: SharedState) -> None:
        self.cfg = cfg
        self.shared = shared

    @abstractmethod
    def start(self, base: MF) -> None: ...

    @abstractmethod
    def grow(self, user_rows: torch.Tensor, item_rows: torch.Tensor) -> None: ...

    @abstractmethod
    def serving_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]: ...

    @abstractmethod
    def retrain(self, period: Period) -> None: ...

    @abstractmethod
    def state_dict(self) -> dict: ...

    @abstractmethod
    def load_state_dict(self, state: dict) -> None: ...

    def rng(self, period: int, purpose: str):
        return self.shared.rng(self.stream or self.name, period, purpose)

    def work_key(self, period: Period) -> Hashable | None:
        """All that `retrain(period)` depends on besides the state: two strategies with equal
        keys and equal `state_dict()`s compute the same result. None: never assumed."""
        return None


def same_state(a: Any, b: Any) -> bool:
    """Whether two state_dict()s hold the same values, exactly (tensors and arrays included)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and a.device == b.device and torch.equal(a, b))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype \
            and np.array_equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same_state, a, b))
    return type(a) is type(b) and a == b


class MFStrategy(Strategy, ABC):
    """A strategy whose served model is one MF it updates in place (the baselines)."""

    model: MF

    def start(self, base: MF) -> None:
        # fresh Adam moments: the pretraining optimiser belongs to no strategy
        self.model = MF.from_rows(base.users.weight, base.items.weight)

    def grow(self, user_rows: torch.Tensor, item_rows: torch.Tensor) -> None:
        self.model.grow(user_rows, item_rows)

    def serving_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.embeddings()

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model = MF.from_state(state["model"], self.shared.device)
