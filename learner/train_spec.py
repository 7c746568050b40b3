"""`TrainSpec`, the settings of one training pass: a leaf module, so that the strategies
(which declare their own settings with it) and `learner.config` (which builds the
strategies section from their registry) import it without importing each other."""

from __future__ import annotations

from dataclasses import dataclass

from replay_data.typed_config import not_allowed


@dataclass(frozen=True)
class TrainSpec:
    """One Adam training pass over a period's (or history's) interactions."""

    lr: float = 1e-2
    batch: int = 256
    epochs: int = 20
    l2: float = 0.0

    def validate(self) -> None:
        for key, value, ok, allowed in (
            ("lr", self.lr, self.lr > 0, "> 0"),
            ("batch", self.batch, self.batch >= 1, ">= 1"),
            ("epochs", self.epochs, self.epochs >= 0, ">= 0"),
            ("l2", self.l2, self.l2 >= 0, ">= 0"),
        ):
            if not ok:
                raise not_allowed(key, value, f"{key} must be {allowed}")
