"""SML (Zhang et al., SIGIR 2020) run in streaming order. Its ablations (SML-S and the
paper's others) are subclasses in sml_ablations.py.

State of the task in progress (period s, the newest closed one):
  base   = W_{s-1}, the previous deployed model (constant within the task)
  w_hat  = ŵ_s, MF rows learned on D_s only *through* the transfer (dense Adam by default)
  serving = f_Θ(W_{s-1}, ŵ_s), served during period s+1
When period t = s+1 closes, the engine has scored `serving` on D_t; then `retrain`
finishes task s with D_t as its next period (K rounds: step 2 on D_t, then step 1 on D_s
except after the last round), deploys W_s = f_Θ(W_{s-1}, ŵ_s), and starts task t.
docs/architecture.md, "SML in streaming order", has the derivation from the reference code.

Two choices follow the authors' code because without them the tables diverge on streams
where most rows are dead (news; docs/fidelity.md, "Divergence"): step 2 draws its
negatives from the next period's own items (`step2_negatives`), and ŵ trains with dense
Adam (`w_hat_adam`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch

from learner.mf import MF, NegativeSampler, bce_loss, epoch_rows, shuffled_batches
from learner.native import set_threads
from learner.negatives import period_negatives
from learner.period import Period
from learner.strategies.base import Strategy, register
from learner.tables import AdamSteps
from learner.train_spec import TrainSpec
from learner.transfer import Transfer
from replay_data.typed_config import not_allowed


@dataclass(frozen=True)
class SmlConfig:
    rounds: int | None = None  # K; None = 10 for 40-period presets, 7 for 63 (see resolve_rounds)
    step1: TrainSpec = TrainSpec(lr=1e-2, batch=1024, epochs=1, l2=1e-6)
    step2: TrainSpec = TrainSpec(lr=1e-3, batch=256, epochs=1, l2=1e-4)
    # "reseed": ŵ restarts from the transfer output each round (the authors' code);
    # "continue": ŵ keeps its own value across rounds (the paper's Algorithm 1)
    w_hat: Literal["reseed", "continue"] = "reseed"
    # How an id first seen in the period being scored is served. "initial": its initial row;
    # "transfer": f_Θ(initial row, initial row) with the Θ learned before the period, which
    # is what SML deploys for an id it has not trained yet (its W and ŵ rows are both the
    # initial row). Applies once SML serves transferred tables (from its first retrain on).
    # "transfer" scored higher on every stream measured (docs/fidelity.md, "Cold-start
    # serving"); "initial" reproduces figures measured before it became the default
    cold_start: Literal["initial", "transfer"] = "transfer"
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
    # threads (torch and the compiled transfer) while SML retrains; None = every core this process may run on (a local
    # sweep pool gives each worker its share, simulator/worker.py). The transfer's dense matmuls
    # scale with cores (0.1x Yelp shape, period 20: 12.6 s on 1 thread, 7.8 s on 2), unlike
    # MF's small sparse steps, which run on learner.threads
    threads: int | None = None
    # the cnn, fc and next_period flags of old configs
    unknown_key_hint: ClassVar[str] = (
        "the ablations are strategies now: enable sml_cnn, sml_fc, sml_n, sml_s or sml_fp beside sml"
    )

    @property
    def retrain_threads(self) -> int:
        return self.threads or len(os.sched_getaffinity(0))

    def validate(self) -> None:
        if self.rounds is not None and self.rounds < 1:
            raise not_allowed("rounds", self.rounds, "rounds must be >= 1 (or null for the default)")
        if self.chunk_rows < 1:
            raise not_allowed("chunk_rows", self.chunk_rows, "chunk_rows must be >= 1")
        if self.threads is not None and self.threads < 1:
            raise not_allowed("threads", self.threads, "threads must be >= 1 (or null for every core)")


def resolve_rounds(cfg: SmlConfig, n_periods: int) -> int:
    """K from the reference: 10 outer rounds on Yelp's 40 periods, 7 on Adressa's 63."""
    if cfg.rounds is not None:
        return cfg.rounds
    return 7 if n_periods >= 63 else 10


@register
class Sml(Strategy):
    name = "sml"
    # the ablations share SML's random streams: their differences come from the variant alone
    stream = "sml"
    config = SmlConfig
    cfg: SmlConfig
    # what the ablations (sml_ablations.py) switch off
    cnn: ClassVar[bool] = True  # the transfer's CNN part
    fc: ClassVar[bool] = True  # the transfer's FC part
    next_period: ClassVar[bool] = True  # step 2 learns Θ on the next period, not the task's own
    step1_through_transfer: ClassVar[bool] = True  # step 1 learns ŵ on f_Θ(W, ŵ), not on ŵ itself
    task: tuple[np.ndarray, np.ndarray] | None = None  # D_s, buffered; None until the first retrain

    def start(self, base: MF) -> None:
        dim = base.users.weight.shape[1]
        device = self.shared.device
        with torch.random.fork_rng(devices=[]):  # seed Θ's default init without touching global RNG
            torch.manual_seed(int(self.rng(-1, "transfer-init").integers(2**31)))
            self.theta_u = Transfer(dim, self.cnn, self.fc).to(device)
            self.theta_i = Transfer(dim, self.cnn, self.fc).to(device)
        # one Adam for Θ, kept across periods; coupled weight decay = λ2 as in the reference.
        # foreach: one call per operation over Θ's 16 small tensors, not 16 (torch's CPU
        # default); the same bits, in half the time a step
        self.theta_opt = torch.optim.Adam(
            list(self.theta_u.parameters()) + list(self.theta_i.parameters()),
            lr=self.cfg.step2.lr,
            weight_decay=self.cfg.step2.l2,
            foreach=True,
        )
        self.base_u, self.base_i = base.users.weight.clone(), base.items.weight.clone()
        self.w_hat = MF.from_rows(self.base_u, self.base_i)
        # during the first online period every strategy serves the pretrained model
        self.serve_u, self.serve_i = self.base_u.clone(), self.base_i.clone()
        self.task = None

    def grow(self, user_rows: torch.Tensor, item_rows: torch.Tensor) -> None:
        user_rows, item_rows = user_rows.to(self.base_u), item_rows.to(self.base_i)
        self.base_u = torch.cat([self.base_u, user_rows])
        self.base_i = torch.cat([self.base_i, item_rows])
        self.w_hat.grow(user_rows, item_rows)
        if self.cfg.cold_start == "transfer" and self.task is not None:
            # Θ has not seen the period being scored yet (it retrains after scoring): no leak
            chunk = self.cfg.chunk_rows
            user_rows = self.theta_u.apply_table(user_rows, user_rows, chunk)
            item_rows = self.theta_i.apply_table(item_rows, item_rows, chunk)
        self.serve_u = torch.cat([self.serve_u, user_rows])
        self.serve_i = torch.cat([self.serve_i, item_rows])

    def serving_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.serve_u, self.serve_i

    def frozen(self, period: Period) -> bool:
        """SML keeps meta-learning in every phase; SML-S overrides this."""
        return False

    def step1_epochs(self, period: Period) -> int:
        """Epochs of the step 1 that starts the period's task."""
        return self.cfg.step1.epochs

    def work_key(self, period: Period) -> tuple:
        # The ablations read SML's settings, so their keys differ from SML's only by what they
        # change in this retrain: SML-S once frozen; SML-N only where a step 2 runs (not in
        # the first online period, nor frozen)
        frozen = self.frozen(period)
        runs_step2 = self.task is not None and not frozen
        return (
            self.stream,
            self.cfg,
            frozen,
            self.step1_epochs(period),
            (self.cnn, self.fc),
            self.next_period or not runs_step2,
            self.step1_through_transfer,
        )

    def retrain(self, period: Period) -> None:
        before = set_threads(self.cfg.retrain_threads)
        try:
            self._retrain(period)
        finally:
            set_threads(before)

    def _retrain(self, period: Period) -> None:
        frozen = self.frozen(period)
        if self.task is not None and not frozen:
            self._finish_task(period)
            deployed = self._transfer_tables(self.w_hat)
        else:
            # first online period, or a frozen transfer: W_{t-1} is what was served
            deployed = (self.serve_u, self.serve_i)
        self.base_u, self.base_i = deployed[0].clone(), deployed[1].clone()
        self._reset_w_hat(self.base_u, self.base_i)
        self._step1(period.users, period.items, self.step1_epochs(period), self.rng(period.index, "step1-start"))
        self.serve_u, self.serve_i = self._transfer_tables(self.w_hat)
        self.task = (period.users, period.items)

    def _finish_task(self, period: Period) -> None:
        task_users, task_items = self.task
        if self.next_period:
            next_users, next_items = period.users, period.items
        else:  # SML-N: the transfer never looks at the next period
            next_users, next_items = task_users, task_items
        rounds = resolve_rounds(self.cfg, self.shared.n_periods)
        for k in range(rounds):
            self._step2(next_users, next_items, self.rng(period.index, f"step2-{k}"))
            if k == rounds - 1:
                break
            if self.cfg.w_hat == "reseed":
                self._reset_w_hat(*self._transfer_tables(self.w_hat))
            self._step1(task_users, task_items, self.cfg.step1.epochs, self.rng(period.index, f"step1-{k}"))

    def _reset_w_hat(self, users: torch.Tensor, items: torch.Tensor) -> None:
        """New values for ŵ; its Adam moments carry over, as in the reference."""
        self.w_hat.users.weight = users.clone()
        self.w_hat.items.weight = items.clone()

    def _transfer_tables(self, w_hat: MF) -> tuple[torch.Tensor, torch.Tensor]:
        chunk = self.cfg.chunk_rows
        return (
            self.theta_u.apply_table(self.base_u, w_hat.users.weight, chunk),
            self.theta_i.apply_table(self.base_i, w_hat.items.weight, chunk),
        )

    def _step1(self, users: np.ndarray, items: np.ndarray, epochs: int, rng: np.random.Generator) -> None:
        """Learn ŵ on D through the frozen transfer: L_r = BCE(f(W, ŵ)) + λ1/2 Σ_batch |ŵ|²
        (SML-FP: BCE(ŵ) on ŵ itself)."""
        spec: TrainSpec = self.cfg.step1
        self._set_theta_trainable(False)
        dense = self.cfg.w_hat_adam == "dense"
        with (
            AdamSteps(self.w_hat.users, spec.lr, dense) as adam_u,
            AdamSteps(self.w_hat.items, spec.lr, dense) as adam_i,
        ):
            for _ in range(epochs):
                batches = self._batches(users, items, spec.batch, self.shared.sample_negatives, rng)
                for b, uu, u_inv, ii, i_inv in batches:
                    h_u = adam_u.read(uu).requires_grad_(True)
                    h_i = adam_i.read(ii).requires_grad_(True)
                    out_u, out_i = h_u, h_i
                    if self.step1_through_transfer:
                        out_u = self.theta_u(self.base_u.index_select(0, uu), h_u)
                        out_i = self.theta_i(self.base_i.index_select(0, ii), h_i)
                    out_u, out_i = out_u.index_select(0, u_inv), out_i.index_select(0, i_inv)
                    s_pos = (out_u * out_i[:b]).sum(1)
                    s_neg = (out_u * out_i[b:]).sum(1)
                    rows_u, rows_i = h_u.index_select(0, u_inv), h_i.index_select(0, i_inv)
                    l2 = 0.5 * spec.l2 * (rows_u.pow(2).sum() + rows_i.pow(2).sum())
                    (bce_loss(s_pos, s_neg) + l2).backward()
                    with torch.no_grad():
                        adam_u.step(uu, h_u.grad)
                        adam_i.step(ii, h_i.grad)
        self._set_theta_trainable(True)

    def _step2(self, users: np.ndarray, items: np.ndarray, rng: np.random.Generator) -> None:
        """Learn Θ on the next period with W_{s-1} and ŵ_s fixed: L_s = BCE(f(W, ŵ)) (+ λ2 via Adam)."""
        spec: TrainSpec = self.cfg.step2
        negatives = (
            period_negatives(users, items) if self.cfg.step2_negatives == "period" else self.shared.sample_negatives
        )
        for _ in range(spec.epochs):
            for b, uu, u_inv, ii, i_inv in self._batches(users, items, spec.batch, negatives, rng):
                out_u = self.theta_u(*_rows(uu, self.base_u, self.w_hat.users.weight)).index_select(0, u_inv)
                out_i = self.theta_i(*_rows(ii, self.base_i, self.w_hat.items.weight)).index_select(0, i_inv)
                loss = bce_loss((out_u * out_i[:b]).sum(1), (out_u * out_i[b:]).sum(1))
                self.theta_opt.zero_grad(set_to_none=True)
                loss.backward()
                self.theta_opt.step()

    def _batches(
        self, users: np.ndarray, items: np.ndarray, batch: int, negatives: NegativeSampler, rng: np.random.Generator
    ):
        """Shuffled batches with one sampled negative per row, as unique rows and inverses,
        so the transfer runs once per distinct user and item: (b, uu, u_inv, ii, i_inv)
        where items ii[i_inv[:b]] are the positives and ii[i_inv[b:]] the negatives."""
        device = self.shared.device
        order, drawn, bounds = epoch_rows(users, shuffled_batches(len(users), batch, rng), negatives, rng)
        for lo, hi in bounds:
            idx = order[lo:hi]
            u = torch.as_tensor(users[idx], device=device)
            i = torch.as_tensor(items[idx], device=device)
            j = torch.as_tensor(drawn[lo:hi], device=device)
            uu, u_inv = torch.unique(u, return_inverse=True)
            ii, i_inv = torch.unique(torch.cat([i, j]), return_inverse=True)
            yield len(idx), uu, u_inv, ii, i_inv

    def _set_theta_trainable(self, flag: bool) -> None:
        for p in list(self.theta_u.parameters()) + list(self.theta_i.parameters()):
            p.requires_grad_(flag)

    def state_dict(self) -> dict:
        return {
            "theta_u": self.theta_u.state_dict(),
            "theta_i": self.theta_i.state_dict(),
            "theta_opt": self.theta_opt.state_dict(),
            "base": (self.base_u, self.base_i),
            "serve": (self.serve_u, self.serve_i),
            "w_hat": self.w_hat.state_dict(),
            "task": self.task,
        }

    def load_state_dict(self, state: dict) -> None:
        device = self.shared.device
        self.start(MF.from_state(state["w_hat"], device))
        self.theta_u.load_state_dict(state["theta_u"])
        self.theta_i.load_state_dict(state["theta_i"])
        self.theta_opt.load_state_dict(state["theta_opt"])
        self.base_u, self.base_i = (t.to(device) for t in state["base"])
        self.serve_u, self.serve_i = (t.to(device) for t in state["serve"])
        self.w_hat = MF.from_state(state["w_hat"], device)
        self.task = state["task"]


def _rows(rows: torch.Tensor, *tables: torch.Tensor) -> list[torch.Tensor]:
    return [table.index_select(0, rows) for table in tables]
