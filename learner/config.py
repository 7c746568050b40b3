"""The learner's settings and their defaults (layering and validation: docs/architecture.md, "Configuration")."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from replay_data.typed_config import ConfigError


@dataclass(frozen=True)
class TrainSpec:
    """One Adam training pass over a period's (or history's) interactions."""

    lr: float = 1e-2
    batch: int = 256
    epochs: int = 20
    l2: float = 0.0

    def validate(self) -> None:
        if self.lr <= 0 or self.batch < 1 or self.epochs < 0 or self.l2 < 0:
            raise ConfigError(f"need lr > 0, batch >= 1, epochs >= 0, l2 >= 0; got {self}")


@dataclass(frozen=True)
class ModelConfig:
    dim: int = 64
    # new rows are N(0, init_std^2), drawn from a seed derived from (run seed, raw id)
    init_std: float = 0.1


@dataclass(frozen=True)
class EvalConfig:
    negatives: int = 999
    ks: tuple[int, ...] = (5, 10, 20)
    # rows per scoring chunk (memory: chunk x (negatives + 1) x dim floats). Small chunks
    # keep the gathered candidate rows in cache: 32 scored 3.7x faster than 512 on CPU
    chunk_rows: int = 32
    # also rank each positive against every item seen so far (history excluded): the
    # full_recall@K / full_ndcg@K columns. Costs one score per known item per interaction.
    full_ranking: bool = False


@dataclass(frozen=True)
class FullRetrainConfig:
    train: TrainSpec = TrainSpec(lr=1e-2, batch=256, epochs=20, l2=1e-7)


@dataclass(frozen=True)
class FineTuneConfig:
    train: TrainSpec = TrainSpec(lr=1e-2, batch=64, epochs=5, l2=0.0)


@dataclass(frozen=True)
class SpmfConfig:
    reservoir: int = 7000
    train: TrainSpec = TrainSpec(lr=1e-2, batch=64, epochs=20, l2=0.0)


@dataclass(frozen=True)
class SmlConfig:
    rounds: int | None = None  # K; None = 10 for 40-period presets, 7 for 63 (see resolve_rounds)
    step1: TrainSpec = TrainSpec(lr=1e-2, batch=1024, epochs=1, l2=1e-6)
    step2: TrainSpec = TrainSpec(lr=1e-3, batch=256, epochs=1, l2=1e-4)
    # "reseed": ŵ restarts from the transfer output each round (the authors' code);
    # "continue": ŵ keeps its own value across rounds (the paper's Algorithm 1)
    w_hat: Literal["reseed", "continue"] = "reseed"
    cnn: bool = True  # False = the paper's SML-CNN ablation
    fc: bool = True  # False = SML-FC
    next_period: bool = True  # False = SML-N: the transfer learns on D_t, not D_{t+1}
    # Negatives for step 2 (training the transfer). "period": items of the period it learns
    # on, not the user's there (the authors' rule); "known": every known item not in the
    # user's history (the shared sampler). Adam for ŵ in step 1: "dense" moves every row by
    # its (decaying) momentum each step, as torch.optim.Adam on the table does in the
    # authors' code; "row_sparse" touches only a batch's rows (O(batch) a step, not
    # O(table)). On news-like streams, where most rows are dead, "known" or "row_sparse"
    # let dead rows' norms grow geometrically to overflow: the transfer rewrites every row
    # every period, and old items occur in step 2 only as negatives (docs/fidelity.md,
    # "Divergence")
    step2_negatives: Literal["period", "known"] = "period"
    w_hat_adam: Literal["dense", "row_sparse"] = "dense"
    # rows per whole-table transfer pass; bounds the (rows x 512) activation
    chunk_rows: int = 16384
    # SML-S only: step-1 epochs per period once the transfer is frozen
    frozen_step1_epochs: int = 2
    # torch threads while SML retrains; None = every core. The transfer's dense matmuls
    # scale with cores (0.1x Yelp shape, period 20: 12.6 s on 1 thread, 7.8 s on 2), unlike
    # MF's small sparse steps, which run on learner.threads
    threads: int | None = None

    def validate(self) -> None:
        if self.rounds is not None and self.rounds < 1:
            raise ConfigError(f"rounds must be >= 1, got {self.rounds}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"sml.threads must be >= 1 (or null for every core), got {self.threads}")


@dataclass(frozen=True)
class FrozenConfig:
    """No settings: the frozen strategy never retrains."""


@dataclass(frozen=True)
class StrategiesConfig:
    enabled: list[str] = field(
        default_factory=lambda: ["sml", "sml_s", "fine_tune", "full_retrain", "spmf"]
    )
    serving: str = "sml"
    # A strategy that would repeat another's retrain exactly (equal state, equal work: SML-S
    # until validation) copies its result instead; false recomputes it
    share_repeated_work: bool = True
    full_retrain: FullRetrainConfig = FullRetrainConfig()
    fine_tune: FineTuneConfig = FineTuneConfig()
    spmf: SpmfConfig = SpmfConfig()
    sml: SmlConfig = SmlConfig()
    sml_s: SmlConfig = SmlConfig()
    frozen: FrozenConfig = FrozenConfig()


@dataclass(frozen=True)
class CheckpointConfig:
    every: int = 1  # checkpoint after every N-th closed period (and the last)
    keep: int = 3  # newest checkpoints kept

    def validate(self) -> None:
        if self.every < 1 or self.keep < 1:
            raise ConfigError(f"checkpoint.every and checkpoint.keep must be >= 1, got {self}")


@dataclass(frozen=True)
class GuardConfig:
    # warn when a strategy's largest served row norm grows more than this many times in
    # one period (learner/health.py); healthy MF rows move by a few percent a period
    norm_growth: float = 10.0

    def validate(self) -> None:
        if not self.norm_growth > 1:
            raise ConfigError(f"guard.norm_growth must be > 1, got {self.norm_growth}")


@dataclass(frozen=True)
class LearnerConfig:
    seed: int = 0
    # seeds the evaluation candidates alone; None = `seed`. A seed sweep fixes it, so every
    # seed ranks the same candidates (docs/architecture.md, "Determinism and identity")
    eval_seed: int | None = None
    device: Literal["cpu", "cuda"] = "cpu"
    # torch intra-op threads. 1 by default: MF trains in many small batches, where extra
    # threads only contend (measured 12x slower with 2 threads on a loaded 2-core box)
    threads: int = 1
    model: ModelConfig = ModelConfig()
    pretrain: TrainSpec = TrainSpec(lr=1e-2, batch=1024, epochs=20, l2=1e-5)
    eval: EvalConfig = EvalConfig()
    strategies: StrategiesConfig = StrategiesConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    guard: GuardConfig = GuardConfig()

    def validate(self) -> None:
        from learner.strategies import REGISTRY

        unknown = [s for s in self.strategies.enabled if s not in REGISTRY]
        if unknown:
            raise ConfigError(
                f"strategies.enabled: unknown strategy {unknown[0]!r}; known: {', '.join(REGISTRY)}"
            )
        if not self.strategies.enabled:
            raise ConfigError("strategies.enabled: enable at least one strategy")
        if self.strategies.serving not in self.strategies.enabled:
            raise ConfigError(
                f"strategies.serving: {self.strategies.serving!r} is not enabled; "
                f"enabled: {', '.join(self.strategies.enabled)}"
            )


def resolve_rounds(cfg: SmlConfig, n_periods: int) -> int:
    """K from the reference: 10 outer rounds on Yelp's 40 periods, 7 on Adressa's 63."""
    if cfg.rounds is not None:
        return cfg.rounds
    return 7 if n_periods >= 63 else 10
