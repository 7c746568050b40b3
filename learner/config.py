"""The learner's settings and their defaults (layering and validation: docs/architecture.md, "Configuration")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from learner.strategies import StrategiesSection, strategies_section
from learner.train_spec import TrainSpec
from replay_data.typed_config import not_allowed


@dataclass(frozen=True)
class ModelConfig:
    dim: int = 64
    # new rows are N(0, init_std^2), drawn from a seed derived from (run seed, raw id)
    init_std: float = 0.1

    def validate(self) -> None:
        if self.dim < 1:
            raise not_allowed("dim", self.dim, "the embedding dimension must be >= 1")
        if not self.init_std > 0:
            raise not_allowed("init_std", self.init_std, "init_std must be > 0")


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

    def validate(self) -> None:
        if self.negatives < 1:
            raise not_allowed("negatives", self.negatives, "negatives must be >= 1 (999 in the paper's protocol)")
        if not self.ks:
            raise not_allowed("ks", list(self.ks), "give at least one cut-off K, e.g. [5, 10, 20]")
        for i, k in enumerate(self.ks):
            if k < 1:
                raise not_allowed(f"ks[{i}]", k, "each K must be >= 1")
            if k in self.ks[:i]:
                raise not_allowed(f"ks[{i}]", k, "each K may be listed once")
        if self.chunk_rows < 1:
            raise not_allowed("chunk_rows", self.chunk_rows, "chunk_rows must be >= 1")


@dataclass(frozen=True)
class CheckpointConfig:
    every: int = 1  # checkpoint after every N-th closed period (and the last)
    keep: int = 3  # newest checkpoints kept

    def validate(self) -> None:
        for key in ("every", "keep"):
            if getattr(self, key) < 1:
                raise not_allowed(key, getattr(self, key), f"{key} must be >= 1")


@dataclass(frozen=True)
class GuardConfig:
    # warn when a strategy's largest served row norm, above norm_floor, grows more than
    # norm_growth times in one period (learner/health.py). Healthy rows here stay well
    # under 100 (MF and SML alike); diverging ones passed it growing 3x a period
    norm_growth: float = 2.0
    norm_floor: float = 100.0

    def validate(self) -> None:
        if not self.norm_growth > 1:
            raise not_allowed("norm_growth", self.norm_growth, "norm_growth must be > 1")
        if not self.norm_floor >= 0:
            raise not_allowed("norm_floor", self.norm_floor, "norm_floor must be >= 0")


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
    # one section per registered strategy, typed by its own `config` (learner/strategies/)
    strategies: StrategiesSection = field(
        default_factory=lambda: strategies_section()(), metadata={"type": strategies_section}
    )
    checkpoint: CheckpointConfig = CheckpointConfig()
    guard: GuardConfig = GuardConfig()

    def validate(self) -> None:
        if self.threads < 1:
            raise not_allowed("threads", self.threads, "threads must be >= 1")
        if self.seed < 0:
            raise not_allowed("seed", self.seed, "the seed must be >= 0")
