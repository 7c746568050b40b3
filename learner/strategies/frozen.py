"""Frozen: serve the pretrained base model forever (the no-retraining reference)."""

from __future__ import annotations

from learner.period import Period
from learner.strategies.base import MFStrategy, register


@register
class Frozen(MFStrategy):
    name = "frozen"

    def retrain(self, period: Period) -> None:
        """New ids keep their initial rows; nothing is learned."""
