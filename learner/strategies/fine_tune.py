"""Fine-tune: every period, warm-started training on the newest period only."""

from __future__ import annotations

from dataclasses import dataclass

from learner.mf import train_mf
from learner.period import Period
from learner.strategies.base import MFStrategy, register
from learner.train_spec import TrainSpec


@dataclass(frozen=True)
class FineTuneConfig:
    train: TrainSpec = TrainSpec(lr=1e-2, batch=64, epochs=5, l2=0.0)


@register
class FineTune(MFStrategy):
    name = "fine_tune"
    config = FineTuneConfig
    cfg: FineTuneConfig

    def retrain(self, period: Period) -> None:
        train_mf(
            self.model,
            period.users,
            period.items,
            self.shared.sample_negatives,
            self.cfg.train,
            self.rng(period.index, "train"),
        )
