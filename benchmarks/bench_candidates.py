"""Evaluation candidates of one period: learner.candidates against the floor of its output.

`sample_eval_candidates` must keep its output exactly: they are the protocol's negatives
(docs/architecture.md, "Training and evaluation negatives"). Three NumPy calls per round
of draws decide those bits: the seeded Generator's doubles (two per draw: the item and
its key), the per-row sort and argpartition. The benchmark times the whole call (median
of --repeats) and, from a profile of one more call, the seconds spent inside those three:
the floor any implementation with the same output pays on this machine.

With --reference FILE (another revision's learner/candidates.py, for instance
`git show 50d8118:learner/candidates.py > /tmp/old_candidates.py`) it times that module
too, interleaved with today's, and checks that both give the same candidates.

examples:
  python benchmarks/bench_candidates.py --data-dir /tmp/rtsim-cache
  python benchmarks/bench_candidates.py --preset synthetic-news --period 62
  python benchmarks/bench_candidates.py --reference /tmp/old_candidates.py
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import pstats
import statistics
import sys
import time

import numpy as np

from learner.candidates import sample_eval_candidates
from learner.history import History
from learner.period import stream_rng
from replay_data.prepared import prepare
from simulator.config import resolve

# the ndarray methods among the calls that decide the candidates, as cProfile names them
ARRAY_CALLS = {
    "<method 'sort' of 'numpy.ndarray' objects>": "sort",
    "<method 'argpartition' of 'numpy.ndarray' objects>": "argpartition",
}


def period_state(preset: str, scale: float, period: int, data_dir: str | None):
    """The history of periods 0..period-1 and period `period`'s codes, as the engine holds them."""
    cfg = resolve(preset, None, [f"data.reader.scale={scale}"], None)
    log, _ = prepare(cfg.data, data_dir, progress=False)
    if not 0 <= period < len(log.phases):
        raise SystemExit(f"--period must be in 0..{len(log.phases) - 1} for this log")
    users, items = log.users.astype(np.int64), log.items.astype(np.int64)
    bounds = log.period_bounds()
    history, n_items_before = History(), 0
    for t in range(period):
        u, i = users[bounds[t] : bounds[t + 1]], items[bounds[t] : bounds[t + 1]]
        history.extend(u, i)
        n_items_before = max(n_items_before, int(i.max()) + 1) if len(i) else n_items_before
    return (
        history,
        users[bounds[period] : bounds[period + 1]],
        items[bounds[period] : bounds[period + 1]],
        n_items_before,
    )


class TimedGenerator:
    """Forwards to a Generator and adds up the seconds of its calls (cProfile does not see
    inside NumPy's compiled Generator methods)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng, self.seconds = rng, 0.0

    def __getattr__(self, name: str):
        method = getattr(self.rng, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            out = method(*args, **kwargs)
            self.seconds += time.perf_counter() - start
            return out

        return timed


def floor_seconds(draw, rng: np.random.Generator) -> tuple[dict[str, float], float]:
    """(seconds in each kind of call that decides the candidates, seconds of the whole call)
    of draw(rng): the Generator's draws, the row sort and argpartition."""
    rng = TimedGenerator(rng)
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.runcall(lambda: draw(rng))
    total = time.perf_counter() - start
    stats = pstats.Stats(profile).stats
    parts = {"draws": rng.seconds}
    for (_, _, name), row in stats.items():
        if name in ARRAY_CALLS:
            parts[ARRAY_CALLS[name]] = row[2]
    return parts, total


def load_reference(path: str):
    spec = importlib.util.spec_from_file_location("reference_candidates", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.sample_eval_candidates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="synthetic-business", help="a synthetic preset (default: the Yelp shape)")
    parser.add_argument("--scale", type=float, default=1.0, help="of the synthetic log (default: full)")
    parser.add_argument("--period", type=int, default=39, help="the period whose candidates are drawn")
    parser.add_argument("--negatives", type=int, default=999)
    parser.add_argument("--seed", type=int, default=0, help="the evaluation seed")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--reference", help="another revision's learner/candidates.py, timed interleaved")
    parser.add_argument("--data-dir", help="prepared-log cache (default: rtsim's)")
    args = parser.parse_args()

    history, users, items, n_before = period_state(args.preset, args.scale, args.period, args.data_dir)
    print(
        f"# {args.preset} at scale {args.scale}, period {args.period}: {len(users):,} interactions, "
        f"{n_before:,} items before it, {args.negatives} negatives each"
    )
    implementations = {"today": sample_eval_candidates}
    if args.reference:
        implementations["reference"] = load_reference(args.reference)

    def draw(name, rng=None):
        rng = rng or stream_rng(args.seed, "eval", args.period)
        return implementations[name](history, users, items, n_before, args.negatives, rng)

    outputs = {name: draw(name) for name in implementations}  # also compiles
    if args.reference:
        today, reference = outputs["today"], outputs["reference"]
        same = np.array_equal(today.negatives, reference.negatives) and np.array_equal(today.counts, reference.counts)
        print(f"same candidates as the reference: {same}")
        if not same:
            raise SystemExit("the candidates differ from the reference's")
    seconds = {name: [] for name in implementations}
    for _ in range(args.repeats):
        for name in implementations:  # interleaved: a noisy spell hits both
            start = time.perf_counter()
            draw(name)
            seconds[name].append(time.perf_counter() - start)
    for name, times in seconds.items():
        print(f"{name:>9}: median {statistics.median(times):.3f} s ({', '.join(f'{t:.2f}' for t in times)})")
    if args.reference:
        ratio = statistics.median(seconds["reference"]) / statistics.median(seconds["today"])
        print(f"reference / today: {ratio:.2f}x")
    parts, total = floor_seconds(lambda rng: draw("today", rng), stream_rng(args.seed, "eval", args.period))
    print(
        f"floor: {sum(parts.values()):.3f} s of a profiled {total:.3f} s call are in the NumPy calls that "
        f"decide the candidates ({', '.join(f'{k} {v:.3f} s' for k, v in parts.items())})"
    )
    print(f"memory: the candidates take {outputs['today'].negatives.nbytes / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
