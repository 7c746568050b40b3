"""Embedding tables that grow, with Adam steps: row-sparse (only a batch's rows) or dense (all rows)."""

from __future__ import annotations

import math
from typing import NamedTuple

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
        momentum. O(table) per step; a run of them is cheaper through AdamSteps."""
        with AdamSteps(self, lr, dense=True, betas=betas, eps=eps) as steps:
            steps.step(rows, grad)

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


class AdamSteps:
    """A run of Adam steps on one table over a sequence of batches: `read` a batch's rows,
    `step` them with their gradients, `settle` (or leave the `with` block) at the end.

    Row-sparse (dense=False) is EmbeddingTable.adam_step. Dense is torch.optim.Adam on the
    whole table: every row's moments decay and every row moves on its momentum at every
    step. On the CPU those moves are deferred: a row outside the batch moves by a function
    of its own (w, m, v) and the step's scalars alone, so each row replays the steps it
    missed when it is next read or stepped, or at `settle`, with the operations and the
    rounding of the torch ops (`_dense_adam_torch`, kept for CUDA): the same bits, with one
    pass over the table per settle instead of one per step, and the replays in cache. The
    table must not grow, nor be read other than through `read`, until settled.
    """

    def __init__(
        self,
        table: EmbeddingTable,
        lr: float,
        dense: bool,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.table, self.lr, self.betas, self.eps = table, lr, betas, eps
        self.mode = "sparse" if not dense else "torch" if table.weight.is_cuda else "deferred"
        if self.mode == "deferred":
            self.first = table.step  # the step every row is current at now
            self.last = np.full(len(table), table.step, np.int64)  # the step each row is current at
            self.slot = np.full(len(table), -1, np.int64)  # a stepped row's line in the summed gradient
            self.still = np.zeros(len(table), np.bool_)  # rows whose replay only decays v (_find_still)
            self.bias2 = np.empty(0, np.float32)  # 1 - b2^t per deferred step t, rounded as torch's scalars
            self.scale = np.empty(0, np.float32)  # -lr / (1 - b1^t)
            self.buffer = np.empty(0, np.float32)

    def __enter__(self) -> AdamSteps:
        return self

    def __exit__(self, *exc: object) -> None:
        self.settle()

    def read(self, rows: torch.Tensor) -> torch.Tensor:
        """The rows' current values (a copy)."""
        if self.mode == "deferred":
            self._replay(np.unique(rows.numpy()), self.table.step, None)
        return self.table.weight.index_select(0, rows)

    def step(self, rows: torch.Tensor, grad: torch.Tensor) -> None:
        """One Adam step; a row may repeat, and its gradients add up."""
        table = self.table
        if self.mode == "sparse":
            table.adam_step(rows, grad, self.lr, self.betas, self.eps)
            return
        table.step += 1
        if self.mode == "torch":
            _dense_adam_torch(table, rows, grad, self.lr, self.betas, self.eps)
            return
        b1, b2 = self.betas
        f32 = np.float32
        self.bias2 = np.append(self.bias2, f32(1 - b2**table.step))
        self.scale = np.append(self.scale, f32(-self.lr / (1 - b1**table.step)))
        unique, summed = _sum_by_row(rows.numpy(), grad.numpy(), self.slot)
        self._replay(unique, table.step, summed)
        self.slot[unique] = -1

    def settle(self) -> None:
        """Bring every row up to date."""
        if self.mode == "deferred":
            self._replay(np.arange(len(self.table)), self.table.step, None)

    def _replay(self, rows: np.ndarray, target: int, grad: np.ndarray | None) -> None:
        """Bring `rows` (distinct) to step `target`; `grad` holds the summed gradients of
        step `target` for the rows whose `slot` is set, None when no row has one."""
        table, dim = self.table, self.table.weight.shape[1]
        need = (target - self.first) * dim  # the most one row can replay
        if len(self.buffer) < max(need, _REPLAY_FLOATS):
            self.buffer = np.empty(max(need, _REPLAY_FLOATS), np.float32)
        if grad is None:
            grad = np.zeros((0, dim), np.float32)
        b1, b2 = self.betas
        f32 = np.float32
        w, m, v = table.weight.numpy(), table.exp_avg.numpy(), table.exp_avg_sq.numpy()
        _find_still(
            rows, self.last, target, self.first, self.slot, self.still, w, m, v, f32(b1), f32(1 - b1), self.scale
        )
        bounds = _replay_chunks(self.last, self.still, rows, target, dim, len(self.buffer))
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            steps = _Replay(rows[lo:hi], self.last, target, self.first, self.slot, grad, self.still)
            n = _replay_moments(steps, v, f32(b2), f32(1 - b2), self.bias2, self.buffer)
            torch.from_numpy(self.buffer[:n]).sqrt_()  # torch's own sqrt: it differs from a correctly rounded one
            _replay_apply(steps, w, m, f32(b1), f32(1 - b1), self.scale, f32(self.eps), self.buffer)


class _Replay(NamedTuple):
    """What both replay passes read: which rows replay which steps, with which gradients."""

    rows: np.ndarray  # the rows to bring up to date, distinct
    last: np.ndarray  # the step each row of the table is current at
    target: int  # the step to bring them to
    first: int  # the step that scale[0] and bias2[0] follow
    slot: np.ndarray  # a row's line in `grad`, or -1 when it has no gradient at step `target`
    grad: np.ndarray  # the summed gradients of step `target`
    still: np.ndarray  # rows whose replay only decays v (_find_still)


# floats of v / bias2 replayed between two sqrt calls: 1 MB, within a core's L2 cache
_REPLAY_FLOATS = 1 << 18


