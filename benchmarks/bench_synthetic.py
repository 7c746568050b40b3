"""Time generating a synthetic stream at the paper's scale (target: 3M events under 60 s).

examples:
  python benchmarks/bench_synthetic.py                       # both worlds, scale 1 (3.66M and 3.01M events)
  python benchmarks/bench_synthetic.py --worlds synthetic-news --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

from learner.memory import peak_resident_bytes
from replay_data.synthetic import read_synthetic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worlds", nargs="+", default=["synthetic-news", "synthetic-business"])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    print("| world | events | users | items | median seconds | events/s |\n|---|---|---|---|---|---|")
    for world in args.worlds:
        times, n, users, items = [], 0, set(), set()
        for _ in range(args.repeats):
            start = time.perf_counter()
            n, users, items = 0, set(), set()
            for chunk in read_synthetic(world, 0, scale=args.scale):
                n += len(chunk)
                users.update(chunk["user"].unique())
                items.update(chunk["item"].unique())
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        print(f"| {world} | {n:,} | {len(users):,} | {len(items):,} | {median:.1f} | {n / median:,.0f} |")
    print(f"\npeak resident memory: {peak_resident_bytes() / 2**20:,.0f} MiB")


if __name__ == "__main__":
    main()
