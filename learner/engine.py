"""The period engine: on the close of each period, evaluate then retrain every strategy.

The engine sees raw string ids only (what the bus carries) and owns the vocabularies, the
history and the strategies. Test-then-train is its structure: a strategy receives a
period's data only in `retrain`, which runs after its served model was scored on it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from learner.candidates import sample_eval_candidates
from learner.config import LearnerConfig
from learner.evaluation import PeriodMetrics, metrics_from_ranks, rank_positives
from learner.mf import MF, train_mf
from learner.period import Period, SharedState
from learner.strategies import REGISTRY, Strategy
from learner.vocab import Vocabulary, initial_rows


@dataclass
class StrategyResult:
    """One row of periods.csv."""

    period: int
    phase: str
    strategy: str
    serving: bool
    n_interactions: int
    n_new_users: int
    n_new_items: int
    n_candidates: float  # mean candidates per interaction (positive included)
    metrics: PeriodMetrics
    retrain_seconds: float
    eval_seconds: float


class Engine:
    def __init__(self, cfg: LearnerConfig, phases: list[str]) -> None:
        if "pretrain" not in phases[:1]:
            raise ValueError("the first period must be a pretrain period: every strategy starts from the base MF")
        self.cfg = cfg
        torch.set_num_threads(cfg.threads)
        self.phases = list(phases)
        self.shared = SharedState(cfg.seed, cfg.device, len(phases), self.phases)
        self.user_vocab = Vocabulary()
        self.item_vocab = Vocabulary()
        self.strategies: dict[str, Strategy] = {}
        self.base_model: MF | None = None  # the shared pretrained MF, once pretraining ran
        self.serving = cfg.strategies.serving
        self.next_period = 0
        self._last_pretrain = max(t for t, p in enumerate(phases) if p == "pretrain")

    @property
    def device(self) -> torch.device:
        return self.shared.device

    def close_period(self, t: int, events: pd.DataFrame) -> list[StrategyResult]:
        """Process period t (columns ts, user, item with raw ids); results per strategy."""
        if t != self.next_period:
            raise ValueError(f"periods close in order: expected period {self.next_period}, got {t}")
        if t >= len(self.phases):
            raise ValueError(f"period {t} is beyond the schedule's {len(self.phases)} periods")
        self.next_period += 1
        period, new_users, new_items = self._register(t, events)
        shared = self.shared
        if period.phase == "pretrain":
            shared.history.extend(period.users, period.items)
            if t == self._last_pretrain:
                self._start_strategies()
            return []
        user_rows = self._rows(new_users, "user")
        item_rows = self._rows(new_items, "item")
        for strategy in self.strategies.values():
            strategy.grow(user_rows, item_rows)
        candidates = sample_eval_candidates(
            shared.history, period.users, period.items, period.n_items_before,
            self.cfg.eval.negatives, shared.rng("eval", t),
        )
        new_user = period.users >= period.n_users_before
        new_item = period.items >= period.n_items_before
        scored = {}
        for name, strategy in self.strategies.items():
            start = time.perf_counter()
            user_emb, item_emb = strategy.serving_embeddings()
            ranks = rank_positives(user_emb, item_emb, period.users, period.items,
                                   candidates.negatives, self.cfg.eval.chunk_rows)
            scored[name] = (metrics_from_ranks(ranks, self.cfg.eval.ks, new_user, new_item),
                            time.perf_counter() - start)
        # only now does the period join what the strategies may learn from
        shared.history.extend(period.users, period.items)
        results = []
        n_candidates = float(candidates.counts.mean() + 1) if len(period.users) else 0.0
        for name, strategy in self.strategies.items():
            start = time.perf_counter()
            strategy.retrain(period)
            retrain_seconds = time.perf_counter() - start
            metrics, eval_seconds = scored[name]
            results.append(StrategyResult(
                period=t, phase=period.phase, strategy=name, serving=name == self.serving,
                n_interactions=len(period.users), n_new_users=len(new_users), n_new_items=len(new_items),
                n_candidates=n_candidates, metrics=metrics,
                retrain_seconds=retrain_seconds, eval_seconds=eval_seconds,
            ))
        return results

    def _register(self, t: int, events: pd.DataFrame) -> tuple[Period, list[str], list[str]]:
        ordered = events.sort_values(["ts", "user", "item"], kind="mergesort")
        users_raw = ordered["user"].astype(str).tolist()
        items_raw = ordered["item"].astype(str).tolist()
        n_users_before, n_items_before = len(self.user_vocab), len(self.item_vocab)
        new_users = self.user_vocab.register(users_raw)
        new_items = self.item_vocab.register(items_raw)
        self.shared.n_users, self.shared.n_items = len(self.user_vocab), len(self.item_vocab)
        period = Period(
            index=t, phase=self.phases[t],
            users=self.user_vocab.lookup(users_raw), items=self.item_vocab.lookup(items_raw),
            n_users_before=n_users_before, n_items_before=n_items_before,
        )
        return period, new_users, new_items

    def _rows(self, raw_ids: list[str], namespace: str) -> torch.Tensor:
        model = self.cfg.model
        rows = initial_rows(raw_ids, namespace, self.cfg.seed, model.dim, model.init_std)
        return torch.from_numpy(rows).to(self.device)

    def _start_strategies(self) -> None:
        """Pretrain the shared base MF on every pretrain period; start each strategy from it."""
        history = self.shared.history
        base = MF.from_rows(self._rows(self.user_vocab.ids, "user"), self._rows(self.item_vocab.ids, "item"))
        train_mf(base, history.users, history.items, self.shared.sample_negatives,
                 self.cfg.pretrain, self.shared.rng("pretrain"))
        self.base_model = base
        for name in self.cfg.strategies.enabled:
            strategy = REGISTRY[name](getattr(self.cfg.strategies, name), self.shared)
            strategy.start(base)
            self.strategies[name] = strategy
