"""SML's dense Adam for ŵ: deferred steps (AdamSteps on the CPU) against the torch ops.

One step-1 pass as SML takes it on a full-scale table: `--steps` batches, each reading its
distinct rows and stepping them with a gradient, then a settle of the whole table. The
reference takes the same steps with the torch ops (`_dense_adam_torch`, one whole-table
pass after another; the CUDA path). Both run on twin tables, interleaved, with medians
after a warm-up; the tables are compared bit for bit at the end. The default shape is the
Yelp item table at period 39 (122,720 rows, 74 batches of step 1 at batch 1,024); the
Adressa user table is `--rows 478612 --steps 98`.

examples:
  python benchmarks/bench_dense_adam.py
  python benchmarks/bench_dense_adam.py --rows 478612 --steps 98 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from learner import tables
from learner.tables import AdamSteps, EmbeddingTable


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=122_720, help="table rows (default: Yelp's items)")
    parser.add_argument("--steps", type=int, default=74, help="steps per pass (default: one Yelp step 1)")
    parser.add_argument("--batch", type=int, default=1_500, help="distinct rows with a gradient per step")
    parser.add_argument("--rounds", type=int, default=5, help="timed passes of each path")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (SML's default: 2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    deferred = EmbeddingTable(torch.randn(args.rows, 64, generator=gen) * 0.1)
    reference = deferred.copy()
    seconds: dict[str, list[float]] = {"torch ops": [], "deferred": []}
    for k in range(args.rounds + 1):
        batches = [torch.unique(torch.randint(0, args.rows, (args.batch,), generator=gen)) for _ in range(args.steps)]
        grads = [torch.randn(len(rows), 64, generator=gen) * 0.01 for rows in batches]
        t0 = time.perf_counter()
        for rows, grad in zip(batches, grads):
            reference.weight.index_select(0, rows)
            reference.step += 1
            tables._dense_adam_torch(reference, rows, grad, 1e-2, (0.9, 0.999), 1e-8)
        t1 = time.perf_counter()
        with AdamSteps(deferred, 1e-2, dense=True) as steps:
            for rows, grad in zip(batches, grads):
                steps.read(rows)
                steps.step(rows, grad)
        t2 = time.perf_counter()
        if k >= 1:  # the first pass compiles and allocates
            seconds["torch ops"].append(t1 - t0)
            seconds["deferred"].append(t2 - t1)
    same = all(torch.equal(getattr(deferred, n), getattr(reference, n)) for n in ("weight", "exp_avg", "exp_avg_sq"))
    medians = {name: statistics.median(s) for name, s in seconds.items()}
    print(f"# {args.rows:,} x 64 table, {args.steps} steps of {args.batch:,} rows a pass, {args.threads} threads")
    for name, s in medians.items():
        print(f"{name:>10}: {s:7.3f} s a pass, {s / args.steps * 1e3:6.2f} ms a step (median of {args.rounds})")
    print(f"torch ops / deferred = {medians['torch ops'] / medians['deferred']:.2f}; identical tables: {same}")


if __name__ == "__main__":
    main()
