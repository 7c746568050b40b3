"""rtsim's MF step against a native peer, implicit's BPR, and this machine's random-row bandwidth.

Same data (random interactions over Yelp-sized tables), d = 64, one thread each, run
interleaved, medians of --repeats rounds after a warm-up:
  rtsim        one train_mf epoch on the CPU (shuffle, uniform negatives, BCE + row-sparse Adam)
  implicit     one BPR epoch (implicit.cpu.bpr.bpr_update: SGD, negatives checked against likes)
  rtsim-torch  (--torch) the same epoch through the torch step, the path kept for CUDA
  rows         random 64-float rows read, changed and written back (x[r] += 1) over tables
               as large as rtsim's six arrays: the memory system's rate for this access pattern
Rates are interaction-updates per second (implicit: one per distinct like, its epoch); the
issue's target is rtsim / implicit >= 0.4.
Per update rtsim reads and writes 9 rows (weights, first and second moments of u, i and
j) where implicit touches 3, so the step is also reported as a fraction of `rows`.

needs the bench extra:  pip install -e '.[bench]'
example:                python benchmarks/bench_peer.py
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one thread each, before any native library starts its pool

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402
from implicit.cpu.bpr import RNGVector, bpr_update  # noqa: E402

from learner.config import TrainSpec  # noqa: E402
from learner.mf import MF, EpochRunner, epoch_rows, native_epoch, shuffled_batches, torch_epoch  # noqa: E402

DIM = 64
ROWS_PER_UPDATE = {"rtsim": 9, "implicit": 3, "rtsim-torch": 9}


Run = tuple[Callable[[], None], int]  # one epoch, and the updates (or rows) it makes


def rtsim_epoch(n_users: int, n_items: int, users: np.ndarray, items: np.ndarray, runner: EpochRunner) -> Run:
    """One epoch as train_mf runs it (shuffle, negatives for the epoch, the step loop)."""
    gen = torch.Generator().manual_seed(0)
    model = MF.from_rows(torch.randn(n_users, DIM, generator=gen) * 0.1, torch.randn(n_items, DIM, generator=gen) * 0.1)
    spec = TrainSpec(lr=1e-2, batch=256, epochs=1, l2=0.0)
    rng = np.random.default_rng(0)

    def uniform_negatives(u: np.ndarray, g: np.random.Generator) -> np.ndarray:
        return g.integers(0, n_items, len(u))

    def epoch() -> None:
        order, negatives, bounds = epoch_rows(
            users, shuffled_batches(len(users), spec.batch, rng), uniform_negatives, rng
        )
        runner(model, users[order], items[order], negatives, bounds, spec)

    return epoch, len(users)


def implicit_epoch(n_users: int, n_items: int, users: np.ndarray, items: np.ndarray) -> Run:
    """What BayesianPersonalizedRanking.fit runs per iteration, without its per-fit set-up."""
    likes = sp.csr_matrix((np.ones(len(users), np.float32), (users, items)), shape=(n_users, n_items))
    likes.sum_duplicates()
    rng = np.random.default_rng(1)
    # implicit keeps a trailing bias column: 63 factors + 1 = rtsim's 64 floats per row
    x = (rng.standard_normal((n_users, DIM)) * 0.1).astype(np.float32)
    y = (rng.standard_normal((n_items, DIM)) * 0.1).astype(np.float32)
    row_of = np.repeat(np.arange(n_users, dtype=np.int32), np.diff(likes.indptr))
    sampler = RNGVector(1, likes.nnz - 1, np.array([0], np.int64))
    return (lambda: bpr_update(sampler, row_of, likes.indices, likes.indptr, x, y, 0.01, 0.01, 1, True)), likes.nnz


@numba.njit(cache=True)
def _touch_rows(table: np.ndarray, rows: np.ndarray) -> None:
    for r in rows:
        for k in range(table.shape[1]):
            table[r, k] += 1.0


def row_probe(n_users: int, n_items: int, n_rows: int) -> Run:
    table = np.zeros((3 * (n_users + n_items), DIM), np.float32)  # rtsim: weights + 2 moments per table
    rows = np.random.default_rng(2).integers(0, len(table), n_rows)
    return (lambda: _touch_rows(table, rows)), n_rows


def median_rates(runs: dict[str, Run], repeats: int) -> dict[str, float]:
    """Updates per second of each run: the median of `repeats` interleaved rounds."""
    for run, _ in runs.values():
        run()  # warm-up: compilation, page faults, caches
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, (run, _) in runs.items():  # interleaved: load from other work hits all alike
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: runs[name][1] / statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=59_082)
    parser.add_argument("--items", type=int, default=122_720)
    parser.add_argument("--interactions", type=int, default=512_000, help="per epoch")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--torch", action="store_true", help="also time the torch step (the CUDA path) on the CPU")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    users = rng.integers(0, args.users, args.interactions)
    items = rng.integers(0, args.items, args.interactions)
    runs = {
        "rtsim": rtsim_epoch(args.users, args.items, users, items, native_epoch),
        "implicit": implicit_epoch(args.users, args.items, users, items),
        "rows": row_probe(args.users, args.items, args.interactions),
    }
    if args.torch:
        runs["rtsim-torch"] = rtsim_epoch(args.users, args.items, users, items, torch_epoch)
    rate = median_rates(runs, args.repeats)
    print(
        f"tables {args.users:,} x {args.items:,}, d {DIM}, {args.interactions:,} interactions per epoch, "
        f"one thread, medians of {args.repeats} interleaved rounds"
    )
    for name in [n for n in ROWS_PER_UPDATE if n in rate]:
        rows = ROWS_PER_UPDATE[name] * rate[name]
        print(
            f"  {name:11s} {rate[name] / 1e6:6.2f}M updates/s  ({rows / 1e6:5.1f}M rows/s = "
            f"{rows / rate['rows']:.2f} of random-row rate)"
        )
    print(
        f"  {'rows':11s} {rate['rows'] / 1e6:6.2f}M random rows/s read-modify-written "
        f"({rate['rows'] * DIM * 4 * 2 / 1e9:.1f} GB/s)"
    )
    if args.torch:
        print(f"native / torch step: {rate['rtsim'] / rate['rtsim-torch']:.1f}x")
    print(f"ratio rtsim / implicit: {rate['rtsim'] / rate['implicit']:.2f} (target >= 0.4)")


if __name__ == "__main__":
    main()
