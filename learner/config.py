"""The learner's settings and their defaults (layering and validation: docs/architecture.md, "Configuration")."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from learner.strategies import StrategiesSection, strategies_section
from learner.train_spec import TrainSpec
from replay_data.typed_config import ConfigError


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
    device: Literal["cpu", "cuda"] = "cpu"
    # torch intra-op threads. 1 by default: MF trains in many small batches, where extra
    # threads only contend (measured 12x slower with 2 threads on a loaded 2-core box)
    threads: int = 1
    model: ModelConfig = ModelConfig()
    pretrain: TrainSpec = TrainSpec(lr=1e-2, batch=1024, epochs=20, l2=1e-5)
    eval: EvalConfig = EvalConfig()
    # one section per registered strategy, typed by its own `config` (learner/strategies/)
    strategies: StrategiesSection = field(default_factory=lambda: strategies_section()(),
                                          metadata={"type": strategies_section})
    checkpoint: CheckpointConfig = CheckpointConfig()
    guard: GuardConfig = GuardConfig()
