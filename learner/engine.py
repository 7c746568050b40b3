"""The period engine: on the close of each period, evaluate then retrain every strategy.

The engine sees raw string ids only (what the bus carries) and owns the vocabularies, the
history and the strategies. Test-then-train is its structure: a strategy receives a
period's data only in `retrain`, which runs after its served model was scored on it.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from learner.candidates import sample_eval_candidates
from learner.config import LearnerConfig
from learner.evaluation import PeriodMetrics, full_ranks, metrics_from_ranks, rank_positives
from learner.health import NormGuard, TableHealth, table_health
from learner.memory import release_free_memory
from learner.mf import MF, train_mf
from learner.native import set_threads
from learner.period import Period, SharedState, stream_rng
from learner.strategies import REGISTRY, Strategy
from learner.strategies.base import same_state
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
    health: TableHealth  # of the served tables that were scored
    guard_warning: bool  # the norm guard warned about them (learner/health.py)
    full: PeriodMetrics | None = None  # against every known item, when eval.full_ranking is on
    # each interaction's rank among its candidates (validation and test periods; the paired
    # comparisons of a seed sweep resample them: learner/stats.py)
    ranks: np.ndarray | None = field(default=None, repr=False)


class ControlError(ValueError):
    """A control request the engine cannot honour in its current state; nothing changed."""


class UnknownStrategy(ControlError):
    """A control request names no registered strategy."""


class Engine:
    """Model of control: `enabled` strategies all train every period on the same data
    ("shadow" training); one of them serves. A serving swap takes effect at once; enabling
    or disabling takes effect at the next period boundary. A disabled strategy keeps its
    state; re-enabled, it resumes it (or restarts from the serving model on request).
    """

    def __init__(self, cfg: LearnerConfig, phases: list[str]) -> None:
        if "pretrain" not in phases[:1]:
            raise ValueError("the first period must be a pretrain period: every strategy starts from the base MF")
        self.cfg = cfg
        set_threads(cfg.threads)
        self.phases = list(phases)
        self.shared = SharedState(cfg.seed, cfg.device, len(phases), self.phases)
        self._eval_seed = cfg.seed if cfg.eval_seed is None else cfg.eval_seed
        self.user_vocab = Vocabulary()
        self.item_vocab = Vocabulary()
        self.strategies: dict[str, Strategy] = {}  # every strategy started so far, enabled or not
        self.base_model: MF | None = None  # the shared pretrained MF, once pretraining ran
        self.enabled = list(cfg.strategies.enabled)
        self.serving = cfg.strategies.serving
        self.swaps = 0
        self._pending: list[tuple[str, str, bool]] = []  # (enable|disable, strategy, from_serving)
        self._lock = threading.Lock()  # control requests arrive from other threads
        self.next_period = 0
        self._last_pretrain = max(t for t, p in enumerate(phases) if p == "pretrain")
        self.guard = NormGuard(cfg.guard.norm_growth, cfg.guard.norm_floor)

    @property
    def device(self) -> torch.device:
        return self.shared.device

    def close_period(self, t: int, events: pd.DataFrame) -> list[StrategyResult]:
        """Process period t (columns ts, user, item with raw ids); results per strategy."""
        if t != self.next_period:
            raise ValueError(f"periods close in order: expected period {self.next_period}, got {t}")
        if t >= len(self.phases):
            raise ValueError(f"period {t} is beyond the schedule's {len(self.phases)} periods")
        with self._lock:
            # fixed as the period starts closing, with next_period: the strategy that served it,
            # and the requests it applies (later ones were answered "when period t+1 closes")
            self.next_period += 1
            serving = self.serving
            due = len(self._pending)
        period, new_users, new_items = self._register(t, events)
        shared = self.shared
        if period.phase == "pretrain":
            shared.history.extend(period.users, period.items)
            self._apply_pending(due)
            if t == self._last_pretrain:
                self._start_strategies()
            return []
        with self._lock:
            active = {name: self.strategies[name] for name in self.enabled}
        user_rows = self._rows(new_users, "user")
        item_rows = self._rows(new_items, "item")
        for strategy in active.values():
            strategy.grow(user_rows, item_rows)
        candidates = sample_eval_candidates(
            shared.history,
            period.users,
            period.items,
            period.n_items_before,
            self.cfg.eval.negatives,
            stream_rng(self._eval_seed, "eval", t),
        )
        new_user = period.users >= period.n_users_before
        new_item = period.items >= period.n_items_before
        scored = {}
        ranks_of = {}
        for name, strategy in active.items():
            start = time.perf_counter()
            user_emb, item_emb = strategy.serving_embeddings()
            health = table_health(user_emb, item_emb)
            warned = self.guard.check(t, name, health)
            ranks = rank_positives(
                user_emb, item_emb, period.users, period.items, candidates.negatives, self.cfg.eval.chunk_rows
            )
            ranks_of[name] = ranks
            full = None
            if self.cfg.eval.full_ranking:
                all_ranks = full_ranks(
                    user_emb, item_emb, shared.history, period.users, period.items, period.n_items_before
                )
                full = metrics_from_ranks(all_ranks, self.cfg.eval.ks, new_user, new_item)
            scored[name] = (
                metrics_from_ranks(ranks, self.cfg.eval.ks, new_user, new_item),
                full,
                time.perf_counter() - start,
                health,
                warned,
            )
        # only now does the period join what the strategies may learn from
        shared.history.extend(period.users, period.items)
        results = []
        n_candidates = float(candidates.counts.mean() + 1) if len(period.users) else 0.0
        twins = self._twins(active, period) if self.cfg.strategies.share_repeated_work else {}
        seconds: dict[str, float] = {}
        for name, strategy in active.items():
            start = time.perf_counter()
            if name in twins:
                strategy.load_state_dict(copy.deepcopy(active[twins[name]].state_dict()))
                # its retrain cost is the work it repeats, measured once; the copy is bookkeeping
                seconds[name] = seconds[twins[name]]
            else:
                strategy.retrain(period)
                seconds[name] = time.perf_counter() - start
            retrain_seconds = seconds[name]
            metrics, full, eval_seconds, health, warned = scored[name]
            results.append(
                StrategyResult(
                    period=t,
                    phase=period.phase,
                    strategy=name,
                    serving=name == serving,
                    n_interactions=len(period.users),
                    n_new_users=len(new_users),
                    n_new_items=len(new_items),
                    n_candidates=n_candidates,
                    metrics=metrics,
                    retrain_seconds=retrain_seconds,
                    eval_seconds=eval_seconds,
                    health=health,
                    guard_warning=warned,
                    full=full,
                    ranks=ranks_of[name] if period.phase in ("validation", "test") else None,
                )
            )
        self._apply_pending(due)
        release_free_memory()  # the period's training buffers are freed: give their pages back
        return results

    @staticmethod
    def _twins(active: dict[str, Strategy], period: Period) -> dict[str, str]:
        """{strategy: an earlier one whose retrain of `period` it would repeat exactly}.

        Decided on the states before retraining, so runtime control (a strategy paused,
        restarted from the serving model) ends the sharing by itself."""
        twins: dict[str, str] = {}
        originals: list[tuple[str, Hashable, Strategy]] = []
        for name, strategy in active.items():
            key = strategy.work_key(period)
            twin = (
                None
                if key is None
                else next(
                    (
                        other
                        for other, other_key, s in originals
                        if other_key == key and same_state(s.state_dict(), strategy.state_dict())
                    ),
                    None,
                )
            )
            if twin is None:
                originals.append((name, key, strategy))
            else:
                twins[name] = twin
        return twins

    # --- state ---------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Everything needed to continue exactly: ids, history, models, control state.

        Random numbers need no saving: every stream is derived from (seed, purpose, period).
        """
        with self._lock:
            return {
                "next_period": self.next_period,
                "user_ids": list(self.user_vocab.ids),
                "item_ids": list(self.item_vocab.ids),
                "history": self.shared.history.state_dict(),
                "base_model": self.base_model.state_dict() if self.base_model is not None else None,
                "strategies": {name: s.state_dict() for name, s in self.strategies.items()},
                "control": {
                    "enabled": list(self.enabled),
                    "serving": self.serving,
                    "swaps": self.swaps,
                    "pending": list(self._pending),
                },
                "guard": self.guard.state_dict(),
            }

    def load_state_dict(self, state: dict) -> None:
        self.next_period = int(state["next_period"])
        self.user_vocab = Vocabulary(state["user_ids"])
        self.item_vocab = Vocabulary(state["item_ids"])
        self.shared.n_users, self.shared.n_items = len(self.user_vocab), len(self.item_vocab)
        self.shared.history.load_state_dict(state["history"])
        if state["base_model"] is not None:
            self.base_model = MF.from_state(state["base_model"], self.device)
        self.strategies = {}
        for name, strategy_state in state["strategies"].items():
            strategy = REGISTRY[name].from_settings(self.cfg.strategies, self.shared)
            strategy.load_state_dict(strategy_state)
            self.strategies[name] = strategy
        control = state["control"]
        self.enabled, self.serving = list(control["enabled"]), control["serving"]
        self.swaps = int(control["swaps"])
        self._pending = [tuple(p) for p in control["pending"]]
        self.guard.load_state_dict(state.get("guard", {}))  # checkpoints before the guard have none

    # --- control -------------------------------------------------------------------

    def control_state(self) -> dict:
        with self._lock:
            return {
                "serving": self.serving,
                "enabled": list(self.enabled),
                "disabled": sorted(set(self.strategies) - set(self.enabled)),
                "pending": [{"action": a, "strategy": n, "from_serving": f} for a, n, f in self._pending],
                "swaps": self.swaps,
                "next_period": self.next_period,
            }

    def set_serving(self, name: str) -> bool:
        """Serve `name` from now on; returns whether the serving strategy changed."""
        self._known(name)
        with self._lock:
            if name not in self.enabled:
                raise ControlError(f"{name} is not enabled; enable it first (it starts at the next period)")
            if self.strategies and name not in self.strategies:
                raise ControlError(f"{name} starts at the next period boundary; serve it after that")
            swapped = name != self.serving
            self.serving = name
            self.swaps += int(swapped)
            return swapped

    def request_enable(self, name: str, from_serving: bool = False) -> None:
        self._known(name)
        with self._lock:
            if name in self.enabled and not from_serving:
                raise ControlError(f"{name} is already enabled")
            if from_serving and not REGISTRY[self.serving].serves_mf:
                raise ControlError(
                    f"{self.serving} serves a sequence model, which no strategy can start from; "
                    f"enable {name} without from_serving, or serve an MF-based strategy first"
                )
            self._pending.append(("enable", name, from_serving))

    def request_disable(self, name: str) -> None:
        self._known(name)
        with self._lock:
            if name not in self.enabled:
                raise ControlError(f"{name} is not enabled")
            if name == self.serving:
                raise ControlError(f"{name} is serving; serve another strategy before disabling it")
            if len(self.enabled) == 1:
                raise ControlError("the last enabled strategy cannot be disabled")
            self._pending.append(("disable", name, False))

    def _known(self, name: str) -> None:
        if name not in REGISTRY:
            raise UnknownStrategy(f"unknown strategy {name!r}; known: {', '.join(REGISTRY)}")

    def _apply_pending(self, due: int) -> None:
        """Apply the first `due` queued enable/disable requests at a period boundary."""
        with self._lock:
            pending, self._pending = self._pending[:due], self._pending[due:]
            for action, name, from_serving in pending:
                if action == "disable":
                    if name in self.enabled and name != self.serving:
                        self.enabled.remove(name)
                    continue
                if self.strategies:  # strategies run: start or resume it now
                    if name not in self.strategies or from_serving:
                        self.strategies[name] = self._new_strategy(name, self._serving_model())
                    else:
                        self._catch_up(self.strategies[name])
                if name not in self.enabled:
                    self.enabled.append(name)

    def _serving_model(self) -> MF:
        """What a newly enabled strategy starts from: the serving model, or, while a sequence
        model serves (its tables are no MF rows), the pretrained base. An explicit
        from_serving request is refused while one serves (`request_enable`)."""
        serving = self.strategies[self.serving]
        return MF.from_rows(*serving.serving_embeddings()) if serving.serves_mf else self.base_model

    def _catch_up(self, strategy: Strategy) -> None:
        """A resumed strategy gets the initial rows of ids registered while it was off."""
        users, items = strategy.serving_embeddings()
        strategy.grow(
            self._rows(self.user_vocab.ids[users.shape[0] :], "user"),
            self._rows(self.item_vocab.ids[items.shape[0] :], "item"),
        )

    def _new_strategy(self, name: str, base: MF) -> Strategy:
        strategy = REGISTRY[name].from_settings(self.cfg.strategies, self.shared)
        strategy.start(base)
        return strategy

    def _register(self, t: int, events: pd.DataFrame) -> tuple[Period, list[str], list[str]]:
        ordered = events.sort_values(["ts", "user", "item"], kind="mergesort")
        users_raw = ordered["user"].astype(str).tolist()
        items_raw = ordered["item"].astype(str).tolist()
        n_users_before, n_items_before = len(self.user_vocab), len(self.item_vocab)
        new_users = self.user_vocab.register(users_raw)
        new_items = self.item_vocab.register(items_raw)
        self.shared.n_users, self.shared.n_items = len(self.user_vocab), len(self.item_vocab)
        period = Period(
            index=t,
            phase=self.phases[t],
            users=self.user_vocab.lookup(users_raw),
            items=self.item_vocab.lookup(items_raw),
            n_users_before=n_users_before,
            n_items_before=n_items_before,
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
        train_mf(
            base,
            history.users,
            history.items,
            self.shared.sample_negatives,
            self.cfg.pretrain,
            self.shared.rng("pretrain"),
        )
        self.base_model = base
        with self._lock:
            for name in self.enabled:
                self.strategies[name] = self._new_strategy(name, base)
