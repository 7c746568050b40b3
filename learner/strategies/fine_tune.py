"""Fine-tune: every period, warm-started training on the newest period only."""
from __future__ import annotations

from learner.config import FineTuneConfig
from learner.mf import train_mf
from learner.period import Period
from learner.strategies.base import MFStrategy, register


@register
class FineTune(MFStrategy):
    name = "fine_tune"
    cfg: FineTuneConfig

    def retrain(self, period: Period) -> None:
        train_mf(self.model, period.users, period.items, self.shared.sample_negatives,
                 self.cfg.train, self.rng(period.index, "train"))
