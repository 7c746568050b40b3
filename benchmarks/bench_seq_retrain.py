"""Retrain seconds of the sequence models (GRU4Rec, Caser) at full-scale periods.

A full-mode retrain makes `epochs` passes over every event so far, and each of Caser's Adam
steps updates its whole tables: at the full shapes one retrain at a late period takes from
minutes (GRU4Rec) to hours (Caser), so timing every period directly is out of reach. The cost is
linear in the events trained on once the state (table sizes, history) is fixed, so this
benchmark builds the real state at period P (ids and history of periods <= P), times
training passes over the last m and 2m events of that history, and fits
t(m) = a + b*m: `a` holds what does not grow with m (the input windows are looked up over
the whole history), `b` the seconds per event. The retrain at P is a + b*n (n events in
the history) plus the served tables' rebuild, timed on its own. `--full` also times one
real retrain at each period, to check the projection.

The models start untrained (the start's pass over the pretrain periods is skipped): a
step costs the same whatever the weights hold.

examples:
  python benchmarks/bench_seq_retrain.py --preset synthetic-business --periods 10 20 30 39
  python benchmarks/bench_seq_retrain.py --preset synthetic-news --periods 21 42 62
  python benchmarks/bench_seq_retrain.py --preset synthetic-business --set data.reader.scale=0.1 --periods 39 --full
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace

from bench_retrain import arguments, build_state, load

from learner.engine import Engine
from learner.memory import peak_resident_bytes
from learner.strategies.base import REGISTRY
from learner.strategies.sequential import SequenceStrategy
from simulator.config import resolve


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def untrained(engine: Engine, name: str) -> SequenceStrategy:
    """`name` started from the engine's base model without the start's training pass."""
    settings = engine.cfg.strategies
    cfg = getattr(settings, name)
    skip = replace(settings, **{name: replace(cfg, train=replace(cfg.train, epochs=0))})
    strategy = REGISTRY[name].from_settings(skip, engine.shared)
    strategy.start(engine.base_model)
    strategy.cfg = cfg  # the configured passes from here on
    return strategy


def full_retrain(strategy: SequenceStrategy, p: int) -> None:
    """What `retrain` does in full mode: a pass over every event so far, then the tables."""
    history = strategy.shared.history
    strategy._train(history.users, history.items, 0, strategy.rng(p, "train"))
    strategy._rebuild_tables()


def main() -> None:
    parser = arguments(__doc__, ["gru4rec", "caser"])
    parser.add_argument("--events", type=int, default=5000, help="m, the smaller sample (the other is 2m)")
    parser.add_argument("--repeats", type=int, default=3, help="timings per sample size (median)")
    parser.add_argument("--full", action="store_true", help="also time one real retrain per period")
    args = parser.parse_args()

    cfg = resolve(args.preset, None, args.overrides, args.input)
    for name in args.strategies:
        if getattr(cfg.learner.strategies, name).mode != "full":
            parser.error(f"{name}: only mode full is benchmarked here (fine_tune trains on one period)")
    log, periods, learner_cfg = load(args, cfg)
    rows = []
    for p in args.periods:
        engine = Engine(learner_cfg, log.phases)
        build_state(engine, periods, p + 1, base_epochs=1)  # the history holds period p: it just closed
        history = engine.shared.history
        n = len(history)
        for name in args.strategies:
            strategy = untrained(engine, name)
            m = min(args.events, n // 2)
            # untimed: the first steps allocate the optimiser's state
            strategy._train(history.users, history.items, n - min(m, 1000), strategy.rng(p, "warm-up"))
            timed = {}
            for size in (m, 2 * m):
                timed[size] = statistics.median(
                    seconds(lambda: strategy._train(history.users, history.items, n - size, strategy.rng(p, "bench")))
                    for _ in range(args.repeats)
                )
            per_event = (timed[2 * m] - timed[m]) / m
            fixed = timed[m] - per_event * m
            rebuild = seconds(strategy._rebuild_tables)
            projected = fixed + per_event * n + rebuild
            measured = seconds(lambda: full_retrain(strategy, p)) if args.full else None
            rows.append((p, name, n, per_event, fixed, rebuild, projected, measured))
            shown = f"{measured:.1f}" if measured is not None else "-"
            print(f"period {p:>3} {name:<8} projected {projected:8.1f} s  measured {shown} s", flush=True)
    print(
        "\n| period | strategy | history | µs / event | fixed s | tables s | retrain s (projected) | retrain s (measured) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for p, name, n, per_event, fixed, rebuild, projected, measured in rows:
        shown = f"{measured:.1f}" if measured is not None else "-"
        print(
            f"| {p} | {name} | {n:,} | {per_event * 1e6:.0f} | {fixed:.2f} | {rebuild:.2f} | {projected:.1f} | {shown} |"
        )
    print(f"\npeak resident memory: {peak_resident_bytes() / 2**20:,.0f} MiB")


if __name__ == "__main__":
    main()
