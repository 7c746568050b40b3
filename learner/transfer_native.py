"""SML's transfer on the CPU as compiled loops (numba): its per-dimension convolutions and its
sigmoid-GELUs, each one pass over the rows where torch makes ten.

The convolutions map every dimension j of a row through 3 -> 10 -> 5 channels. As torch ops
that is a dozen passes over (rows x d x 10) tensors, memory-bound, and a quarter of SML's
retrain (BENCHMARKS.md, "SML's transfer in compiled loops"); here each row's channels stay in
a small scratch. The backward recomputes the row's forward instead of keeping it.

The sigmoid is this module's own: exp by range reduction and a degree-7 Taylor polynomial,
within 4 units in the last place of torch's, and written so the loops vectorise. Parallel
loops split rows into fixed blocks and sum the weight gradients block by block in a fixed
order, so the thread count never changes a result.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from learner.native import pow2

F32 = np.float32
SCALE = F32(1.702)  # GELU(z) = z·σ(1.702 z)
BLOCK = 32  # rows per parallel task; fixed, so the weight gradients' summation order is too
_LOG2E = F32(1.4426950408889634)
_INF = F32(np.inf)
_LN2_HI, _LN2_LO = F32(0.693359375), F32(-2.12194440e-4)  # ln 2 split so n·ln 2 is exact


@numba.njit(inline="always", error_model="numpy")
def _sigmoid(x: np.float32) -> np.float32:
    """1 / (1 + e^-x): e^y = 2^n e^r with |r| <= ln2/2, where 7 Taylor terms reach float32."""
    y = min(max(-x, F32(-87.0)), F32(88.0))
    n = np.floor(y * _LOG2E + F32(0.5))
    r = y - n * _LN2_HI - n * _LN2_LO
    p = F32(1.0 / 5040)
    for c in (F32(1.0 / 720), F32(1.0 / 120), F32(1.0 / 24), F32(1.0 / 6), F32(0.5), F32(1.0), F32(1.0)):
        p = p * r + c
    e = _INF if -x > F32(88.0) else p * pow2(np.int32(n))  # beyond 88, e^y overflows: σ = 0
    return F32(1.0) / (F32(1.0) + e)


@numba.njit(inline="always", error_model="numpy")
def _gelu_slope(z: np.float32, s: np.float32) -> np.float32:
    """d/dz of z·s with s = σ(1.702 z)."""
    return s + z * s * (F32(1.0) - s) * SCALE


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _gelu_forward(z: np.ndarray, out: np.ndarray, gate: np.ndarray) -> None:
    # a flat prange: loops over offset ranges (lo..hi) index with wraparound checks and do
    # not vectorise, 8x slower
    for k in numba.prange(len(z)):
        s = _sigmoid(SCALE * z[k])
        gate[k] = s
        out[k] = z[k] * s


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _gelu_backward(grad: np.ndarray, z: np.ndarray, gate: np.ndarray, out: np.ndarray) -> None:
    for k in numba.prange(len(z)):
        out[k] = grad[k] * _gelu_slope(z[k], gate[k])


class _GeluSigmoid(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: torch.Tensor) -> torch.Tensor:
        z = z.contiguous()
        out, gate = torch.empty_like(z), torch.empty_like(z)
        _gelu_forward(z.view(-1).numpy(), out.view(-1).numpy(), gate.view(-1).numpy())
        ctx.save_for_backward(z, gate)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        z, gate = ctx.saved_tensors
        out = torch.empty_like(z)
        _gelu_backward(
            grad.contiguous().view(-1).numpy(), z.view(-1).numpy(), gate.view(-1).numpy(), out.view(-1).numpy()
        )
        return out


def gelu_sigmoid(z: torch.Tensor) -> torch.Tensor:
    """z·σ(1.702 z) on a CPU tensor, forward and backward one compiled pass each."""
    return _GeluSigmoid.apply(z)


@numba.njit(inline="always", error_model="numpy")
def _row_forward(old, new, product, r, w1, b1, w2, b2, z1, s1, z2, s2) -> None:
    """Row r through conv1 (3 -> 10 channels), GELU, conv2 (10 -> 5): pre-activations z and
    gates s of both layers, channel by dimension, into the scratch arrays."""
    d = old.shape[1]
    for c in range(10):
        for j in range(d):
            z = b1[c] + w1[c, 0] * old[r, j] + w1[c, 1] * new[r, j] + w1[c, 2] * product[r, j]
            z1[c, j] = z
            s1[c, j] = _sigmoid(SCALE * z)
    for k in range(5):
        for j in range(d):
            z2[k, j] = b2[k]
        for c in range(10):
            for j in range(d):
                z2[k, j] += w2[k, c] * (z1[c, j] * s1[c, j])
        for j in range(d):
            s2[k, j] = _sigmoid(SCALE * z2[k, j])


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _conv_forward(old, new, product, w1, b1, w2, b2, out) -> None:
    rows, d = old.shape
    for block in numba.prange((rows + BLOCK - 1) // BLOCK):
        z1, s1 = np.empty((10, d), F32), np.empty((10, d), F32)
        z2, s2 = np.empty((5, d), F32), np.empty((5, d), F32)
        for r in range(block * BLOCK, min(rows, block * BLOCK + BLOCK)):
            _row_forward(old, new, product, r, w1, b1, w2, b2, z1, s1, z2, s2)
            for k in range(5):
                for j in range(d):
                    out[r, k * d + j] = z2[k, j] * s2[k, j]


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _conv_backward(old, new, product, w1, b1, w2, b2, grad, d_new, sums1, sums2) -> None:
    """grad = dL/d(output). Fills d_new (dL/d new) if it has rows, and per block of rows the
    weight gradients' partial sums over dimensions: sums1[block, c] = (old, new, product, 1)
    terms of conv1's filter c, sums2[block, k] = (10 channels, 1) of conv2's filter k."""
    rows, d = old.shape
    need_weights = sums1.shape[0] > 0
    for block in numba.prange((rows + BLOCK - 1) // BLOCK):
        z1, s1 = np.empty((10, d), F32), np.empty((10, d), F32)
        z2, s2 = np.empty((5, d), F32), np.empty((5, d), F32)
        g1, g2 = np.empty((10, d), F32), np.empty((5, d), F32)
        for r in range(block * BLOCK, min(rows, block * BLOCK + BLOCK)):
            _row_forward(old, new, product, r, w1, b1, w2, b2, z1, s1, z2, s2)
            for k in range(5):
                for j in range(d):
                    g2[k, j] = grad[r, k * d + j] * _gelu_slope(z2[k, j], s2[k, j])
            for c in range(10):
                for j in range(d):
                    g1[c, j] = F32(0.0)
                for k in range(5):
                    for j in range(d):
                        g1[c, j] += w2[k, c] * g2[k, j]
                for j in range(d):
                    g1[c, j] *= _gelu_slope(z1[c, j], s1[c, j])
            if d_new.shape[0] > 0:
                for j in range(d):
                    d_new[r, j] = F32(0.0)
                for c in range(10):
                    for j in range(d):
                        d_new[r, j] += w1[c, 1] * g1[c, j]
            if need_weights:
                for k in range(5):
                    for c in range(10):
                        for j in range(d):
                            sums2[block, k, c, j] += g2[k, j] * (z1[c, j] * s1[c, j])
                    for j in range(d):
                        sums2[block, k, 10, j] += g2[k, j]
                for c in range(10):
                    for j in range(d):
                        sums1[block, c, 0, j] += g1[c, j] * old[r, j]
                        sums1[block, c, 1, j] += g1[c, j] * new[r, j]
                        sums1[block, c, 2, j] += g1[c, j] * product[r, j]
                        sums1[block, c, 3, j] += g1[c, j]


class _ConvSection(torch.autograd.Function):
    @staticmethod
    def forward(ctx, old, new, product, w1, b1, w2, b2) -> torch.Tensor:
        inputs = [t.detach().contiguous() for t in (old, new, product, w1, b1, w2, b2)]
        out = torch.empty(old.shape[0], 5 * old.shape[1])
        _conv_forward(*(t.numpy() for t in inputs), out.numpy())
        ctx.save_for_backward(*inputs)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[2]:
            raise RuntimeError("the transfer's old and product rows are constants; only its new rows take gradients")
        inputs = ctx.saved_tensors
        rows, d = inputs[0].shape
        need_new, need_weights = ctx.needs_input_grad[1], any(ctx.needs_input_grad[3:])
        blocks = (rows + BLOCK - 1) // BLOCK if need_weights else 0
        d_new = torch.empty(rows if need_new else 0, d)
        sums1, sums2 = np.zeros((blocks, 10, 4, d), F32), np.zeros((blocks, 5, 11, d), F32)
        _conv_backward(*(t.numpy() for t in inputs), grad.contiguous().numpy(), d_new.numpy(), sums1, sums2)
        d_new = d_new if need_new else None
        if not need_weights:
            return None, d_new, None, None, None, None, None
        # summed in float64, blocks then dimensions: the same order on any number of threads
        g1 = torch.from_numpy(sums1.sum(axis=(0, 3), dtype=np.float64).astype(F32))
        g2 = torch.from_numpy(sums2.sum(axis=(0, 3), dtype=np.float64).astype(F32))
        return None, d_new, None, g1[:, :3], g1[:, 3], g2[:, :10], g2[:, 10]


def conv_section(old, new, product, w1, b1, w2, b2) -> torch.Tensor:
    """GELU(conv2(GELU(conv1([old; new; product])))) for every row, as (rows, 5·d) in
    channel-major order (5 blocks of d); w1 is conv1's (10, 3) weight, w2 conv2's (5, 10)."""
    return _ConvSection.apply(old, new, product, w1, b1, w2, b2)
