"""SML's transfer f_Θ(w_{t-1}, ŵ_t): a small CNN over the stacked old, new and product rows.

Architecture of the authors' ConvTransfer_com (their model/conv_transfer.py): input
H = [x; h; x ⊙ h / |x|] (3 x d, the product detached), conv 3x1 with 10 filters, GELU,
conv 1x1 with 5 filters, flatten to 5d, GELU, FC 5d -> 512, GELU, FC 512 -> d. GELU is the
sigmoid approximation z·σ(1.702 z).
Ablations: cnn=False feeds the flattened 3 x d stack to the FC layers (SML-CNN);
fc=False maps the 5 conv channels to the output with one more 1x1 conv (SML-FC).
"""

from __future__ import annotations

import torch
from torch import nn

from learner import transfer_native


def gelu_torch(z: torch.Tensor) -> torch.Tensor:
    """z·σ(1.702 z) as torch ops: the CUDA form, differentiated by autograd."""
    return z * torch.sigmoid(float(transfer_native.SCALE) * z)


def gelu_sigmoid(z: torch.Tensor) -> torch.Tensor:
    """z·σ(1.702 z): torch ops on CUDA, one compiled pass each way on the CPU."""
    return gelu_torch(z) if z.is_cuda else transfer_native.gelu_sigmoid(z)


def conv_section_torch(old, new, product, w1, b1, w2, b2) -> torch.Tensor:
    """transfer_native.conv_section as torch ops, for CUDA: matmuls on (B, d, channels)."""
    stack = torch.stack([old, new, product], dim=2)  # (B, d, 3)
    z = gelu_torch(stack @ w1.t() + b1)
    z = gelu_torch(z @ w2.t() + b2)  # (B, d, 5)
    return z.transpose(1, 2).flatten(1)


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
        if not self.use_cnn:
            return self.fc2(gelu_sigmoid(self.fc1(torch.cat([old, new, product], dim=1))))
        z = self._convolutions(old, new, product)  # (B, 5d), channel-major: 5 blocks of d
        if not self.use_fc:
            return (self.conv_out.weight.view(1, 5) @ z.view(-1, 5, self.dim)).squeeze(1) + self.conv_out.bias
        return self.fc2(gelu_sigmoid(self.fc1(z)))

    def _convolutions(self, old: torch.Tensor, new: torch.Tensor, product: torch.Tensor) -> torch.Tensor:
        """GELU(conv2(GELU(conv1(stack)))), flattened channel-major. The convolutions are
        per-dimension linear maps over channels: compiled loops on the CPU
        (learner/transfer_native.py), matmuls on (B, d, channels) on CUDA."""
        conv = conv_section_torch if old.is_cuda else transfer_native.conv_section
        w1, w2 = self.conv1.weight.view(10, 3), self.conv2.weight.view(5, 10)
        return conv(old, new, product, w1, self.conv1.bias, w2, self.conv2.bias)

    @torch.no_grad()
    def apply_table(self, old: torch.Tensor, new: torch.Tensor, chunk_rows: int) -> torch.Tensor:
        """f_Θ over whole tables, in chunks so the (rows x 512) activation stays bounded."""
        out = torch.empty_like(new)
        for lo in range(0, old.shape[0], chunk_rows):
            out[lo : lo + chunk_rows] = self(old[lo : lo + chunk_rows], new[lo : lo + chunk_rows])
        return out
