"""The CPU MF epoch as one compiled loop (numba): learner.mf's math, without per-call overhead.

Each batch does what mf_step does with torch: gradients of BCE with one negative (+ L2) from
the rows as they were before the batch, then one lazy Adam step per table on its distinct
rows, a row's gradients summed over its repeats, bias correction by the table's global step.
The loop is single-threaded and runs in a fixed order, so a seed gives the same tables.
"""

from __future__ import annotations

import numba
import numpy as np

from learner.native import dot, prefetch
from learner.tables import EmbeddingTable

F32 = np.float32
AHEAD = 8  # rows prefetched ahead: the loop is bound by random-row latency, not arithmetic


@numba.njit(cache=True, error_model="numpy")
def _prefetch_rows(a: np.ndarray, ra: int, b: np.ndarray, rb: int, c: np.ndarray, rc: int) -> None:
    """a[ra], b[rb] and c[rc]: fetched together, their latencies overlap."""
    for col in range(0, a.shape[1], 16):  # 16 float32 per 64-byte line
        prefetch(a[ra], col)
        prefetch(b[rb], col)
        prefetch(c[rc], col)


@numba.njit(cache=True, error_model="numpy")
def _slot(row: int, slots: np.ndarray, rows: np.ndarray, grad: np.ndarray, n: int) -> tuple[int, int]:
    """Where `row`'s gradient accumulates this batch (a fresh zeroed slot on first sight)."""
    s = slots[row]
    if s < 0:
        s = n
        slots[row] = s
        rows[s] = row
        grad[s, :] = 0.0
        n += 1
    return s, n


@numba.njit(cache=True, error_model="numpy")
def _adam_rows(
    w: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    rows: np.ndarray,
    grad: np.ndarray,
    n: int,
    slots: np.ndarray,
    step: int,
    lr: float,
    b1: float,
    b2: float,
    eps: float,
) -> None:
    """One lazy Adam step on rows[:n] (each distinct), in float32 as torch runs it; frees their slots."""
    fb1, fb2, feps = F32(b1), F32(b2), F32(eps)
    c1, c2 = F32(1.0 - b1), F32(1.0 - b2)
    bias2 = F32(1.0 - b2**step)
    scale = F32(-lr / (1.0 - b1**step))
    for s in range(n):
        if s + AHEAD < n:
            ahead = rows[s + AHEAD]
            _prefetch_rows(w, ahead, m, ahead, v, ahead)
        r = rows[s]
        slots[r] = -1
        for k in range(w.shape[1]):
            g = grad[s, k]
            mk = m[r, k] * fb1 + c1 * g
            vk = v[r, k] * fb2 + c2 * (g * g)
            m[r, k] = mk
            v[r, k] = vk
            w[r, k] += (mk / (np.sqrt(vk / bias2) + feps)) * scale


@numba.njit(cache=True, error_model="numpy")
def _epoch(
    p: np.ndarray,
    mp: np.ndarray,
    vp: np.ndarray,
    q: np.ndarray,
    mq: np.ndarray,
    vq: np.ndarray,
    u: np.ndarray,
    i: np.ndarray,
    j: np.ndarray,
    ends: np.ndarray,
    step_u: int,
    step_i: int,
    lr: float,
    l2: float,
    b1: float,
    b2: float,
    eps: float,
) -> None:
    d = p.shape[1]
    width = int(np.max(np.diff(np.concatenate((np.zeros(1, np.int64), ends))))) if len(ends) else 0
    slots_u = np.full(p.shape[0], -1, np.int32)
    slots_i = np.full(q.shape[0], -1, np.int32)
    rows_u = np.empty(width, np.int64)
    rows_i = np.empty(2 * width, np.int64)
    g_u = np.empty((width, d), np.float32)
    g_i = np.empty((2 * width, d), np.float32)
    fl2 = F32(l2)
    lo = 0
    for t in range(len(ends)):
        hi = ends[t]
        inv_b = F32(1.0 / (hi - lo))
        n_u = 0
        n_i = 0
        for r in range(lo, hi):
            if r + AHEAD < hi:
                _prefetch_rows(p, u[r + AHEAD], q, i[r + AHEAD], q, j[r + AHEAD])
                prefetch(slots_u, u[r + AHEAD])  # slot indices are random reads too (int32: half the misses)
                prefetch(slots_i, i[r + AHEAD])
                prefetch(slots_i, j[r + AHEAD])
            pu, qi, qj = p[u[r]], q[i[r]], q[j[r]]
            d_pos = -inv_b / (F32(1.0) + np.exp(dot(pu, qi)))  # -σ(-s+) / b
            d_neg = inv_b / (F32(1.0) + np.exp(-dot(pu, qj)))  # σ(s-) / b
            su, n_u = _slot(u[r], slots_u, rows_u, g_u, n_u)
            si, n_i = _slot(i[r], slots_i, rows_i, g_i, n_i)
            sj, n_i = _slot(j[r], slots_i, rows_i, g_i, n_i)
            for k in range(d):
                g_u[su, k] += d_pos * qi[k] + d_neg * qj[k] + fl2 * pu[k]
                g_i[si, k] += d_pos * pu[k] + fl2 * qi[k]
                g_i[sj, k] += d_neg * pu[k] + fl2 * qj[k]
        _adam_rows(p, mp, vp, rows_u, g_u, n_u, slots_u, step_u + t + 1, lr, b1, b2, eps)
        _adam_rows(q, mq, vq, rows_i, g_i, n_i, slots_i, step_i + t + 1, lr, b1, b2, eps)
        lo = hi


def train_epoch(
    users: EmbeddingTable,
    items: EmbeddingTable,
    u: np.ndarray,
    i: np.ndarray,
    j: np.ndarray,
    ends: np.ndarray,
    lr: float,
    l2: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> None:
    """Batches [ends[t-1], ends[t]) of (u, i, j) in order, updating both CPU tables in place."""
    arrays = [t.numpy() for table in (users, items) for t in (table.weight, table.exp_avg, table.exp_avg_sq)]
    _epoch(
        *arrays,
        u.astype(np.int64, copy=False),
        i.astype(np.int64, copy=False),
        j.astype(np.int64, copy=False),
        np.asarray(ends, np.int64),
        users.step,
        items.step,
        lr,
        l2,
        betas[0],
        betas[1],
        eps,
    )
    users.step += len(ends)
    items.step += len(ends)
