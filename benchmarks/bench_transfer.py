"""SML's transfer pieces on the CPU: the compiled loops (learner/transfer_native.py) against
the same maths as torch ops (the CUDA form, learner/transfer.py), interleaved, medians.

Row counts are those SML runs them at on the Yelp shape: a step-2 batch (~770 distinct
rows), a step-1 batch (~3,000) and a whole-table chunk (16,384, forward only). The
convolutions run forward and backward as step 1 does (gradient to the new rows) and as
step 2 does (gradient to the weights); the GELU on the (rows x 512) hidden layer forward
and backward.

examples:
  python benchmarks/bench_transfer.py
  python benchmarks/bench_transfer.py --threads 1 --repeats 31
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch

from learner import transfer_native
from learner.native import set_threads
from learner.transfer import conv_section_torch, gelu_torch


def conv_case(conv: Callable, rows: int, dim: int, grad_to: str) -> Callable[[], None]:
    gen = torch.Generator().manual_seed(rows)
    old, new = torch.randn(rows, dim, generator=gen), torch.randn(rows, dim, generator=gen)
    product = old * new / old.norm(dim=1, keepdim=True)
    weights = [torch.randn(*shape, generator=gen) * 0.5 for shape in [(10, 3), (10,), (5, 10), (5,)]]

    def run() -> None:
        if grad_to == "none":
            with torch.no_grad():
                conv(old, new, product, *weights)
            return
        leaves = [new.clone().requires_grad_(grad_to == "new")] + [
            w.clone().requires_grad_(grad_to == "weights") for w in weights
        ]
        conv(old, leaves[0], product, *leaves[1:]).sum().backward()

    return run


def gelu_case(gelu: Callable, rows: int) -> Callable[[], None]:
    z = torch.randn(rows, 512, generator=torch.Generator().manual_seed(rows)) * 3

    def run() -> None:
        gelu(z.clone().requires_grad_()).sum().backward()

    return run


def interleaved_medians(pair: tuple[Callable, Callable], repeats: int) -> tuple[float, float]:
    for fn in pair:
        fn()  # warm-up (and the first call's compilation)
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, out in zip(pair, times, strict=True):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="default: every core")
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--dim", type=int, default=64)
    args = parser.parse_args()
    set_threads(args.threads)
    print(f"# {args.threads} thread(s), d = {args.dim}, medians of {args.repeats}, interleaved\n")
    print("| piece | rows | torch ops, ms | compiled, ms | speed-up |")
    print("|---|---|---|---|---|")
    cases = [
        ("convolutions, step 2 (weights)", 770, "weights"),
        ("convolutions, step 1 (new rows)", 3000, "new"),
        ("convolutions, table pass (forward)", 16384, "none"),
    ]
    for label, rows, grad_to in cases:
        pair = (
            conv_case(conv_section_torch, rows, args.dim, grad_to),
            conv_case(transfer_native.conv_section, rows, args.dim, grad_to),
        )
        torch_s, native_s = interleaved_medians(pair, args.repeats)
        print(f"| {label} | {rows:,} | {torch_s * 1e3:.2f} | {native_s * 1e3:.2f} | {torch_s / native_s:.1f}x |")
    for rows in (770, 3000):
        pair = (gelu_case(gelu_torch, rows), gelu_case(transfer_native.gelu_sigmoid, rows))
        torch_s, native_s = interleaved_medians(pair, args.repeats)
        print(
            f"| GELU on (rows x 512), forward and backward | {rows:,} | {torch_s * 1e3:.2f} | {native_s * 1e3:.2f} | {torch_s / native_s:.1f}x |"
        )


if __name__ == "__main__":
    main()
