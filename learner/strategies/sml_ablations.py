"""The paper's ablations of SML (reference §7.3), each a strategy that runs beside SML.

Every variant reads SML's settings (learner.strategies.sml: one source of truth) and SML's
random streams, and changes one thing, so its difference from SML is the variant's alone.
Where its retrain would equal SML's exactly (same state and work: `Sml.work_key`) the engine
copies SML's result instead of recomputing it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from learner.period import Period, SharedState
from learner.strategies.base import REGISTRY, StrategiesSection, register
from learner.strategies.sml import Sml, SmlConfig
from replay_data.typed_config import not_allowed


@dataclass(frozen=True)
class AblationConfig:
    """An ablation's own settings: none; it runs on SML's."""

    unknown_key_hint: ClassVar[str] = "SML's ablations read every setting from learner.strategies.sml"


class SmlAblation(Sml):
    """A variant of SML configured by SML's settings."""

    config = AblationConfig
    summary: ClassVar[str]  # what it changes, in a few words (the ablation table's legend)

    @classmethod
    def from_settings(cls, strategies: StrategiesSection, shared: SharedState) -> Sml:
        return cls(strategies.sml, shared)


@register
class SmlCnn(SmlAblation):
    """SML-CNN: the transfer without its CNN part (the stacked rows go straight to the FC layers)."""

    name = "sml_cnn"
    summary = "transfer without its CNN part"
    cnn = False


@register
class SmlFc(SmlAblation):
    """SML-FC: the transfer without its FC layers (one more 1x1 conv maps the channels out)."""

    name = "sml_fc"
    summary = "transfer without its FC layers"
    fc = False


@register
class SmlN(SmlAblation):
    """SML-N: the transfer is not optimised towards the next period: step 2 learns Θ on the
    task's own period D_t instead of D_{t+1}."""

    name = "sml_n"
    summary = "transfer trained on the task's own period, not the next"
    next_period = False


@dataclass(frozen=True)
class SmlSConfig:
    """SML-S's own settings; everything else it reads from SML's (learner.strategies.sml)."""

    # step-1 epochs per period once the transfer is frozen (validation and test)
    frozen_step1_epochs: int = 2
    unknown_key_hint: ClassVar[str] = "SML-S reads every other setting from learner.strategies.sml"

    def validate(self) -> None:
        if self.frozen_step1_epochs < 0:
            raise not_allowed("frozen_step1_epochs", self.frozen_step1_epochs, "frozen_step1_epochs must be >= 0")


@register
class SmlS(SmlAblation):
    """SML-S: SML until validation starts; then Θ is frozen and each period runs one step 1."""

    name = "sml_s"
    summary = "transfer frozen from validation on"
    config = SmlSConfig

    def __init__(self, cfg: SmlConfig, shared: SharedState, own: SmlSConfig = SmlSConfig()) -> None:
        super().__init__(cfg, shared)
        self.own = own

    @classmethod
    def from_settings(cls, strategies: StrategiesSection, shared: SharedState) -> SmlS:
        return cls(strategies.sml, shared, strategies.sml_s)

    def frozen(self, period: Period) -> bool:
        return period.phase in ("validation", "test")

    def step1_epochs(self, period: Period) -> int:
        return self.own.frozen_step1_epochs if self.frozen(period) else self.cfg.step1.epochs


@register
class SmlFp(SmlAblation):
    """SML-FP: step 1 learns ŵ_t on its own recommendation loss on D_t, BCE(ŵ) + λ1, not
    through the transfer.

    Reference §7.3 defines SML-FP by this change alone, so the rest of SML stays: step 2
    still trains Θ on D_{t+1} with W_{t-1} and ŵ_t fixed, and W_t = f_Θ(W_{t-1}, ŵ_t) is
    still what is deployed and served (§4.3; §7.2, Alg. 2)."""

    name = "sml_fp"
    summary = "ŵ learned on its own loss, not through the transfer"
    step1_through_transfer = False


def ablations() -> dict[str, str]:
    """{name: summary} of the registered ablations of SML, in registration order (the paper's:
    CNN, FC, N, S, FP)."""
    return {name: cls.summary for name, cls in REGISTRY.items() if issubclass(cls, SmlAblation)}
