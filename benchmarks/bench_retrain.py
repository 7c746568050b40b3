"""Single retrains of every strategy at chosen periods of a prepared log, with profiles.

For each chosen period P the learner state is built cheaply (ids and history of periods
< P registered, a base MF trained for a few epochs on them), every strategy starts from
it, and then exactly one retrain on D_P is timed per strategy (SML first starts the task
of P-1, untimed, so the timed retrain includes its K rounds, as in a real run).
Evaluation of D_P (candidates + scoring) is timed too. Prints a Markdown table, the
top functions of a cProfile of each retrain, and peak resident memory.

examples:
  python benchmarks/bench_retrain.py --preset synthetic-business --periods 10 20 30 39
  python benchmarks/bench_retrain.py --preset movielens --input ../shared/data/real/movielens-latest-small/ratings.csv --periods 10 20 30 39
  python benchmarks/bench_retrain.py --preset synthetic-business --set data.reader.scale=0.1 --periods 20 --strategies sml fine_tune
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time
from dataclasses import dataclass, replace

from learner.candidates import sample_eval_candidates
from learner.config import LearnerConfig
from learner.engine import Engine
from learner.evaluation import rank_positives
from learner.memory import peak_resident_bytes
from learner.mf import MF, train_mf
from learner.period import Period
from replay_data.prepared import PreparedLog, prepare
from simulator.config import RunConfig, resolve
from simulator.run import prepared_periods


def build_state(engine: Engine, periods, upto: int, base_epochs: int) -> float:
    """Register periods < upto and train a base MF on them (no per-period protocol);
    returns the seconds the base MF trained."""
    shared = engine.shared
    for t, events in periods[:upto]:
        period, _, _ = engine._register(t, events)
        shared.history.extend(period.users, period.items)
    base = MF.from_rows(engine._rows(engine.user_vocab.ids, "user"), engine._rows(engine.item_vocab.ids, "item"))
    spec = replace(engine.cfg.pretrain, epochs=base_epochs)
    start = time.perf_counter()
    train_mf(base, shared.history.users, shared.history.items, shared.sample_negatives, spec, shared.rng("bench"))
    seconds = time.perf_counter() - start
    engine.base_model = base
    engine.next_period = upto
    return seconds


def state_at(engine: Engine, periods, p: int, base_epochs: int):
    """Every enabled strategy started on a cheap state at period p, SML with a task in
    progress (started untimed on D_{p-1}); returns period p, registered but not yet in
    the history, ready to be evaluated and then retrained."""
    build_state(engine, periods, p - 1, base_epochs)
    for name in engine.enabled:
        engine.strategies[name] = engine._new_strategy(name, engine.base_model)
    previous = _register_and_grow(engine, periods[p - 1])
    engine.shared.history.extend(previous.users, previous.items)
    for strategy in engine.strategies.values():
        if hasattr(strategy, "task"):  # only SML-style strategies carry work across periods
            strategy.retrain(replace(previous, phase="online"))
    return _register_and_grow(engine, periods[p])


def _register_and_grow(engine: Engine, period_events):
    period, new_users, new_items = engine._register(*period_events)
    for strategy in engine.strategies.values():
        strategy.grow(engine._rows(new_users, "user"), engine._rows(new_items, "item"))
    return period


@dataclass
class PeriodTimes:
    candidates_s: float  # the shared evaluation candidates
    strategies: dict[str, tuple[float, float, str]]  # name -> (retrain s, scoring s, profile or "")


def time_period(engine: Engine, period: Period, profile_lines: int = 0) -> PeriodTimes:
    """Evaluate then retrain every strategy on `period` (from state_at), as the engine does,
    timing each part; with profile_lines > 0 each retrain runs under cProfile."""
    cfg = engine.cfg
    start = time.perf_counter()
    cand = sample_eval_candidates(
        engine.shared.history,
        period.users,
        period.items,
        period.n_items_before,
        cfg.eval.negatives,
        engine.shared.rng("eval", period.index),
    )
    out = PeriodTimes(time.perf_counter() - start, {})
    engine.shared.history.extend(period.users, period.items)
    for name, strategy in engine.strategies.items():
        start = time.perf_counter()
        rank_positives(*strategy.serving_embeddings(), period.users, period.items, cand.negatives, cfg.eval.chunk_rows)
        score_s = time.perf_counter() - start
        profiler = cProfile.Profile() if profile_lines else None
        start = time.perf_counter()
        if profiler:
            profiler.enable()
        strategy.retrain(period)
        if profiler:
            profiler.disable()
        out.strategies[name] = (
            time.perf_counter() - start,
            score_s,
            profile_top(profiler, profile_lines) if profiler else "",
        )
    return out


def profile_top(profiler: cProfile.Profile, n: int) -> str:
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(n)
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls"))
    return "\n".join(lines[start : start + n + 1])


def load(args: argparse.Namespace, cfg: RunConfig) -> tuple[PreparedLog, list, LearnerConfig]:
    """The prepared log of `cfg`, its periods, and the learner settings with only
    args.strategies enabled; prints what was loaded."""
    log, _ = prepare(cfg.data, args.data_dir, progress=True)
    periods = list(prepared_periods(log))
    learner_cfg = replace(
        cfg.learner, strategies=replace(cfg.learner.strategies, enabled=args.strategies, serving=args.strategies[0])
    )
    print(
        f"# {args.preset}: {len(log.ts):,} events, {len(log.user_ids):,} users, {len(log.item_ids):,} items, "
        f"{len(periods)} periods; torch threads {learner_cfg.threads}\n",
        flush=True,
    )
    return log, periods, learner_cfg


def arguments(doc: str, strategies: list[str]) -> argparse.ArgumentParser:
    """The options every retrain benchmark takes: which log, which periods, which strategies."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="synthetic-business")
    parser.add_argument("--input")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--periods", type=int, nargs="+", default=[10, 20, 30, 39])
    parser.add_argument("--strategies", nargs="+", default=strategies)
    parser.add_argument("--data-dir")
    return parser


