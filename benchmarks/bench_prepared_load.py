"""How long `replay_data.prepared.load` takes on a paper-scale prepared log.

Writes a synthetic prepared log (sorted timestamps, int32 codes, Yelp-like 22-character
string ids, a 40-period equal-count schedule in the manifest) with the same writer that
`prepare` uses, then times `load()` several times and prints the median. The files stay in
the OS page cache after writing, so this measures a warm load: decoding Parquet into NumPy
arrays, including the string id maps, not disk speed.

example:
  python benchmarks/bench_prepared_load.py                 # 3M events, median of 5 loads
  python benchmarks/bench_prepared_load.py --events 10000000 --users 1500000 --items 200000
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from replay_data.prepared import FORMAT, _write, load
from replay_data.schedules import SCHEDULE_VERSION, build_schedule


def raw_ids(prefix: str, n: int) -> np.ndarray:
    """n distinct ids of 22 characters, like Yelp's user_id and business_id."""
    return np.array([f"{prefix}{k:021d}" for k in range(n)], dtype=object)


def write_log(target: Path, n_events: int, n_users: int, n_items: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.integers(1_100_000_000, 1_600_000_000, n_events)).astype(np.int64)
    # uniform codes compress worse than a real log's skewed ones: a conservative timing
    users = rng.integers(0, n_users, n_events).astype(np.int32)
    items = rng.integers(0, n_items, n_events).astype(np.int32)
    schedule = build_schedule("equal_count", ts, n_periods=40)
    manifest = {
        "format": FORMAT,
        "schedule_version": SCHEDULE_VERSION,
        "dataset": "benchmark",
        "source": {"kind": "synthetic"},
        "options": {},
        "rejected": {"counts": {}, "examples": []},
        "preprocess": [],
        "counts": {
            "read": n_events,
            "outside_schedule": 0,
            "events": n_events,
            "users": n_users,
            "items": n_items,
            "period_counts": np.diff(np.searchsorted(ts, schedule.edges)).tolist(),
            "empty_periods": [],
        },
        "schedule": schedule.to_dict(),
        "phases": ["pretrain"] * 10 + ["online"] * 20 + ["validation"] * 3 + ["test"] * 7,
        "prepared_at": "",
        "prepare_seconds": 0,
    }
    _write(target, ts, users, items, raw_ids("u", n_users), raw_ids("b", n_items), manifest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=3_000_000, help="interactions (default %(default)s)")
    parser.add_argument("--users", type=int, default=300_000, help="distinct users (default %(default)s)")
    parser.add_argument("--items", type=int, default=100_000, help="distinct items (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="loads to time (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", type=Path, help="where to write the log (default: a temporary folder)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        target = Path(tmp) / "benchmark-log"
        start = time.perf_counter()
        write_log(target, args.events, args.users, args.items, args.seed)
        written = time.perf_counter() - start
        size = sum(f.stat().st_size for f in target.iterdir())
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            log = load(target)
            times.append(time.perf_counter() - start)
            assert len(log.ts) == args.events and len(log.user_ids) == args.users
        print(
            f"prepared log: {args.events:,} events, {args.users:,} users, {args.items:,} items, "
            f"{size / 2**20:.1f} MiB on disk (written in {written:.1f} s)"
        )
        print(
            f"load(): median {statistics.median(times):.3f} s over {args.repeats} loads "
            f"(min {min(times):.3f} s, max {max(times):.3f} s)"
        )


if __name__ == "__main__":
    main()
