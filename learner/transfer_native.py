"""SML's transfer on the CPU as compiled loops (numba): its per-dimension convolutions and its
sigmoid-GELUs, each one pass over a block of rows where torch makes several over whole tensors.

The convolutions map every dimension j of a row through 3 -> 10 -> 5 channels. As torch ops
that is a dozen memory-bound passes over (rows x d x 10) tensors, a quarter of SML's retrain
(BENCHMARKS.md, "SML's transfer in compiled loops"); here a block of 32 rows keeps its
channels in a small scratch, looped over as one flat run of rows·d positions so the loops
vectorise. The backward recomputes the block's forward instead of keeping it.

The sigmoid is this module's own: exp by range reduction and a degree-7 Taylor polynomial,
within 1.5 units in the last place of the exact value as torch's is (not torch's bits), and
written so the loops vectorise. Blocks are fixed and their weight-gradient sums are added in
block order, so the thread count never changes a result.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from learner.native import dot, pow2

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
def _block_forward(old, new, product, w1, b1, w2, b2, z1, s1, a1, z2, s2) -> None:
    """A block of rows, as flat (rows·d) views, through conv1 (3 -> 10 channels), GELU and
    conv2 (10 -> 5): pre-activations z, gates s and conv1's activations a, one scratch row
    per channel. Flat loops run long enough to vectorise well (one row's d are too few)."""
    n = len(old)
    for c in range(10):
        zc, sc, ac = z1[c], s1[c], a1[c]
        for q in range(n):
            z = b1[c] + w1[c, 0] * old[q] + w1[c, 1] * new[q] + w1[c, 2] * product[q]
            s = _sigmoid(SCALE * z)
            zc[q], sc[q], ac[q] = z, s, z * s
    for k in range(5):
        zk = z2[k]
        for q in range(n):
            zk[q] = b2[k]
        for c in range(10):
            ac, w = a1[c], w2[k, c]
            for q in range(n):
                zk[q] += w * ac[q]
        sk = s2[k]
        for q in range(n):
            sk[q] = _sigmoid(SCALE * zk[q])


@numba.njit(inline="always", error_model="numpy")
def _scratch(d: int):
    return [np.empty((channels, BLOCK * d), F32) for channels in (10, 10, 10, 5, 5)]


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _conv_forward(old, new, product, w1, b1, w2, b2, out) -> None:
    rows, d = out.shape[0], out.shape[1] // 5
    for block in numba.prange((rows + BLOCK - 1) // BLOCK):
        lo, hi = block * BLOCK, min(rows, block * BLOCK + BLOCK)
        z1, s1, a1, z2, s2 = _scratch(d)
        _block_forward(
            old[lo * d : hi * d], new[lo * d : hi * d], product[lo * d : hi * d], w1, b1, w2, b2, z1, s1, a1, z2, s2
        )
        for t in range(hi - lo):
            for k in range(5):
                row, zk, sk = out[lo + t, k * d : (k + 1) * d], z2[k, t * d : (t + 1) * d], s2[k, t * d : (t + 1) * d]
                for j in range(d):
                    row[j] = zk[j] * sk[j]


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _conv_backward(old, new, product, w1, b1, w2, b2, grad, d_new, sums1, sums2) -> None:
    """grad = dL/d(output). Fills d_new (dL/d new, flat) if it has rows, and per block of
    rows the weight gradients' partial sums: sums1[block, c] = (old, new, product, 1) terms
    of conv1's filter c, sums2[block, k] = (10 channels, 1) of conv2's filter k."""
    rows, d = grad.shape[0], grad.shape[1] // 5
    for block in numba.prange((rows + BLOCK - 1) // BLOCK):
        lo, hi = block * BLOCK, min(rows, block * BLOCK + BLOCK)
        n = (hi - lo) * d
        x, h, p = old[lo * d : hi * d], new[lo * d : hi * d], product[lo * d : hi * d]
        z1, s1, a1, z2, s2 = _scratch(d)
        _block_forward(x, h, p, w1, b1, w2, b2, z1, s1, a1, z2, s2)
        g2, g1 = np.empty((5, n), F32), np.empty((10, n), F32)
        for t in range(hi - lo):
            for k in range(5):
                g, gk = grad[lo + t, k * d : (k + 1) * d], g2[k, t * d : (t + 1) * d]
                for j in range(d):
                    gk[j] = g[j]
        for k in range(5):
            gk, zk, sk = g2[k], z2[k], s2[k]
            for q in range(n):
                gk[q] *= _gelu_slope(zk[q], sk[q])
        for c in range(10):
            gc, zc, sc = g1[c], z1[c], s1[c]
            for q in range(n):
                gc[q] = F32(0.0)
            for k in range(5):
                gk, w = g2[k], w2[k, c]
                for q in range(n):
                    gc[q] += w * gk[q]
            for q in range(n):
                gc[q] *= _gelu_slope(zc[q], sc[q])
        if len(d_new) > 0:
            dn = d_new[lo * d : hi * d]
            for q in range(n):
                dn[q] = F32(0.0)
            for c in range(10):
                gc, w = g1[c], w1[c, 1]
                for q in range(n):
                    dn[q] += w * gc[q]
        if sums1.shape[0] > 0:
            ones = np.ones(n, F32)
            for k in range(5):
                for c in range(10):
                    sums2[block, k, c] = dot(g2[k], a1[c][:n])
                sums2[block, k, 10] = dot(g2[k], ones)
            for c in range(10):
                sums1[block, c, 0] = dot(g1[c], x)
                sums1[block, c, 1] = dot(g1[c], h)
                sums1[block, c, 2] = dot(g1[c], p)
                sums1[block, c, 3] = dot(g1[c], ones)


class _ConvSection(torch.autograd.Function):
    @staticmethod
    def forward(ctx, old, new, product, w1, b1, w2, b2) -> torch.Tensor:
        inputs = [t.detach().contiguous() for t in (old, new, product, w1, b1, w2, b2)]
        out = torch.empty(old.shape[0], 5 * old.shape[1])
        _conv_forward(*_flat_rows(inputs), out.numpy())
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
        sums1, sums2 = np.empty((blocks, 10, 4), F32), np.empty((blocks, 5, 11), F32)
        _conv_backward(*_flat_rows(inputs), grad.contiguous().numpy(), d_new.view(-1).numpy(), sums1, sums2)
        d_new = d_new if need_new else None
        if not need_weights:
            return None, d_new, None, None, None, None, None
        # the blocks' sums added in float64, in block order on any number of threads
        g1 = torch.from_numpy(sums1.sum(axis=0, dtype=np.float64).astype(F32))
        g2 = torch.from_numpy(sums2.sum(axis=0, dtype=np.float64).astype(F32))
        return None, d_new, None, g1[:, :3], g1[:, 3], g2[:, :10], g2[:, 10]


def _flat_rows(inputs: list[torch.Tensor]) -> list[np.ndarray]:
    """old, new and product as flat (rows·d) arrays; the weights as they are."""
    return [t.view(-1).numpy() for t in inputs[:3]] + [t.numpy() for t in inputs[3:]]


def conv_section(old, new, product, w1, b1, w2, b2) -> torch.Tensor:
    """GELU(conv2(GELU(conv1([old; new; product])))) for every row, as (rows, 5·d) in
    channel-major order (5 blocks of d); w1 is conv1's (10, 3) weight, w2 conv2's (5, 10)."""
    return _ConvSection.apply(old, new, product, w1, b1, w2, b2)
