"""SML's dense Adam step for ŵ: the compiled CPU path against the torch ops it replaced.

One whole-table step (EmbeddingTable.dense_adam_step) on a Yelp-sized item table
(122,720 x 64, the full shape at period 39) with a step-1 batch's distinct rows, the two
paths interleaved on twin tables, medians after a warm-up, the tables compared bit for bit
at the end. SML takes two such steps (users and items) per step-1 batch, 1,480 per retrain
at the full Yelp shape.

examples:
  python benchmarks/bench_dense_adam.py
  python benchmarks/bench_dense_adam.py --threads 2 --rounds 50
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from learner import tables
from learner.tables import EmbeddingTable


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=122_720, help="table rows (default: Yelp's items)")
    parser.add_argument("--batch", type=int, default=1_500, help="distinct rows with a gradient per step")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (SML's default: 2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    native = EmbeddingTable(torch.randn(args.rows, 64, generator=gen) * 0.1)
    reference = native.copy()
    seconds: dict[str, list[float]] = {"torch ops": [], "compiled": []}
    for k in range(args.rounds + 2):
        rows = torch.unique(torch.randint(0, args.rows, (args.batch,), generator=gen))
        grad = torch.randn(len(rows), 64, generator=gen) * 0.01
        t0 = time.perf_counter()
        reference.step += 1
        tables._dense_adam_torch(reference, rows, grad, 1e-2, (0.9, 0.999), 1e-8)
        t1 = time.perf_counter()
        native.dense_adam_step(rows, grad, 1e-2)
        t2 = time.perf_counter()
        if k >= 2:  # the first rounds compile and allocate
            seconds["torch ops"].append(t1 - t0)
            seconds["compiled"].append(t2 - t1)
    same = all(torch.equal(getattr(native, n), getattr(reference, n)) for n in ("weight", "exp_avg", "exp_avg_sq"))
    medians = {name: statistics.median(s) for name, s in seconds.items()}
    for name, s in medians.items():
        print(f"{name:>10}: {s * 1e3:7.2f} ms per step (median of {args.rounds})")
    print(f"torch ops / compiled = {medians['torch ops'] / medians['compiled']:.2f}; identical tables: {same}")


if __name__ == "__main__":
    main()
