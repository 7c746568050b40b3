"""Scaling curves: retrain and evaluation seconds against events per period and vocabulary.

Two sweeps over the Yelp-shaped synthetic stream, each point one evaluation and one retrain
per strategy at one period (state built cheaply, as bench_retrain.py does):

  period  fixed --scale; the log is cut into periods of 0.25x, 0.5x, 1x and 2x the Yelp
          period size (the scale-1 log's events / 40, ~75,000); timed at the middle period,
          so the history before it is about half the log at every point.
  vocab   periods of a fixed size (--vocab-period, as a multiple of the Yelp period size) cut
          from logs of growing --scales; timed at the last period, so every user and item
          is known. x = users + items known then. full_retrain is left out: its cost follows
          the history, which grows with the scale too (bench_retrain.py shows it per period).

Prints a table per sweep and the exponent b of a least-squares fit of seconds = a * x^b on
log-log axes (b = 1: linear), and with --plot FILE draws both sweeps.

examples:
  python benchmarks/bench_scaling.py --sweep period --scale 0.25
  python benchmarks/bench_scaling.py --sweep vocab --scales 0.125 0.25 0.5 1.0 --vocab-period 0.25
  python benchmarks/bench_scaling.py --sweep period vocab --plot scaling.png
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
from bench_retrain import state_at, time_period  # a sibling script: its folder is on sys.path when run

from learner.engine import Engine
from replay_data.prepared import prepare
from simulator.config import resolve
from simulator.run import prepared_periods

YELP_PERIODS = 40  # the preset's periods at scale 1
STRATEGIES = ["sml", "fine_tune", "spmf", "full_retrain"]


def measure(
    scale: float, n_periods: int, timed_index: int | None, strategies: list[str], data_dir: str | None
) -> tuple[float, dict[str, float]]:
    """Seconds per part at one point of a sweep; returns (events in the timed period, times)."""
    overrides = [
        f"data.reader.scale={scale}",
        f"data.schedule.params.n_periods={n_periods}",
        f"data.periods={n_periods}",
        "data.phases=null",
    ]
    cfg = resolve("synthetic-business", None, overrides, None)
    log, _ = prepare(cfg.data, data_dir, progress=False)
    periods = list(prepared_periods(log))
    p = timed_index if timed_index is not None else len(periods) - 1
    learner_cfg = replace(
        cfg.learner, strategies=replace(cfg.learner.strategies, enabled=strategies, serving=strategies[0])
    )
    engine = Engine(learner_cfg, log.phases)
    period = state_at(engine, periods, p, base_epochs=2)
    timed = time_period(engine, period)
    times = {f"retrain {name}": retrain_s for name, (retrain_s, _, _) in timed.strategies.items()}
    # evaluation of one strategy: the shared candidates plus one strategy's scoring
    times["evaluation"] = timed.candidates_s + timed.strategies[strategies[0]][1]
    known = len(engine.user_vocab) + len(engine.item_vocab)
    return (len(period.users), known), times


def n_periods_of(scale: float, size: float) -> int:
    """How many periods of `size` x the Yelp period size a log at `scale` holds (at least 3)."""
    n_periods = round(YELP_PERIODS * scale / size)
    if n_periods < 3:
        raise SystemExit(
            f"a log at scale {scale} holds fewer than 3 periods of {size}x the Yelp period size: "
            "raise the scale or lower the period size"
        )
    return n_periods


def _seconds(times: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f} s" for k, v in times.items())


def fit_exponent(x: list[float], y: list[float]) -> float:
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def report(title: str, xlabel: str, xs: list[float], rows: list[dict[str, float]]) -> dict[str, tuple]:
    keys = list(rows[0])
    print(f"\n### {title}\n")
    print(f"| {xlabel} | " + " | ".join(f"{k} s" for k in keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for x, row in zip(xs, rows):
        print(f"| {x:,.0f} | " + " | ".join(f"{row[k]:.2f}" for k in keys) + " |")
    curves = {k: (xs, [row[k] for row in rows]) for k in keys}
    print("| fitted exponent b | " + " | ".join(f"{fit_exponent(*curves[k]):.2f}" for k in keys) + " |")
    return curves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", nargs="+", choices=["period", "vocab"], default=["period", "vocab"])
    parser.add_argument("--scale", type=float, default=0.25, help="log scale for the period sweep")
    parser.add_argument(
        "--sizes",
        type=float,
        nargs="+",
        default=[0.25, 0.5, 1.0, 2.0],
        help="period sizes for the period sweep, as multiples of the Yelp period size",
    )
    parser.add_argument(
        "--scales", type=float, nargs="+", default=[0.125, 0.25, 0.5, 1.0], help="log scales for the vocabulary sweep"
    )
    parser.add_argument(
        "--vocab-period",
        type=float,
        default=0.25,
        help="period size of the vocabulary sweep, as a multiple of the Yelp period size",
    )
    parser.add_argument("--strategies", nargs="+", default=STRATEGIES)
    parser.add_argument("--data-dir", help="prepared-log cache (default: rtsim's)")
    parser.add_argument("--plot", help="write both sweeps' curves to this PNG")
    args = parser.parse_args()

    curves = {}
    if "period" in args.sweep:
        xs, rows = [], []
        for size in args.sizes:
            n_periods = n_periods_of(args.scale, size)
            (events, _), times = measure(args.scale, n_periods, n_periods // 2, args.strategies, args.data_dir)
            xs.append(events)
            rows.append(times)
            print(f"period size {size}x ({n_periods} periods): {events:,} events, {_seconds(times)}", flush=True)
        curves["events per period"] = report(
            f"Against events per period (scale {args.scale})", "events in the period", xs, rows
        )
    if "vocab" in args.sweep:
        xs, rows = [], []
        without_full = [s for s in args.strategies if s != "full_retrain"]
        for scale in args.scales:
            n_periods = n_periods_of(scale, args.vocab_period)
            (events, known), times = measure(scale, n_periods, None, without_full, args.data_dir)
            xs.append(known)
            rows.append(times)
            print(
                f"scale {scale} ({n_periods} periods): {known:,} users + items, {events:,} events, {_seconds(times)}",
                flush=True,
            )
        curves["users + items known"] = report(
            f"Against vocabulary (periods of {args.vocab_period}x the Yelp size)", "users + items", xs, rows
        )
    if args.plot:
        plot(curves, args.plot)


def plot(curves: dict[str, dict[str, tuple]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(6 * len(curves), 4.5), squeeze=False)
    for ax, (xlabel, series) in zip(axes[0], curves.items()):
        for name, (xs, ys) in series.items():
            ax.loglog(xs, ys, marker="o", label=f"{name} (b = {fit_exponent(xs, ys):.2f})")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("seconds")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"\nplot: {path}")


if __name__ == "__main__":
    main()
