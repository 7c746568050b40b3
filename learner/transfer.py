"""SML's transfer f_Θ(w_{t-1}, ŵ_t): a small CNN over the stacked old, new and product rows.

Architecture of the authors' ConvTransfer_com (their model/conv_transfer.py): input
H = [x; h; x ⊙ h / |x|] (3 x d, the product detached), conv 3x1 with 10 filters, GELU,
conv 1x1 with 5 filters, flatten to 5d, GELU, FC 5d -> 512, GELU, FC 512 -> d. GELU is the
sigmoid approximation z·σ(1.702 z).
Ablations: cnn=False feeds the flattened 3 x d stack to the FC layers (SML-CNN);
fc=False maps the 5 conv channels to the output with one more 1x1 conv (SML-FC).
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from torch import nn

_GELU_SCALE = 1.702  # one constant for the CUDA path, the forward and the compiled backward


def _gate(z: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(_GELU_SCALE * z)


def gelu_sigmoid(z: torch.Tensor) -> torch.Tensor:
    if z.is_cuda:
        return z * _gate(z)
    return _GeluSigmoid.apply(z)


class _GeluSigmoid(torch.autograd.Function):
    """z·σ(1.702 z) with the forward's torch ops and a backward in one compiled pass: the
    bits autograd gives through its five elementwise passes (a test compares them)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor) -> torch.Tensor:
        s = _gate(z)
        ctx.save_for_backward(z, s)
        return z * s

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        z, s = (t.contiguous() for t in ctx.saved_tensors)
        out = torch.empty(z.shape, dtype=z.dtype)
        _gelu_sigmoid_grad(
            grad.contiguous().view(-1).numpy(), z.view(-1).numpy(), s.view(-1).numpy(), out.view(-1).numpy()
        )
        return out


@numba.njit(cache=True, error_model="numpy")
def _gelu_sigmoid_grad(grad: np.ndarray, z: np.ndarray, s: np.ndarray, out: np.ndarray) -> None:
    """d(z·s)/dz with s = σ(1.702 z), rounded as autograd's chain of ops rounds it: grad·s
    plus ((grad·z)·(1 − s)·s)·1.702."""
    c, one = np.float32(_GELU_SCALE), np.float32(1.0)
    for k in range(len(grad)):
        out[k] = grad[k] * s[k] + ((grad[k] * z[k]) * (one - s[k]) * s[k]) * c


class Transfer(nn.Module):
    def __init__(self, dim: int, cnn: bool = True, fc: bool = True, hidden: int = 512) -> None:
        super().__init__()
        if not (cnn or fc):
            raise ValueError("the transfer needs its CNN part, its FC part, or both")
        self.dim, self.use_cnn, self.use_fc = dim, cnn, fc
        if cnn:
            self.conv1 = nn.Conv2d(1, 10, kernel_size=(3, 1))
            self.conv2 = nn.Conv2d(10, 5, kernel_size=(1, 1))
        if fc:
            self.fc1 = nn.Linear(5 * dim if cnn else 3 * dim, hidden)
            self.fc2 = nn.Linear(hidden, dim)
        else:
            self.conv_out = nn.Conv2d(5, 1, kernel_size=(1, 1))

    def forward(self, old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        # The product row carries no gradient (ŵ detached, x constant), as in the reference;
        # the clamp avoids the reference's NaN for an all-zero old row.
        product = old * new.detach() / old.norm(dim=1, keepdim=True).clamp_min(1e-12)
        stack = torch.stack([old, new, product], dim=1)  # (B, 3, d)
        if not self.use_cnn:
            return self.fc2(gelu_sigmoid(self.fc1(stack.flatten(1))))
        # The convolutions are per-dimension linear maps over rows/channels; as matmuls on
        # (B, d, channels) they cost a fraction of conv2d's overhead on small batches.
        z = stack.transpose(1, 2) @ self.conv1.weight.view(10, 3).t() + self.conv1.bias  # (B, d, 10)
        z = gelu_sigmoid(z) @ self.conv2.weight.view(5, 10).t() + self.conv2.bias  # (B, d, 5)
        if not self.use_fc:
            return (gelu_sigmoid(z) @ self.conv_out.weight.view(1, 5).t() + self.conv_out.bias).squeeze(2)
        z = gelu_sigmoid(z.transpose(1, 2).flatten(1))  # channel-major: 5 blocks of d
        return self.fc2(gelu_sigmoid(self.fc1(z)))

    @torch.no_grad()
    def apply_table(self, old: torch.Tensor, new: torch.Tensor, chunk_rows: int) -> torch.Tensor:
        """f_Θ over whole tables, in chunks so the (rows x 512) activation stays bounded."""
        out = torch.empty_like(new)
        for lo in range(0, old.shape[0], chunk_rows):
            out[lo : lo + chunk_rows] = self(old[lo : lo + chunk_rows], new[lo : lo + chunk_rows])
        return out
