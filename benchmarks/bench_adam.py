"""Caser's Adam step: learner.adam.Adam against torch.optim.Adam on the full-shape tables.

Caser trains with Adam on every parameter, its embedding tables included, so each step of
a retrain moves every row of the user table (P_u), the input item table, the 2d-wide output
table and the item bias. The benchmark steps twin copies of a CaserNet's parameters (its
paper defaults, random tables) with dense gradients like a batch's (256 users' rows, their
windows' and targets' item rows, zeros elsewhere), one optimiser after the other,
interleaved, and reports medians; the parameters are compared bit for bit at the end. (On
the CPU, Caser hands the user and input item tables over as sparse gradients, which the
same optimiser sums into kept zeros: this dense form is the step both share.) Default
shape: the full Adressa shape at period 62 (478,612 users, 20,711 items); the Yelp shape
at period 39 is `--users 59082 --items 122720`.

examples:
  python benchmarks/bench_adam.py
  python benchmarks/bench_adam.py --users 59082 --items 122720 --steps 10
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from learner.adam import Adam
from learner.strategies.caser import CaserConfig, CaserNet


def caser_params(users: int, items: int, dim: int, gen: torch.Generator) -> list[tuple[str, torch.nn.Parameter]]:
    """A CaserNet's named parameters at its paper defaults, from random tables."""
    net = CaserNet(
        torch.randn(users, dim, generator=gen) * 0.1,
        torch.randn(items, dim, generator=gen) * 0.1,
        torch.randn(dim, 2 * dim, generator=gen) * 0.1,
        CaserConfig(),
        sparse=False,
    )
    return list(net.named_parameters())


def batch_grads(params: list[tuple[str, torch.nn.Parameter]], batch: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Dense gradients with a batch's rows set in the tables (users; 5 window items and 3
    targets x 4 rows per event in the item tables) and every entry of the small layers."""
    rows = {"users": batch, "item_in": 5 * batch, "out": 12 * batch, "bias": 12 * batch}
    grads = []
    for name, p in params:
        if name in rows:
            g = torch.zeros_like(p)
            g[torch.randint(0, p.shape[0], (rows[name],), generator=gen)] = 0.01
        else:
            g = torch.randn(p.shape, generator=gen) * 0.01
        grads.append(g)
    return grads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=478_612, help="user rows (default: Adressa's at period 62)")
    parser.add_argument("--items", type=int, default=20_711, help="item rows (default: Adressa's at period 62)")
    parser.add_argument("--steps", type=int, default=5, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds of each optimiser")
    parser.add_argument("--batch", type=int, default=256, help="events per step (Caser's batch)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a learner's strategy: 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    named = caser_params(args.users, args.items, 64, gen)
    ours = [p for _, p in named]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    optimisers = {
        "torch.optim.Adam": (torch.optim.Adam(theirs, lr=1e-3, weight_decay=1e-6), theirs),
        "learner.adam.Adam": (Adam(ours, lr=1e-3, weight_decay=1e-6), ours),
    }
    seconds: dict[str, list[float]] = {name: [] for name in optimisers}
    for k in range(args.rounds + 1):
        grads = [batch_grads(named, args.batch, gen) for _ in range(args.steps)]
        for name, (opt, params) in optimisers.items():
            start = time.perf_counter()
            for step in grads:
                for p, g in zip(params, step):
                    p.grad = g
                opt.step()
            if k >= 1:  # the first round compiles and allocates the moments
                seconds[name].append(time.perf_counter() - start)
    same = all(torch.equal(a, b) for a, b in zip(ours, theirs))
    medians = {name: statistics.median(s) / args.steps for name, s in seconds.items()}
    print(f"# Caser's parameters: {args.users:,} users, {args.items:,} items, d 64; {args.threads} thread(s)")
    for name, s in medians.items():
        print(f"{name:>18}: {s * 1e3:7.1f} ms a step (median of {args.rounds} rounds of {args.steps})")
    ratio = medians["torch.optim.Adam"] / medians["learner.adam.Adam"]
    print(f"torch.optim.Adam / learner.adam.Adam = {ratio:.2f}; identical parameters: {same}")


if __name__ == "__main__":
    main()
