"""Matrix factorisation scored by dot product, trained with BCE and one sampled negative."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch

from learner.config import TrainSpec
from learner.tables import EmbeddingTable

NegativeSampler = Callable[[np.ndarray, np.random.Generator], np.ndarray]


class MF:
    """User and item tables; s(u, i) = <p_u, q_i> (no biases: the reference scores none)."""

    def __init__(self, users: EmbeddingTable, items: EmbeddingTable) -> None:
        self.users = users
        self.items = items

    @classmethod
    def from_rows(cls, user_rows: torch.Tensor, item_rows: torch.Tensor) -> "MF":
        return cls(EmbeddingTable(user_rows.clone()), EmbeddingTable(item_rows.clone()))

    def grow(self, user_rows: torch.Tensor, item_rows: torch.Tensor) -> None:
        self.users.grow(user_rows)
        self.items.grow(item_rows)

    def copy(self) -> "MF":
        return MF(self.users.copy(), self.items.copy())

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.users.weight, self.items.weight

    def state_dict(self) -> dict:
        return {"users": self.users.state_dict(), "items": self.items.state_dict()}

    @classmethod
    def from_state(cls, state: dict, device: str | torch.device = "cpu") -> "MF":
        return cls(EmbeddingTable.from_state(state["users"], device), EmbeddingTable.from_state(state["items"], device))


def bce_loss(s_pos: torch.Tensor, s_neg: torch.Tensor) -> torch.Tensor:
    """The reference loss: mean -log σ(s+) plus mean -log(1 - σ(s-)), each over the batch.

    softplus is the stable form of the same terms (the reference adds 1e-15 instead).
    """
    return torch.nn.functional.softplus(-s_pos).mean() + torch.nn.functional.softplus(s_neg).mean()


def mf_gradients(pu: torch.Tensor, qi: torch.Tensor, qj: torch.Tensor, l2: float):
    """Closed-form gradients of bce_loss + l2/2 * Σ_batch(|p_u|² + |q_i|² + |q_j|²).

    Cheaper than autograd for the many small batches MF training runs; a test checks
    them against autograd.
    """
    b = pu.shape[0]
    s_pos = (pu * qi).sum(1)
    s_neg = (pu * qj).sum(1)
    d_pos = (-torch.sigmoid(-s_pos) / b).unsqueeze(1)
    d_neg = (torch.sigmoid(s_neg) / b).unsqueeze(1)
    g_u = d_pos * qi + d_neg * qj + l2 * pu
    g_i = d_pos * pu + l2 * qi
    g_j = d_neg * pu + l2 * qj
    return g_u, g_i, g_j


def shuffled_batches(n: int, batch: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    order = rng.permutation(n)
    for lo in range(0, n, batch):
        yield order[lo : lo + batch]


def weighted_batches(weights: np.ndarray, batch: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """round(N / batch) batches of rows drawn with replacement by weight (SPMF)."""
    cdf = np.cumsum(weights, dtype=np.float64)
    cdf /= cdf[-1]
    for _ in range(max(1, round(len(cdf) / batch))):
        # inverse-CDF draws: one O(batch log N) search instead of rng.choice's O(N) per batch
        yield np.minimum(np.searchsorted(cdf, rng.random(batch), side="right"), len(cdf) - 1)


def train_mf(model: MF, users: np.ndarray, items: np.ndarray, sample_negatives: NegativeSampler,
             spec: TrainSpec, rng: np.random.Generator,
             batches: Callable[[np.random.Generator], Iterator[np.ndarray]] | None = None) -> None:
    """spec.epochs passes of row-sparse Adam over (users, items), fresh negatives per batch."""
    if len(users) == 0:
        return
    device = model.users.weight.device
    users_t = torch.as_tensor(users, dtype=torch.int64, device=device)
    items_t = torch.as_tensor(items, dtype=torch.int64, device=device)
    plan = batches or (lambda g: shuffled_batches(len(users), spec.batch, g))
    for _ in range(spec.epochs):
        for idx, neg in with_negatives(users, plan(rng), sample_negatives, rng):
            idx_t = torch.as_tensor(idx, device=device)
            neg_t = torch.as_tensor(neg, device=device)
            mf_step(model, users_t.index_select(0, idx_t), items_t.index_select(0, idx_t), neg_t, spec)


def with_negatives(users: np.ndarray, batches: Iterable[np.ndarray], sample_negatives: NegativeSampler,
                   rng: np.random.Generator) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One epoch's batches of row indices, each with one training negative per row.

    The negatives are drawn for the whole epoch at once: one vectorised draw, whose
    history lookups run sorted, costs a fraction of one draw per batch.
    """
    batches = list(batches)
    if not batches:
        return
    negatives = sample_negatives(users[np.concatenate(batches)], rng)
    lo = 0
    for idx in batches:
        yield idx, negatives[lo : lo + len(idx)]
        lo += len(idx)


def mf_step(model: MF, u: torch.Tensor, i: torch.Tensor, j: torch.Tensor, spec: TrainSpec) -> None:
    pu = model.users.weight.index_select(0, u)
    qi = model.items.weight.index_select(0, i)
    qj = model.items.weight.index_select(0, j)
    g_u, g_i, g_j = mf_gradients(pu, qi, qj, spec.l2)
    _apply(model.users, u, g_u, spec.lr)
    _apply(model.items, torch.cat([i, j]), torch.cat([g_i, g_j]), spec.lr)


def _apply(table: EmbeddingTable, rows: torch.Tensor, grads: torch.Tensor, lr: float) -> None:
    unique, inverse = torch.unique(rows, return_inverse=True)
    summed = torch.zeros((len(unique), grads.shape[1]), dtype=grads.dtype, device=grads.device)
    summed.index_add_(0, inverse, grads)
    table.adam_step(unique, summed, lr)
