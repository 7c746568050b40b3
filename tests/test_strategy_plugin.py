"""A strategy is one module: a throwaway strategy, defined here and nowhere else, registers
with its own settings class and runs end to end on the tiny preset."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pandas as pd
import pytest

from learner.mf import train_mf
from learner.period import Period
from learner.strategies import REGISTRY, MFStrategy, register
from learner.train_spec import TrainSpec
from replay_data.prepared import prepare
from replay_data.typed_config import ConfigError, not_allowed
from simulator.config import resolve
from simulator.run import run_embedded
from simulator.rundir import RunDir


@dataclass(frozen=True)
class HalfTuneConfig:
    train: TrainSpec = TrainSpec(lr=1e-2, batch=64, epochs=2, l2=0.0)
    every: int = 2  # retrain every `every`-th period only

    def validate(self) -> None:
        if self.every < 1:
            raise not_allowed("every", self.every, "every must be >= 1")


class HalfTune(MFStrategy):
    """Fine-tunes on every other period."""

    name = "half_tune"
    config = HalfTuneConfig
    cfg: HalfTuneConfig
    retrained: ClassVar[list[tuple[int, HalfTuneConfig]]] = []

    def retrain(self, period: Period) -> None:
        if period.index % self.cfg.every == 0:
            HalfTune.retrained.append((period.index, self.cfg))
            train_mf(
                self.model,
                period.users,
                period.items,
                self.shared.sample_negatives,
                self.cfg.train,
                self.rng(period.index, "train"),
            )


@pytest.fixture
def half_tune():
    register(HalfTune)
    HalfTune.retrained.clear()
    try:
        yield HalfTune
    finally:
        del REGISTRY[HalfTune.name]


def test_registered_strategy_gets_its_own_section(half_tune):
    cfg = resolve("tiny", overrides=["learner.strategies.half_tune.every=3"])
    assert cfg.learner.strategies.half_tune == HalfTuneConfig(every=3)
    with pytest.raises(
        ConfigError, match=r"learner\.strategies\.half_tune\.every: 0 is not allowed; every must be >= 1"
    ):
        resolve("tiny", overrides=["learner.strategies.half_tune.every=0"])
    with pytest.raises(
        ConfigError, match=r"unknown key learner\.strategies\.half_tune\.evrey; allowed keys here: every, train"
    ):
        resolve("tiny", overrides=["learner.strategies.half_tune.evrey=3"])


def test_unregistered_strategy_has_no_section():
    assert "half_tune" not in REGISTRY
    with pytest.raises(ConfigError, match=r"unknown key learner\.strategies\.half_tune"):
        resolve("tiny", overrides=["learner.strategies.half_tune.every=3"])


def test_registered_strategy_runs_end_to_end_on_tiny(half_tune, tmp_path):
    cfg = resolve(
        "tiny",
        overrides=[
            "learner.strategies.enabled=[fine_tune,half_tune]",
            "learner.strategies.serving=half_tune",
            "learner.strategies.half_tune.train.epochs=1",
        ],
    )
    log, _ = prepare(cfg.data, tmp_path / "prepared", progress=False)
    run_dir = RunDir(tmp_path / "runs", "half-tune").create(cfg)
    run_embedded(cfg, log, run_dir, report=lambda line: None)

    rows = pd.read_csv(run_dir.periods_csv)
    mine = rows[rows["strategy"] == "half_tune"]
    online = [t for t, phase in enumerate(log.phases) if phase != "pretrain"]
    assert mine["period"].tolist() == online
    assert mine["ndcg@10"].between(0, 1).all() and mine["ndcg@10"].sum() > 0
    # it served, and retrained on every other period with the settings given on the command line
    assert (mine["serving"] == 1).all()
    assert [t for t, _ in HalfTune.retrained] == [t for t in online if t % 2 == 0]
    assert {c for _, c in HalfTune.retrained} == {HalfTuneConfig(train=TrainSpec(lr=1e-2, batch=64, epochs=1))}
