"""Matrix factorisation scored by dot product, trained with BCE and one sampled negative."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch

from learner.train_spec import TrainSpec
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
    """spec.epochs passes of row-sparse Adam over (users, items), fresh negatives per epoch."""
    if len(users) == 0:
        return
    device = model.users.weight.device
    users_t = torch.as_tensor(users, dtype=torch.int64, device=device)
    items_t = torch.as_tensor(items, dtype=torch.int64, device=device)
    plan = batches or (lambda g: shuffled_batches(len(users), spec.batch, g))
    for _ in range(spec.epochs):
        order, negatives, bounds = epoch_rows(users, plan(rng), sample_negatives, rng)
        # one copy to the device and one gather per epoch; each batch is then a view
        order_t = torch.as_tensor(order, device=device)
        u, i = users_t.index_select(0, order_t), items_t.index_select(0, order_t)
        j = torch.as_tensor(negatives, device=device)
        for lo, hi in bounds:
            mf_step(model, u[lo:hi], i[lo:hi], j[lo:hi], spec)


def epoch_rows(users: np.ndarray, batches: Iterable[np.ndarray], sample_negatives: NegativeSampler,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """One epoch's batches laid end to end: (row order, one negative per row, each batch's
    [lo, hi) in both).

    The negatives are drawn for the whole epoch at once: one vectorised draw, whose
    history lookups run sorted, costs a fraction of one draw per batch.
    """
    batches = list(batches)
    if not batches:
        return np.empty(0, np.int64), np.empty(0, np.int64), []
    order = np.concatenate(batches)
    ends = np.cumsum([len(idx) for idx in batches]).tolist()
    return order, sample_negatives(users[order], rng), list(zip([0] + ends[:-1], ends))


def mf_step(model: MF, u: torch.Tensor, i: torch.Tensor, j: torch.Tensor, spec: TrainSpec) -> None:
    pu = model.users.weight.index_select(0, u)
    qi = model.items.weight.index_select(0, i)
    qj = model.items.weight.index_select(0, j)
    g_u, g_i, g_j = mf_gradients(pu, qi, qj, spec.l2)
    model.users.adam_step(u, g_u, spec.lr)
    model.items.adam_step(torch.cat([i, j]), torch.cat([g_i, g_j]), spec.lr)
