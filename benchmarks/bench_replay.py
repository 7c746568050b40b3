"""End-to-end replays: `rtsim run` of a whole protocol, with its wall time split.

Runs `rtsim run` in a child process (prepared log cached first, so preparing is not
counted), over the in-process bus or, with --kafka, through a local Kafka broker that this
script starts and stops. From the run's periods.csv it splits the wall time into
evaluation and retraining per strategy; pretraining the shared base model is timed apart
on the same data with the same settings (deterministic: the same work); the rest is
transport and ingest plus start-up and bookkeeping (imports, checkpoints, CSV, the final
report with its plots: a few seconds in all). Peak resident
memory is the child's. The run directory keeps periods.csv, summary.md and
plots/retrain_seconds.png (retrain seconds per period per strategy).

Long runs can be stopped (Ctrl-C, or the machine going away) and continued with
--resume --run-id ID: the run goes on from its newest checkpoint, each leg's wall time and
peak memory are kept in RUN_DIR/bench_legs.json, and the report adds the legs up (work
redone since the last checkpoint is counted again).

examples:
  python benchmarks/bench_replay.py --preset synthetic-business --set data.reader.scale=0.1
  python benchmarks/bench_replay.py --preset synthetic-business --run-id yelp-full            # paper scale, hours
  python benchmarks/bench_replay.py --preset synthetic-business --run-id yelp-full --resume   # after a stop
  python benchmarks/bench_replay.py --preset synthetic-business --set data.reader.scale=0.1 --kafka
  python benchmarks/bench_replay.py --preset synthetic-news --set data.reader.scale=0.1 --runs-dir /tmp/runs
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from bench_retrain import build_state  # a sibling script: its folder is on sys.path when run

from learner.engine import Engine
from replay_data.prepared import prepare
from simulator.config import resolve
from simulator.kafka_local import LocalKafka, free_port
from simulator.run import prepared_periods

LEGS = "bench_legs.json"


def pretrain_seconds(cfg, log) -> float:
    """The engine's pretraining on this log, timed on its own: the same steps on the same
    periods (its own random stream, so not the very same numbers)."""
    n_pretrain = sum(phase == "pretrain" for phase in log.phases)
    periods = list(itertools.islice(prepared_periods(log), n_pretrain))
    return build_state(Engine(cfg.learner, log.phases), periods, n_pretrain, cfg.learner.pretrain.epochs)


def shared_retrains(frame: pd.DataFrame) -> pd.Series:
    """Rows whose retrain copied an earlier strategy's (learner.strategies.share_repeated_work):
    they report the seconds of the work they repeat, so that period shows those seconds twice."""
    return frame.duplicated(["period", "retrain_seconds"], keep="first") & (frame["retrain_seconds"] > 0)


def run_leg(command: list[str], run_dir: Path, kafka: bool) -> bool:
    """Run `rtsim run` once (with a broker of its own for Kafka); record its wall time and
    peak memory in run_dir; returns whether the run finished."""
    broker = None
    if kafka:
        # its state in the run directory: a resumed leg finds the topic where the last one left it
        broker = LocalKafka(run_dir / "kafka", port=free_port(), die_with_parent=True)
        command = [*command, "--bus", f"kafka://{broker.up()}"]
    print(" ".join(command), flush=True)
    start = time.perf_counter()
    try:
        finished = subprocess.run(command, stdout=subprocess.DEVNULL).returncode == 0
    except KeyboardInterrupt:
        finished = False
    finally:
        wall = time.perf_counter() - start
        if broker is not None:
            broker.down()
    if run_dir.exists():
        legs = json.loads((run_dir / LEGS).read_text()) if (run_dir / LEGS).exists() else []
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        legs.append({"wall_s": wall, "peak_mib": peak_mib, "finished": finished})
        (run_dir / LEGS).write_text(json.dumps(legs, indent=2))
    return finished


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="synthetic-business")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--kafka", action="store_true", help="through a local Kafka broker started here")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--run-id", help="run id (default bench-<preset>-<bus>-<time>)")
    parser.add_argument("--resume", action="store_true", help="continue --run-id from its newest checkpoint")
    parser.add_argument("--data-dir", help="prepared-log cache (default: rtsim's)")
    args = parser.parse_args()

    cfg = resolve(args.preset, None, args.overrides, None)
    log, _ = prepare(cfg.data, args.data_dir, progress=True)
    if args.resume and not args.run_id:
        parser.error("--resume needs the --run-id of the run to continue")
    bus = "kafka" if args.kafka else "memory"
    run_id = args.run_id or f"bench-{args.preset}-{bus}-{time.strftime('%Y%m%dT%H%M%S')}"
    run_dir = Path(args.runs_dir) / run_id
    command = [
        sys.executable,
        "-m",
        "simulator.cli",
        "run",
        "--preset",
        args.preset,
        "--run-id",
        run_id,
        "--runs-dir",
        args.runs_dir,
        "--no-progress",
        "--metrics-port",
        "0",
        "--control-port",
        "0",
        "--set",
        "serve.producer_metrics_port=0",
        "--set",
        "serve.producer_control_port=0",
    ]
    command += [arg for override in args.overrides for arg in ("--set", override)]
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    if args.resume:
        command += ["--resume", str(run_dir)]
    if not run_leg(command, run_dir, args.kafka):
        if not (run_dir / "config.yaml").exists():
            sys.exit("rtsim run failed before writing its run directory: see its messages above")
        again = [*sys.argv[1:], *([] if args.run_id else ["--run-id", run_id]), *([] if args.resume else ["--resume"])]
        sys.exit(f"stopped; continue with: python benchmarks/bench_replay.py {' '.join(again)}")
    legs = json.loads((run_dir / LEGS).read_text())
    wall = sum(leg["wall_s"] for leg in legs)
    peak_mib = max(leg["peak_mib"] for leg in legs)
    frame = pd.read_csv(run_dir / "periods.csv")
    pretrain = pretrain_seconds(cfg, log)
    per_strategy = frame.groupby("strategy")[["eval_seconds", "retrain_seconds"]].sum()
    shared = (
        shared_retrains(frame) if cfg.learner.strategies.share_repeated_work else pd.Series(False, index=frame.index)
    )
    evaluation = per_strategy["eval_seconds"].sum()
    retraining = frame.loc[~shared, "retrain_seconds"].sum()
    rest = wall - evaluation - retraining - pretrain
    print(
        f"\n{args.preset} {' '.join(args.overrides)}: {len(log.ts):,} events, {len(log.phases)} periods, "
        f"bus {bus}; run directory {run_dir}, {len(legs)} leg(s)\n"
    )
    print("| part | seconds | share |\n|---|---|---|")
    parts = [
        ("wall time", wall),
        ("pretraining (timed apart)", pretrain),
        ("evaluation, all strategies", evaluation),
        ("retraining, all strategies", retraining),
        ("transport, ingest, start-up and bookkeeping (the rest)", rest),
    ]
    for name, seconds in parts:
        print(f"| {name} | {seconds:,.1f} | {seconds / wall:.0%} |")
    if shared.any():
        print(
            f"\n{shared.sum()} retrains copied another strategy's identical work instead of repeating it "
            f"({', '.join(sorted(frame.loc[shared, 'strategy'].unique()))}); their rows report the "
            f"{frame.loc[shared, 'retrain_seconds'].sum():,.1f} s of that work, counted once above."
        )
    print("\n| strategy | evaluation s | retraining s | retrain s per period: median | first | last |")
    print("|---|---|---|---|---|---|")
    for name, row in per_strategy.iterrows():
        retrain = frame[frame["strategy"] == name].sort_values("period")["retrain_seconds"]
        print(
            f"| {name} | {row['eval_seconds']:,.1f} | {row['retrain_seconds']:,.1f} | {retrain.median():.2f} "
            f"| {retrain.iloc[0]:.2f} | {retrain.iloc[-1]:.2f} |"
        )
    print(f"\npeak resident memory of the run: {peak_mib:,.0f} MiB")


if __name__ == "__main__":
    main()