def main() -> None:
    parser = arguments(__doc__, ["sml", "sml_s", "fine_tune", "full_retrain", "spmf"])
    parser.add_argument("--base-epochs", type=int, default=2, help="epochs of the stand-in base model")
    parser.add_argument("--profile-lines", type=int, default=8)
    args = parser.parse_args()

    log, periods, learner_cfg = load(args, resolve(args.preset, None, args.overrides, args.input))
    rows, profiles = [], []
    for p in args.periods:
        engine = Engine(learner_cfg, log.phases)
        period = state_at(engine, periods, p, args.base_epochs)
        timed = time_period(engine, replace(period, phase=log.phases[p]), profile_lines=args.profile_lines)
        for name, (retrain_s, score_s, profile) in timed.strategies.items():
            rows.append(
                (p, name, len(period.users), len(engine.shared.history), retrain_s, score_s, timed.candidates_s)
            )
            profiles.append(f"### period {p}, {name}: {retrain_s:.1f} s\n```\n{profile}\n```")
            print(f"period {p:>3} {name:<13} retrain {retrain_s:8.2f} s  score {score_s:6.2f} s", flush=True)
    print(
        "\n| period | strategy | interactions | history | retrain s | eval s (score + shared candidates) | eval interactions/s |"
    )
    print("|---|---|---|---|---|---|---|")
    for p, name, n, history, retrain_s, score_s, candidate_s in rows:
        eval_s = score_s + candidate_s
        print(
            f"| {p} | {name} | {n:,} | {history:,} | {retrain_s:.2f} | {score_s:.2f} + {candidate_s:.2f} | {n / eval_s:,.0f} |"
        )
    by = {(row[0], row[1]): row[4] for row in rows}
    if "sml" in args.strategies and "full_retrain" in args.strategies:
        print("\n| period | full_retrain / sml |\n|---|---|")
        for p in args.periods:
            print(f"| {p} | {by[(p, 'full_retrain')] / by[(p, 'sml')]:.1f} |")
    print(f"\npeak resident memory: {peak_resident_bytes() / 2**20:,.0f} MiB\n")
    print("\n".join(profiles))


if __name__ == "__main__":
    main()
