"""SPMF: fine-tune on the newest period plus a reservoir of history, hard rows favoured."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from learner.mf import MF, train_mf, weighted_batches
from learner.period import Period
from learner.reservoir import Reservoir
from learner.strategies.base import MFStrategy, register
from learner.train_spec import TrainSpec
from replay_data.typed_config import not_allowed


@dataclass(frozen=True)
class SpmfConfig:
    reservoir: int = 7000  # interactions kept from history
    train: TrainSpec = TrainSpec(lr=1e-2, batch=64, epochs=20, l2=0.0)

    def validate(self) -> None:
        if self.reservoir < 0:
            raise not_allowed("reservoir", self.reservoir, "the reservoir holds >= 0 interactions")


@register
class Spmf(MFStrategy):
    name = "spmf"
    config = SpmfConfig
    cfg: SpmfConfig

    def start(self, base: MF) -> None:
        super().start(base)
        # the reservoir starts as a sample of everything seen during pretraining
        self.reservoir = Reservoir(self.cfg.reservoir)
        history = self.shared.history
        self.reservoir.offer(history.users, history.items, self.rng(-1, "reservoir"))

    def retrain(self, period: Period) -> None:
        users = np.concatenate([self.reservoir.users, period.users])
        items = np.concatenate([self.reservoir.items, period.items])
        weights = self._hardness_weights(users, items)
        spec = self.cfg.train
        train_mf(
            self.model,
            users,
            items,
            self.shared.sample_negatives,
            spec,
            self.rng(period.index, "train"),
            batches=lambda g: weighted_batches(weights, spec.batch, g),
        )
        self.reservoir.offer(period.users, period.items, self.rng(period.index, "reservoir"))

    def _hardness_weights(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """exp(rank / N) with rank 1 = the highest-scored row: low-scored rows weigh up to e x more."""
        p, q = self.model.embeddings()
        with torch.no_grad():
            scores = (
                (p[torch.as_tensor(users, device=p.device)] * q[torch.as_tensor(items, device=p.device)])
                .sum(1)
                .cpu()
                .numpy()
            )
        order = np.argsort(-scores, kind="stable")
        rank = np.empty(len(scores), dtype=np.float64)
        rank[order] = np.arange(1, len(scores) + 1)
        return np.exp(rank / len(scores))

    def state_dict(self) -> dict:
        return {**super().state_dict(), "reservoir": self.reservoir.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.reservoir = Reservoir(self.cfg.reservoir)
        self.reservoir.load_state_dict(state["reservoir"])
