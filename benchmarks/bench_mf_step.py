"""Seconds per MF training step (batch 256, d = 64) on Yelp-sized tables, per device.

Every MF strategy (full-retrain, fine-tune, SPMF, the base model) spends its retrain in
this step: gather three row sets, closed-form gradients, row-sparse Adam on both tables.
Its cost is per-call overhead, not arithmetic, so it is timed as train_mf runs it: one
epoch of shuffled batches with uniform negatives, medians of --repeats epochs after a
warm-up. Run it under two checkouts (PYTHONPATH) to compare versions side by side.

examples:
  python benchmarks/bench_mf_step.py --devices cpu
  python benchmarks/bench_mf_step.py --devices cuda cpu --steps 2000
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from learner.config import TrainSpec
from learner.mf import MF, train_mf


def seconds_per_step(device: str, n_users: int, n_items: int, steps: int, repeats: int) -> float:
    gen = torch.Generator().manual_seed(0)
    model = MF.from_rows(
        torch.randn(n_users, 64, generator=gen).to(device) * 0.1,
        torch.randn(n_items, 64, generator=gen).to(device) * 0.1,
    )
    spec = TrainSpec(lr=1e-2, batch=256, epochs=1, l2=0.0)
    rng = np.random.default_rng(0)
    users = rng.integers(0, n_users, steps * spec.batch)
    items = rng.integers(0, n_items, steps * spec.batch)

    def uniform_negatives(u: np.ndarray, g: np.random.Generator) -> np.ndarray:
        return g.integers(0, n_items, len(u))

    def epoch() -> float:
        start = time.perf_counter()
        train_mf(model, users, items, uniform_negatives, spec, rng)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / steps

    epoch()  # warm-up: allocator, kernels, caches
    return statistics.median(epoch() for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", nargs="+", default=["cpu"])
    parser.add_argument("--users", type=int, default=59_082)
    parser.add_argument("--items", type=int, default=122_720)
    parser.add_argument("--steps", type=int, default=1000, help="per timed epoch")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the engine's default is 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for device in args.devices:
        ms = 1000 * seconds_per_step(device, args.users, args.items, args.steps, args.repeats)
        print(f"{device}: {ms:.3f} ms per step (median of {args.repeats} epochs of {args.steps} steps)", flush=True)


if __name__ == "__main__":
    main()
