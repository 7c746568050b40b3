"""Embedding tables that grow, with a row-sparse Adam: a step touches only a batch's rows."""

from __future__ import annotations

import torch


class EmbeddingTable:
    """Rows of one embedding matrix plus their Adam moments.

    Adam is lazy (like torch.optim.SparseAdam): rows absent from a batch keep their value
    and moments, so a step costs O(batch) instead of O(table). Moments persist across
    periods; `step` counts updates for the bias correction.
    """

    def __init__(self, weight: torch.Tensor) -> None:
        self.weight = weight
        self.exp_avg = torch.zeros_like(weight)
        self.exp_avg_sq = torch.zeros_like(weight)
        self.step = 0

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
        b1, b2 = betas
        full = torch.zeros_like(self.weight).index_add_(0, rows, grad)
        self.exp_avg.mul_(b1).add_(full, alpha=1 - b1)
        self.exp_avg_sq.mul_(b2).addcmul_(full, full, value=1 - b2)
        denom = self.exp_avg_sq.div(1 - b2**self.step).sqrt_().add_(eps)
        self.weight.addcdiv_(self.exp_avg, denom, value=-lr / (1 - b1**self.step))

    def copy(self) -> EmbeddingTable:
        out = EmbeddingTable.__new__(EmbeddingTable)
        out.weight = self.weight.clone()
        out.exp_avg = self.exp_avg.clone()
        out.exp_avg_sq = self.exp_avg_sq.clone()
        out.step = self.step
        return out

    def state_dict(self) -> dict:
        return {"weight": self.weight, "exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq, "step": self.step}

    @classmethod
    def from_state(cls, state: dict, device: str | torch.device = "cpu") -> EmbeddingTable:
        out = cls.__new__(cls)
        out.weight = state["weight"].to(device)
        out.exp_avg = state["exp_avg"].to(device)
        out.exp_avg_sq = state["exp_avg_sq"].to(device)
        out.step = int(state["step"])
        return out


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
