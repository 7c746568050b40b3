"""What GRU4Rec and Caser share: sequence models over each user's recent items, served as
dot-product tables, retrained every period on the history (or the closed period alone).

Serving (docs/architecture.md, "Sequence models"): the user table holds, per known user,
the model's encoding of their last `window` items plus a constant 1; the item table holds
each item's output embedding plus its bias, so <user row, item row> is the model's score.
The user table is rebuilt at the end of `retrain(t)` from the history through period t,
and only read until the next retrain: when period t+1 is scored, no event of it has
reached the model. Users new in a period get the empty-sequence encoding.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from learner.mf import MF
from learner.period import Period
from learner.sequences import PAD, grow_parameter, last_items, relative_items, widening
from learner.strategies.base import Strategy
from learner.train_spec import TrainSpec
from replay_data.typed_config import not_allowed

ENCODE_ROWS = 4096  # users encoded per forward pass when the user table is rebuilt


@dataclass(frozen=True)
class SequenceConfig:
    # "full": each period, train on the whole history so far, warm-started (like
    # full_retrain); "fine_tune": on the closed period's events only (their input windows
    # still reach back into the history)
    mode: Literal["full", "fine_tune"] = "full"
    window: int = 5  # L: the user's last L items are the model's input (Caser's L = 5)
    train: TrainSpec = TrainSpec()

    def validate(self) -> None:
        if self.window < 1:
            raise not_allowed("window", self.window, "window must be >= 1 (items in a model's input)")


class SequenceNet(torch.nn.Module, ABC):
    """A sequence model whose score is <encode(user, window), out[i]> + bias[i]."""

    item_in: torch.nn.Parameter  # (items, model.dim): input embeddings, new rows = initial rows
    out: torch.nn.Parameter  # (items, width): output embeddings
    bias: torch.nn.Parameter  # (items,)

    @abstractmethod
    def encode(self, users: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
        """(B, width) from user ids (B,) and their input windows (B, L) of item ids or PAD."""

    def user_tables(self) -> list[torch.nn.Parameter]:
        """Parameters with one row per user (Caser's user embeddings), grown with new users."""
        return []

    def score(self, encoded: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores (B, K) of items (B, K) for encoded users (B, width)."""
        return torch.einsum("bd,bkd->bk", encoded, self.out[items]) + self.bias[items]


class SequenceStrategy(Strategy, ABC):
    """Owns one SequenceNet, its optimiser and the served tables built from it."""

    cfg: SequenceConfig
    serves_mf = False
    # item ids of each training row: the event's own (offset 0) and, for Caser, the next T-1
    target_offsets: np.ndarray = np.arange(1)
    negatives_per_target = 0  # sampled negatives per target; 0 = the loss finds its own

    @abstractmethod
    def build(self, users: torch.Tensor, items: torch.Tensor, widen: torch.Tensor) -> SequenceNet:
        """A new net from the base MF's rows (model.dim wide) and `widen`, the fixed map
        of such rows into its output width (`out_width`), for its initial output rows."""

    @abstractmethod
    def out_width(self, dim: int) -> int:
        """Width of the output item embeddings, for MF rows of width dim."""

    @abstractmethod
    def optimizer(self, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer: ...

    @abstractmethod
    def loss(self, encoded: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor | None) -> torch.Tensor:
        """The batch loss from encoded users (B, width), target items (B, T; PAD where the
        user's sequence ends) and sampled negatives (B, T * negatives_per_target) or None."""

    def start(self, base: MF) -> None:
        users, items = base.users.weight, base.items.weight
        dim = items.shape[1]
        self.widen = widening(dim, self.out_width(dim), self.rng(-1, "widen")).to(items)
        self._new_net(users.clone(), items.clone())
        # trained on the pretrain periods before it first serves, as the base MF was
        history = self.shared.history
        self._train(history.users, history.items, 0, self.rng(-1, "train"))
        self._rebuild_tables()

    def _new_net(self, users: torch.Tensor, items: torch.Tensor) -> None:
        with torch.random.fork_rng(devices=[]):  # seed the layers' default init without touching global RNG
            torch.manual_seed(int(self.rng(-1, "init").integers(2**31)))
            self.net = self.build(users, items, self.widen).to(self.shared.device).eval()
        self.opt = self.optimizer(list(self.net.parameters()))

    def grow(self, user_rows: torch.Tensor, item_rows: torch.Tensor) -> None:
        net = self.net
        item_rows = item_rows.to(net.out)
        grow_parameter(net.item_in, item_rows, self.opt)
        grow_parameter(net.out, item_rows @ self.widen, self.opt)
        grow_parameter(net.bias, item_rows.new_zeros(len(item_rows)), self.opt)
        for table in net.user_tables():
            grow_parameter(table, user_rows, self.opt)
        first = self.users.shape[0]
        new_users = torch.arange(first, first + len(user_rows), device=net.out.device)
        # a user new in this period has no events before it: the empty-sequence encoding
        # (so does one registered while this strategy was off, until its next retrain)
        empty = torch.full((len(user_rows), self.cfg.window), PAD, dtype=torch.int64, device=net.out.device)
        self.users = torch.cat([self.users, self._user_rows(new_users, empty)])
        self.items = self._item_rows()

    def serving_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.users, self.items

    def retrain(self, period: Period) -> None:
        history = self.shared.history  # already holds the closed period
        start = 0 if self.cfg.mode == "full" else len(history) - len(period.users)
        self._train(history.users, history.items, start, self.rng(period.index, "train"))
        self._rebuild_tables()

    def _train(self, users: np.ndarray, items: np.ndarray, start: int, rng: np.random.Generator) -> None:
        """spec.epochs shuffled passes over the events users[start:], each with its input window."""
        spec = self.cfg.train
        n = len(users) - start
        if n <= 0 or spec.epochs == 0:
            return
        device = self.shared.device
        rows = torch.as_tensor(users[start:], device=device)
        windows = torch.as_tensor(relative_items(users, items, start, np.arange(-self.cfg.window, 0)), device=device)
        targets = torch.as_tensor(relative_items(users, items, start, self.target_offsets), device=device)
        k = len(self.target_offsets) * self.negatives_per_target
        self.net.train()
        with torch.random.fork_rng(devices=[]):  # dropout draws from a seeded, private stream
            torch.manual_seed(int(rng.integers(2**31)))
            for _ in range(spec.epochs):
                order = rng.permutation(n)
                negatives = (
                    torch.as_tensor(
                        self.shared.sample_negatives(np.repeat(users[start:][order], k), rng).reshape(n, k),
                        device=device,
                    )
                    if k
                    else None
                )
                order_t = torch.as_tensor(order, device=device)
                for lo in range(0, n, spec.batch):
                    batch = order_t[lo : lo + spec.batch]
                    encoded = self.net.encode(rows[batch], windows[batch])
                    loss = self.loss(
                        encoded, targets[batch], None if negatives is None else negatives[lo : lo + spec.batch]
                    )
                    self.opt.zero_grad(set_to_none=True)
                    loss.backward()
                    self.opt.step()
        self.net.eval()

    def _rebuild_tables(self) -> None:
        """Every known user's row from their last items in the history (through the newest
        closed period: what the next period is scored with), and every item's row."""
        history = self.shared.history
        n_users = self.shared.n_users
        windows = torch.as_tensor(last_items(history.users, history.items, n_users, self.cfg.window))
        users = torch.arange(n_users)
        device = self.shared.device
        self.users = torch.cat(
            [
                self._user_rows(users[lo : lo + ENCODE_ROWS].to(device), windows[lo : lo + ENCODE_ROWS].to(device))
                for lo in range(0, max(n_users, 1), ENCODE_ROWS)
            ]
        )
        self.items = self._item_rows()

    def _user_rows(self, users: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            encoded = self.net.encode(users, windows)
            return torch.cat([encoded, encoded.new_ones(len(users), 1)], 1)

    def _item_rows(self) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([self.net.out, self.net.bias.unsqueeze(1)], 1).clone()

    def state_dict(self) -> dict:
        return {
            "net": self.net.state_dict(),
            "opt": self.opt.state_dict(),
            "widen": self.widen,
            "users": self.users,
            "items": self.items,
        }

    def load_state_dict(self, state: dict) -> None:
        device = self.shared.device
        net = state["net"]
        self.widen = state["widen"].to(device)
        # rebuilt at the saved shapes (only Caser has user rows), then overwritten
        self._new_net(net.get("users", net["item_in"][:0]), net["item_in"])
        self.net.load_state_dict(net)
        self.opt.load_state_dict(state["opt"])
        self.users, self.items = state["users"].to(device), state["items"].to(device)
