"""Full-retrain: every period, warm-started training on all data seen so far."""
from __future__ import annotations

from learner.config import FullRetrainConfig
from learner.mf import train_mf
from learner.period import Period
from learner.strategies.base import MFStrategy, register


@register
class FullRetrain(MFStrategy):
    name = "full_retrain"
    cfg: FullRetrainConfig

    def retrain(self, period: Period) -> None:
        history = self.shared.history
        train_mf(self.model, history.users, history.items, self.shared.sample_negatives,
                 self.cfg.train, self.rng(period.index, "train"))
