"""The two compute hot paths against this machine's limits, measured in the same run.

- SML's retrain (transfer forward/backward on every batch, plus the whole-table passes):
  its multiply-adds, counted by torch's FlopCounterMode on an identical second run, per
  second of the timed run, next to torch.matmul's rate on comparable shapes
  (rows x 5d @ 5d x 512) with the same number of threads.
- Evaluation scoring: candidate multiply-adds per second next to the 1-thread matmul rate,
  and, since scoring gathers 1,000 candidate rows per interaction, the bytes gathered per
  second next to a large tensor copy's rate (bytes read + written), its real limit.

Medians of --repeats for the rates; one timed retrain.

examples:
  python benchmarks/bench_hotpaths.py --scale 0.25 --period 20
  python benchmarks/bench_hotpaths.py --scale 1.0 --period 20 --data-dir /tmp/rtsim-cache
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch
from bench_retrain import state_at  # a sibling script: its folder is on sys.path when run
from torch.utils.flop_counter import FlopCounterMode

from learner.candidates import sample_eval_candidates
from learner.engine import Engine
from learner.evaluation import rank_positives
from replay_data.prepared import prepare
from simulator.config import resolve
from simulator.run import prepared_periods


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_rate(rows: int, inner: int, cols: int, threads: int, repeats: int) -> float:
    """Multiply-adds per second of (rows x inner) @ (inner x cols) on `threads` threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    a, b = torch.randn(rows, inner), torch.randn(inner, cols)
    seconds = median_seconds(lambda: [a @ b for _ in range(10)], repeats) / 10
    torch.set_num_threads(before)
    return rows * inner * cols / seconds


def copy_rate(n_bytes: int, repeats: int) -> float:
    """Bytes read + written per second by a tensor copy far larger than the caches."""
    src = torch.randn(n_bytes // 4)
    dst = torch.empty_like(src)
    return 2 * n_bytes / median_seconds(lambda: dst.copy_(src), repeats)


def fresh_state(args, learner_cfg, log, periods):
    """The engine as period args.period closes, before that period joins the history."""
    engine = Engine(learner_cfg, log.phases)
    period = state_at(engine, periods, args.period, base_epochs=2)
    return engine, replace(period, phase="online")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=0.25, help="of the Yelp-shaped synthetic log")
    parser.add_argument("--period", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data-dir", help="prepared-log cache (default: rtsim's)")
    args = parser.parse_args()

    cfg = resolve("synthetic-business", None, [f"data.reader.scale={args.scale}"], None)
    log, _ = prepare(cfg.data, args.data_dir, progress=False)
    periods = list(prepared_periods(log))
    learner_cfg = replace(cfg.learner, strategies=replace(cfg.learner.strategies, enabled=["sml"], serving="sml"))
    sml_threads = learner_cfg.strategies.sml.retrain_threads
    dim = 64
    print(
        f"# Yelp shape at scale {args.scale}, period {args.period}; SML on {sml_threads} threads, "
        f"evaluation on {learner_cfg.threads}\n"
    )

    # evaluation candidates as the engine draws them: before the period joins the history
    engine, period = fresh_state(args, learner_cfg, log, periods)
    cand = sample_eval_candidates(
        engine.shared.history,
        period.users,
        period.items,
        period.n_items_before,
        learner_cfg.eval.negatives,
        engine.shared.rng("eval", args.period),
    )

    # SML: time one retrain, then count the multiply-adds of an identical run
    engine.shared.history.extend(period.users, period.items)
    start = time.perf_counter()
    engine.strategies["sml"].retrain(period)
    sml_s = time.perf_counter() - start
    counted, _ = fresh_state(args, learner_cfg, log, periods)
    counted.shared.history.extend(period.users, period.items)
    with FlopCounterMode(display=False) as counter:
        counted.strategies["sml"].retrain(period)
    sml_macs = counter.get_total_flops() / 2
    sml_limit = matmul_rate(3072, 5 * dim, 512, sml_threads, args.repeats)

    # scoring of the retrained model on those candidates, timed
    users, items = engine.strategies["sml"].serving_embeddings()
    torch.set_num_threads(learner_cfg.threads)
    score_s = median_seconds(
        lambda: rank_positives(users, items, period.users, period.items, cand.negatives, learner_cfg.eval.chunk_rows),
        args.repeats,
    )
    n_scores = int(cand.counts.sum()) + len(period.users)
    eval_limit = matmul_rate(
        learner_cfg.eval.chunk_rows, dim, learner_cfg.eval.negatives, learner_cfg.threads, args.repeats
    )
    gathered = n_scores * dim * 4
    bandwidth = copy_rate(512 * 2**20, args.repeats)

    print("| hot path | seconds | achieved | limit measured in this run | ratio |")
    print("|---|---|---|---|---|")
    print(
        f"| SML retrain ({sml_macs / 1e9:,.0f} G multiply-adds) | {sml_s:.2f} | {sml_macs / sml_s / 1e9:.1f} GMAC/s "
        f"| matmul 3072x{5 * dim} @ {5 * dim}x512, {sml_threads} threads: {sml_limit / 1e9:.1f} GMAC/s "
        f"| {sml_macs / sml_s / sml_limit:.0%} |"
    )
    print(
        f"| evaluation scoring, {len(period.users):,} interactions ({n_scores / 1e6:,.1f} M scores) | {score_s:.2f} "
        f"| {n_scores * dim / score_s / 1e9:.2f} GMAC/s | matmul {learner_cfg.eval.chunk_rows}x{dim} @ {dim}x"
        f"{learner_cfg.eval.negatives}, {learner_cfg.threads} thread(s): {eval_limit / 1e9:.1f} GMAC/s "
        f"| {n_scores * dim / score_s / eval_limit:.0%} |"
    )
    print(
        f"| evaluation gather | {score_s:.2f} | {gathered / score_s / 1e9:.2f} GB/s gathered "
        f"| tensor copy of 512 MiB: {bandwidth / 1e9:.1f} GB/s read + written "
        f"| {gathered / score_s / bandwidth:.0%} |"
    )
    print(f"\nevaluation: {len(period.users) / score_s:,.0f} interactions/s scored")


if __name__ == "__main__":
    main()
