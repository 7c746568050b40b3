"""Matrix factorisation scored by dot product, trained with BCE and one sampled negative."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from learner import mf_native
from learner.tables import EmbeddingTable
from learner.train_spec import TrainSpec

NegativeSampler = Callable[[np.ndarray, np.random.Generator], np.ndarray]


class MF:
    """User and item tables; s(u, i) = <p_u, q_i> (no biases: the reference scores none)."""

    def __init__(self, users: EmbeddingTable, items: EmbeddingTable) -> None:
        self.users = users
        self.items = items

    @classmethod
    def from_rows(cls, user_rows: torch.Tensor, item_rows: torch.Tensor) -> MF:
        return cls(EmbeddingTable(user_rows.clone()), EmbeddingTable(item_rows.clone()))

    def grow(self, user_rows: torch.Tensor, item_rows: torch.Tensor) -> None:
        self.users.grow(user_rows)
        self.items.grow(item_rows)

    def copy(self) -> MF:
        return MF(self.users.copy(), self.items.copy())

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.users.weight, self.items.weight

    def state_dict(self) -> dict:
        return {"users": self.users.state_dict(), "items": self.items.state_dict()}

    @classmethod
    def from_state(cls, state: dict, device: str | torch.device = "cpu") -> MF:
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


Plan = tuple[np.ndarray, np.ndarray]  # rows in training order, and where each batch ends


def shuffled_batches(n: int, batch: int, rng: np.random.Generator) -> Plan:
    """A permutation of the n rows in batches of `batch` (the last one shorter)."""
    return rng.permutation(n), np.minimum(np.arange(batch, n + batch, batch), n)


def weighted_batches(weights: np.ndarray, batch: int, rng: np.random.Generator) -> Plan:
    """round(N / batch) batches of rows drawn with replacement by weight (SPMF)."""
    cdf = np.cumsum(weights, dtype=np.float64)
    cdf /= cdf[-1]
    n_batches = max(1, round(len(cdf) / batch))
    # inverse-CDF draws, all batches at once: the same numbers as one draw per batch
    rows = np.minimum(np.searchsorted(cdf, rng.random(n_batches * batch), side="right"), len(cdf) - 1)
    return rows, np.arange(batch, (n_batches + 1) * batch, batch)


def train_mf(
    model: MF,
    users: np.ndarray,
    items: np.ndarray,
    sample_negatives: NegativeSampler,
    spec: TrainSpec,
    rng: np.random.Generator,
    batches: Callable[[np.random.Generator], Plan] | None = None,
) -> None:
    """spec.epochs passes of row-sparse Adam over (users, items), fresh negatives per epoch."""
    if len(users) == 0:
        return
    plan = batches or (lambda g: shuffled_batches(len(users), spec.batch, g))
    run_epoch = epoch_runner(model.users.weight.device)
    for _ in range(spec.epochs):
        order, negatives, bounds = epoch_rows(users, plan(rng), sample_negatives, rng)
        run_epoch(model, users[order], items[order], negatives, bounds, spec)


EpochRunner = Callable[[MF, np.ndarray, np.ndarray, np.ndarray, list[tuple[int, int]], TrainSpec], None]


def epoch_runner(device: torch.device) -> EpochRunner:
    """The compiled loop on the CPU; torch's batched kernels on a GPU, where they pay off."""
    return native_epoch if device.type == "cpu" else torch_epoch


def native_epoch(
    model: MF, u: np.ndarray, i: np.ndarray, j: np.ndarray, bounds: list[tuple[int, int]], spec: TrainSpec
) -> None:
    ends = np.fromiter((hi for _, hi in bounds), np.int64, len(bounds))
    mf_native.train_epoch(model.users, model.items, u, i, j, ends, spec.lr, spec.l2)


def torch_epoch(
    model: MF, u: np.ndarray, i: np.ndarray, j: np.ndarray, bounds: list[tuple[int, int]], spec: TrainSpec
) -> None:
    """One mf_step per batch; one copy to the device per epoch, each batch is then a view."""
    device = model.users.weight.device
    u_t, i_t, j_t = (torch.as_tensor(a, dtype=torch.int64, device=device) for a in (u, i, j))
    for lo, hi in bounds:
        mf_step(model, u_t[lo:hi], i_t[lo:hi], j_t[lo:hi], spec)


def epoch_rows(
    users: np.ndarray, plan: Plan, sample_negatives: NegativeSampler, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """One epoch's batches laid end to end: (row order, one negative per row, each batch's
    [lo, hi) in both).

    The negatives are drawn for the whole epoch at once: one vectorised draw costs a
    fraction of one draw per batch.
    """
    order, ends = plan
    ends = ends.tolist()
    return order, sample_negatives(users[order], rng), list(zip([0] + ends[:-1], ends))


def mf_step(model: MF, u: torch.Tensor, i: torch.Tensor, j: torch.Tensor, spec: TrainSpec) -> None:
    pu = model.users.weight.index_select(0, u)
    qi = model.items.weight.index_select(0, i)
    qj = model.items.weight.index_select(0, j)
    g_u, g_i, g_j = mf_gradients(pu, qi, qj, spec.l2)
    model.users.adam_step(u, g_u, spec.lr)
    model.items.adam_step(torch.cat([i, j]), torch.cat([g_i, g_j]), spec.lr)
