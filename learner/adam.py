"""torch.optim.Adam with the same bits and a fraction of its passes over memory, on the CPU.

torch's single-tensor Adam takes a step as eight elementwise ops (the L2 term, lerp_,
mul_, addcmul_, sqrt, div, add_, addcdiv_), each a pass over the whole parameter. For an
embedding table far larger than the cache (Caser's user and item tables at the full
shapes) those passes are the retrain's cost. Here a step is two compiled passes per chunk
that fits in the cache, around torch's own `sqrt` (which differs from a correctly rounded
one, so it is not reimplemented), with the operations and the rounding of the torch ops.
A table looked up with a sparse gradient (`sequences.lookup`) skips autograd's allocation
of a dense one at every step: its rows are summed into a kept buffer of zeros by the same
`index_put_` that autograd's backward of `table[ids]` runs, so the bits do not change.
"""

from __future__ import annotations

from collections.abc import Callable

import numba
import numpy as np
import torch

from learner.native import fma32

# floats of a parameter stepped per chunk: its five arrays' chunks stay within a core's L2
_CHUNK = 1 << 15


class Adam(torch.optim.Adam):
    """torch.optim.Adam (L2 weight decay; no amsgrad, maximize or decoupled decay): its
    state and state_dict are torch's, so the two load each other's checkpoints. A CPU
    float32 parameter takes the fused step, and may have a sparse gradient; anything else
    takes torch's own."""

    def __init__(
        self,
        params: list[torch.nn.Parameter],
        lr: float,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        self._buffer = np.empty(_CHUNK, np.float32)
        self._zeros: dict[torch.Tensor, torch.Tensor] = {}  # per sparse-gradient table, zero between steps

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        if closure is not None or any(
            p.grad is not None and not _fused(p) for group in self.param_groups for p in group["params"]
        ):
            return super().step(closure)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._step(p, group)
        return None

    def _step(self, p: torch.Tensor, group: dict) -> None:
        state = self.state[p]
        if not state:  # as torch.optim.Adam initialises it
            state["step"] = torch.tensor(0.0, dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step"] += 1
        step = state["step"].item()
        b1, b2 = group["betas"]
        lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
        f32 = np.float32
        # torch's scalars, computed in double as it computes them, then cast by its kernels
        bias2_sqrt = (1 - b2**step) ** 0.5
        neg_step = -(lr / (1 - b1**step))
        grad = self._dense(p, p.grad)
        w, g = p.detach().view(-1).numpy(), grad.view(-1).numpy()
        m, v = state["exp_avg"].view(-1).numpy(), state["exp_avg_sq"].view(-1).numpy()
        root = self._buffer
        for lo in range(0, len(w), _CHUNK):
            hi = min(lo + _CHUNK, len(w))
            n = hi - lo
            _moments(w[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi], f32(wd), f32(1 - b1), f32(b2), f32(1 - b2), root[:n])
            torch.from_numpy(root[:n]).sqrt_()
            _apply(w[lo:hi], m[lo:hi], root[:n], f32(bias2_sqrt), f32(eps), f32(neg_step))
        if p.grad.is_sparse:
            grad.index_fill_(0, p.grad._indices()[0], 0.0)

    def _dense(self, p: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """The dense gradient autograd builds for `p[ids]`: zeros.index_put_(ids, rows,
        accumulate=True), each row's repeats summed in order, into the kept zeros."""
        if not grad.is_sparse:
            return grad.contiguous()
        zeros = self._zeros.get(p)
        if zeros is None or zeros.shape != p.shape:  # first step, or the table grew
            zeros = self._zeros[p] = torch.zeros_like(p)
        return zeros.index_put_((grad._indices()[0],), grad._values(), accumulate=True)


def _fused(p: torch.Tensor) -> bool:
    return p.device.type == "cpu" and p.dtype == torch.float32 and p.is_contiguous()


@numba.njit(cache=True, error_model="numpy")
def _moments(
    w: np.ndarray,
    g: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    wd: np.float32,
    c1: np.float32,
    b2: np.float32,
    c2: np.float32,
    out: np.ndarray,
) -> None:
    """grad.add(w, alpha=wd), exp_avg.lerp_(grad, c1), exp_avg_sq.mul_(b2).addcmul_(grad,
    grad, value=c2), rounded as torch's vectorised kernels round them (fused multiply-adds;
    lerp with a weight below 0.5 is m + c1·(g − m)); v into `out` for the square root."""
    for k in range(len(w)):
        gk = fma32(w[k], wd, g[k]) if wd != 0 else g[k]
        m[k] = fma32(c1, gk - m[k], m[k])
        v[k] = fma32(c2 * gk, gk, v[k] * b2)
        out[k] = v[k]


@numba.njit(cache=True, error_model="numpy")
def _apply(
    w: np.ndarray, m: np.ndarray, root: np.ndarray, bias2_sqrt: np.float32, eps: np.float32, neg_step: np.float32
) -> None:
    """denom = sqrt(v) / bias2_sqrt + eps, then w.addcdiv_(m, denom, value=neg_step)."""
    for k in range(len(w)):
        w[k] = w[k] + neg_step * m[k] / (root[k] / bias2_sqrt + eps)
