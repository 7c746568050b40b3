"""The strategy interface and its registry: a new strategy is one new module here."""

from __future__ import annotations

import dataclasses
import functools
from abc import ABC, abstractmethod
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from learner.mf import MF
from learner.period import Period, SharedState
from replay_data.typed_config import not_allowed

REGISTRY: dict[str, type[Strategy]] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: make `cls` a strategy by its `name`, configured by `cls.config`
    (the section `learner.strategies.<name>`)."""
    if cls.name in _SECTION_KEYS:
        raise ValueError(f"strategy name {cls.name!r} is taken by the setting learner.strategies.{cls.name}")
    if REGISTRY.get(cls.name, cls) is not cls:
        raise ValueError(f"strategy name {cls.name!r} is already registered by {REGISTRY[cls.name].__qualname__}")
    if not (dataclasses.is_dataclass(cls.config) and cls.config.__dataclass_params__.frozen):
        raise TypeError(f"{cls.__qualname__}.config must be a frozen dataclass, got {cls.config!r}")
    REGISTRY[cls.name] = cls
    return cls


@dataclass(frozen=True)
class NoSettings:
    """The settings of a strategy that has none (`frozen`)."""


@dataclass(frozen=True)
class StrategiesSection:
    """`learner.strategies`: these settings plus one section per registered strategy, named
    after it and typed by its `config` (built by `strategies_section`)."""

    enabled: list[str] = field(default_factory=lambda: ["sml", "sml_s", "fine_tune", "full_retrain", "spmf"])
    serving: str = "sml"
    # A strategy that would repeat another's retrain exactly (equal state, equal work: SML-S
    # until validation) copies its result instead; false recomputes it
    share_repeated_work: bool = True
    # the strategies this section was built for, in registration order
    known: ClassVar[tuple[str, ...]] = ()

    def validate(self) -> None:
        known = ", ".join(self.known)
        if not self.enabled:
            raise not_allowed("enabled", self.enabled, f"enable at least one strategy: {known}")
        for i, name in enumerate(self.enabled):
            if name not in self.known:
                raise not_allowed(f"enabled[{i}]", name, f"known strategies: {known}")
            if name in self.enabled[:i]:
                raise not_allowed(f"enabled[{i}]", name, "each strategy may be listed once")
        if self.serving not in self.enabled:
            raise not_allowed(
                "serving", self.serving, f"serve one of the enabled strategies: {', '.join(self.enabled)}"
            )


_SECTION_KEYS = frozenset(f.name for f in dataclasses.fields(StrategiesSection))


def strategies_section() -> type[StrategiesSection]:
    """The dataclass of `learner.strategies` for the strategies registered now."""
    return _section(tuple((name, cls.config) for name, cls in REGISTRY.items()))


@functools.cache
def _section(strategies: tuple[tuple[str, type], ...]) -> type[StrategiesSection]:
    return dataclasses.make_dataclass(
        "StrategiesConfig",
        [(name, config, field(default=config())) for name, config in strategies],
        bases=(StrategiesSection,),
        frozen=True,
        namespace={"known": tuple(name for name, _ in strategies), "__module__": __name__},
    )


class Strategy(ABC):
    """One way of retraining. Owns its whole state and can save and restore it.

    Life cycle: `start` once from the shared pretrained model; then per closed period
    `grow` (new ids' initial rows), the engine scores `serving_embeddings()` on the
    period, and only then `retrain(period)`.
    """

    name: ClassVar[str]
    stream: ClassVar[str | None] = None  # label of its random streams; default: its name
    # its settings, a frozen dataclass: the section learner.strategies.<name>
    config: ClassVar[type] = NoSettings
    # whether serving_embeddings() are MF rows (model.dim wide) that a strategy enabled
    # from the serving one can start from; a sequence model's encodings are not
    serves_mf: ClassVar[bool] = True

    def __init__(self, cfg: Any, shared: SharedState) -> None:
        self.cfg = cfg
        self.shared = shared

    @classmethod
    def from_settings(cls, strategies: StrategiesSection, shared: SharedState) -> Strategy:
        """A new instance configured from the whole strategies section: by default from its
        own key alone (SML-S also reads SML's)."""
        return cls(getattr(strategies, cls.name), shared)

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
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.device == b.device
            and torch.equal(a, b)
        )
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
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