@numba.njit(cache=True)
def _sum_by_row(rows: np.ndarray, grad: np.ndarray, slot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row once, in order of first appearance, with its gradients summed in the order
    given (as index_add_ sums them); slot[row] = its line."""
    unique = np.empty(len(rows), np.int64)
    summed = np.zeros(grad.shape, np.float32)
    n = 0
    for k in range(len(rows)):
        r = rows[k]
        if slot[r] < 0:
            slot[r] = n
            unique[n] = r
            n += 1
        summed[slot[r]] += grad[k]
    return unique[:n], summed[:n]


@numba.njit(cache=True)
def _same_bits(a: np.float32, b: np.float32) -> bool:
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)


@numba.njit(cache=True, error_model="numpy")
def _find_still(
    rows: np.ndarray,
    last: np.ndarray,
    target: int,
    first: int,
    slot: np.ndarray,
    still: np.ndarray,
    w: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    b1: np.float32,
    c1: np.float32,
    scale: np.ndarray,
) -> None:
    """still[r]: row r gets no gradient and its missed steps leave its w and m bit for bit as
    they are, so replaying them only decays v. That holds when every m is a fixed point of
    the decay (fma(0, c1, m * b1) rounds back to m: +0, or the few smallest subnormals, where
    a row's momentum ends some 1,000 steps after its last gradient), and scale * m rounds to
    a zero that adds nothing to w at the step of the largest |scale| (so at every step), v
    not NaN. Rows with no gradient yet are still, and so are most ids long unseen; replayed
    in full, their zeros and subnormals cost torch's sqrt and the apply pass 10-30x more."""
    zero = np.float32(0.0)
    for r in rows:
        if slot[r] >= 0 or last[r] == target:
            still[r] = slot[r] < 0
            continue
        s = scale[last[r] - first]
        for t in range(last[r] + 1, target + 1):
            if abs(scale[t - first - 1]) > abs(s):
                s = scale[t - first - 1]
        wr, mr, vr = w[r], m[r], v[r]
        ok = True
        for j in range(len(mr)):
            p = s * mr[j]
            ok &= _same_bits(fma32(zero, c1, mr[j] * b1), mr[j]) and p == 0
            ok &= _same_bits(wr[j] + p, wr[j]) and not np.isnan(vr[j])
        still[r] = ok


@numba.njit(cache=True)
def _replay_chunks(
    last: np.ndarray, still: np.ndarray, rows: np.ndarray, target: int, dim: int, capacity: int
) -> np.ndarray:
    """Bounds of consecutive runs of `rows` whose replays fit `capacity` floats (still rows
    write none)."""
    bounds = [0]
    total = 0
    for k in range(len(rows)):
        cost = 0 if still[rows[k]] else (target - last[rows[k]]) * dim
        if total + cost > capacity and total > 0:
            bounds.append(k)
            total = 0
        total += cost
    bounds.append(len(rows))
    return np.array(bounds)


@numba.njit(cache=True, error_model="numpy")
def _replay_moments(
    steps: _Replay,
    v: np.ndarray,
    b2: np.float32,
    c2: np.float32,
    bias2: np.ndarray,
    out: np.ndarray,
) -> int:
    """The second moments of the rows' missed steps, and v / bias2 of each step into `out`,
    rounded as torch's kernels round them (c2 = 1 - b2 rounded from double, as torch casts
    its scalars; addcmul_ fuses its multiply-add). Returns the floats written; a still row
    (_find_still) writes none, as no square root of its is needed."""
    rows, last, target, first, slot, grad, still = steps
    pos = 0
    zero = np.float32(0.0)
    dim = v.shape[1]
    for r in rows:
        line, vr = slot[r], v[r]  # 1-d views: the loops over a row vectorise
        if still[r]:
            for _ in range(target - last[r]):
                for j in range(dim):
                    vr[j] = fma32(zero, zero, vr[j] * b2)
            continue
        for t in range(last[r] + 1, target + 1):
            b, q = bias2[t - first - 1], out[pos : pos + dim]
            if line >= 0 and t == target:  # the step with the row's gradient
                g = grad[line]
                for j in range(dim):
                    vr[j] = fma32(c2 * g[j], g[j], vr[j] * b2)
                    q[j] = vr[j] / b
            else:  # a step without: the same operations on a zero gradient
                for j in range(dim):
                    vr[j] = fma32(zero, zero, vr[j] * b2)
                    q[j] = vr[j] / b
            pos += dim
    return pos


@numba.njit(cache=True, error_model="numpy")
def _replay_apply(
    steps: _Replay,
    w: np.ndarray,
    m: np.ndarray,
    b1: np.float32,
    c1: np.float32,
    scale: np.ndarray,
    eps: np.float32,
    root: np.ndarray,
) -> None:
    """The first moments of the same steps and w += scale * m / (root + eps), in addcdiv's
    order, reading the square roots where _replay_moments wrote v / bias2. A still row's
    steps leave its w and m as they are (_find_still)."""
    rows, last, target, first, slot, grad, still = steps
    pos = 0
    zero = np.float32(0.0)
    dim = w.shape[1]
    for r in rows:
        line, wr, mr = slot[r], w[r], m[r]
        if still[r]:
            last[r] = target
            continue
        for t in range(last[r] + 1, target + 1):
            s, q = scale[t - first - 1], root[pos : pos + dim]
            if line >= 0 and t == target:
                g = grad[line]
                for j in range(dim):
                    mr[j] = fma32(g[j], c1, mr[j] * b1)
                    wr[j] = wr[j] + s * mr[j] / (q[j] + eps)
            else:
                for j in range(dim):
                    mr[j] = fma32(zero, c1, mr[j] * b1)
                    wr[j] = wr[j] + s * mr[j] / (q[j] + eps)
            pos += dim
        last[r] = target
