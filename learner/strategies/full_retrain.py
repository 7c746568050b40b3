"""Full-retrain: every period, warm-started training on all data seen so far."""

from __future__ import annotations

from dataclasses import dataclass

from learner.mf import train_mf
from learner.period import Period
from learner.strategies.base import MFStrategy, register
from learner.train_spec import TrainSpec


@dataclass(frozen=True)
class FullRetrainConfig:
    train: TrainSpec = TrainSpec(lr=1e-2, batch=256, epochs=20, l2=1e-7)


@register
class FullRetrain(MFStrategy):
    name = "full_retrain"
    config = FullRetrainConfig
    cfg: FullRetrainConfig

    def retrain(self, period: Period) -> None:
        history = self.shared.history
        train_mf(
            self.model,
            history.users,
            history.items,
            self.shared.sample_negatives,
            self.cfg.train,
            self.rng(period.index, "train"),
        )
