"""Embedding tables that grow, with Adam steps: row-sparse (only a batch's rows) or dense (all rows)."""

from __future__ import annotations

import numba
import numpy as np
import torch

from learner.native import fma32


class EmbeddingTable:
    """Rows of one embedding matrix plus their Adam moments.

    Adam is lazy (like torch.optim.SparseAdam): rows absent from a batch keep their value
    and moments, so a step costs O(batch) instead of O(table). Moments persist across
    periods; `step` counts updates for the bias correction.
    """

    def __init__(
        self,
        weight: torch.Tensor,
        exp_avg: torch.Tensor | None = None,
        exp_avg_sq: torch.Tensor | None = None,
        step: int = 0,
    ) -> None:
        """A new table (moments zero, no step taken), or one restored from its parts."""
        self.weight = weight
        self.exp_avg = torch.zeros_like(weight) if exp_avg is None else exp_avg
        self.exp_avg_sq = torch.zeros_like(weight) if exp_avg_sq is None else exp_avg_sq
        self.step = step
        self.scratch: tuple[np.ndarray, np.ndarray] | None = None  # the CPU dense step's, kept between steps

    def __len__(self) -> int:
        return self.weight.shape[0]

    def grow(self, rows: torch.Tensor) -> None:
        if rows.shape[0] == 0:
            return
        rows = rows.to(self.weight)
        self.weight = torch.cat([self.weight, rows])
        zeros = torch.zeros_like(rows)
        self.exp_avg = torch.cat([self.exp_avg, zeros])
        self.exp_avg_sq = torch.cat([self.exp_avg_sq, zeros])

    def adam_step(
        self,
        rows: torch.Tensor,
        grad: torch.Tensor,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        """Apply one Adam update to `rows`; a row may repeat, and its gradients add up."""
        self.step += 1
        b1, b2 = betas
        rows, grad = (_repeats_with_sums if rows.is_cuda else _unique_rows)(rows, grad)
        # index_select / index_copy_ rather than advanced indexing: the same gathers and
        # scatters at a fraction of the per-call cost (measured side by side)
        m = self.exp_avg.index_select(0, rows).mul_(b1).add_(grad, alpha=1 - b1)
        v = self.exp_avg_sq.index_select(0, rows).mul_(b2).addcmul_(grad, grad, value=1 - b2)
        self.exp_avg.index_copy_(0, rows, m)
        self.exp_avg_sq.index_copy_(0, rows, v)
        bias1 = 1 - b1**self.step
        bias2 = 1 - b2**self.step
        denom = v.div_(bias2).sqrt_().add_(eps)  # m and v are copies: safe to reuse in place
        self.weight.index_copy_(0, rows, self.weight.index_select(0, rows).add_(m.div_(denom).mul_(-lr / bias1)))

    def dense_adam_step(
        self,
        rows: torch.Tensor,
        grad: torch.Tensor,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        """One Adam update of the whole table, as torch.optim.Adam takes it: rows absent from
        the batch have zero gradient, so their moments decay and they still move by their
        momentum. O(table) per step; SML's ŵ uses it (see SmlConfig.w_hat_adam)."""
        self.step += 1
        (_dense_adam_torch if self.weight.is_cuda else _dense_adam_native)(self, rows, grad, lr, betas, eps)

    def copy(self) -> EmbeddingTable:
        return EmbeddingTable(self.weight.clone(), self.exp_avg.clone(), self.exp_avg_sq.clone(), self.step)

    def state_dict(self) -> dict:
        return {"weight": self.weight, "exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq, "step": self.step}

    @classmethod
    def from_state(cls, state: dict, device: str | torch.device = "cpu") -> EmbeddingTable:
        parts = (state[k].to(device) for k in ("weight", "exp_avg", "exp_avg_sq"))
        return cls(*parts, step=int(state["step"]))


def _unique_rows(rows: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row once, with its gradients summed: the fewest rows to update, for the CPU."""
    rows, group = torch.unique(rows, return_inverse=True)
    return rows, grad.new_zeros((len(rows), grad.shape[1])).index_add_(0, group, grad)


def _repeats_with_sums(rows: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows as given, each occurrence with its row's summed gradient, for a GPU: sizes fixed
    by the input, where torch.unique's data-dependent size makes every step wait for the
    device. Repeats then compute, and write, identical values."""
    first = torch.searchsorted(torch.sort(rows).values, rows)
    return rows, torch.zeros_like(grad).index_add_(0, first, grad).index_select(0, first)


def _dense_adam_torch(
    table: EmbeddingTable, rows: torch.Tensor, grad: torch.Tensor, lr: float, betas: tuple[float, float], eps: float
) -> None:
    b1, b2 = betas
    full = torch.zeros_like(table.weight).index_add_(0, rows, grad)
    table.exp_avg.mul_(b1).add_(full, alpha=1 - b1)
    table.exp_avg_sq.mul_(b2).addcmul_(full, full, value=1 - b2)
    denom = table.exp_avg_sq.div(1 - b2**table.step).sqrt_().add_(eps)
    table.weight.addcdiv_(table.exp_avg, denom, value=-lr / (1 - b1**table.step))


def _dense_adam_native(
    table: EmbeddingTable, rows: torch.Tensor, grad: torch.Tensor, lr: float, betas: tuple[float, float], eps: float
) -> None:
    """_dense_adam_torch's bits in two compiled passes around torch's own sqrt (it differs
    from a correctly rounded one), with no table-sized allocation: about a third of the
    memory traffic of its ten whole-table torch passes."""
    b1, b2 = betas
    if table.scratch is None or table.scratch[0].shape != tuple(table.weight.shape):
        table.scratch = (np.zeros(table.weight.shape, np.float32), np.empty(table.weight.shape, np.float32))
    full, root = table.scratch
    f32 = np.float32
    m, v = table.exp_avg.numpy(), table.exp_avg_sq.numpy()
    _dense_moments(
        m,
        v,
        full,
        rows.numpy(),
        grad.numpy(),
        f32(b1),
        f32(1 - b1),
        f32(b2),
        f32(1 - b2),
        f32(1 - b2**table.step),
        root,
    )
    torch.from_numpy(root).sqrt_()
    _dense_apply(table.weight.numpy(), m, root, f32(eps), f32(-lr / (1 - b1**table.step)))


@numba.njit(cache=True, error_model="numpy")
def _dense_moments(
    m: np.ndarray,
    v: np.ndarray,
    full: np.ndarray,
    rows: np.ndarray,
    grad: np.ndarray,
    b1: np.float32,
    c1: np.float32,
    b2: np.float32,
    c2: np.float32,
    bias2: np.float32,
    out: np.ndarray,
) -> None:
    """Both moments of every row (full: zeros but for the batch's summed gradients, zeroed
    again on return) and out = v / bias2, each operation as torch's kernels round it
    (c1 = 1 - b1 and c2 = 1 - b2 rounded from double, as torch casts its scalars)."""
    for k in range(len(rows)):
        full[rows[k]] += grad[k]
    for r in range(m.shape[0]):
        for j in range(m.shape[1]):
            g = full[r, j]
            m[r, j] = fma32(g, c1, m[r, j] * b1)
            v[r, j] = fma32(c2 * g, g, v[r, j] * b2)
            out[r, j] = v[r, j] / bias2
    for k in range(len(rows)):
        full[rows[k]] = 0.0


@numba.njit(cache=True, error_model="numpy")
def _dense_apply(w: np.ndarray, m: np.ndarray, root: np.ndarray, eps: np.float32, scale: np.float32) -> None:
    """w += scale * m / (root + eps), in addcdiv's order."""
    for r in range(w.shape[0]):
        for j in range(w.shape[1]):
            w[r, j] = w[r, j] + scale * m[r, j] / (root[r, j] + eps)
