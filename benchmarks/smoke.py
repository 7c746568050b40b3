"""A sub-minute smoke benchmark to compare later work against, by ratio.

Times, on the synthetic Yelp shape at 0.02x scale (60k events, 40 periods): one retrain
of every strategy at period 20 (state built cheaply, as bench_retrain.py does), the evaluation of that period, and the learner's ingest
of the whole log over the in-process bus. Each figure is the median of --repeats runs.
With --baseline FILE it prints each figure's ratio to a recorded run (> 1 = slower now);
with --save FILE it records this run and the machine it ran on. A baseline from another
machine is still compared, with a warning: its ratios then mix the code and the hardware.

examples:
  python benchmarks/smoke.py --save benchmarks/smoke-baseline.json
  python benchmarks/smoke.py --baseline benchmarks/smoke-baseline.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from dataclasses import replace

import torch
from bench_ingest import cpu_model  # sibling scripts: their folder is on sys.path when run
from bench_retrain import state_at, time_period

from learner.engine import Engine
from replay_data.prepared import prepare
from simulator.bus.memory import MemoryBus
from simulator.config import resolve
from simulator.producer import ReplayProducer
from simulator.run import prepared_periods, replay_settings
from simulator.stream import StreamLearner

PERIOD = 20
STRATEGIES = ("sml", "sml_s", "fine_tune", "full_retrain", "spmf")


class _CountingEngine:
    """Stands in for the engine during the ingest measurement: no retraining."""

    def __init__(self, phases: list[str]) -> None:
        self.phases = phases
        self.serving = "none"
        self.user_vocab = self.item_vocab = ()

    def close_period(self, t, events):
        return []


def machine() -> dict[str, str | int]:
    """What a timing depends on besides the code."""
    return {"cpu": cpu_model(), "cpus": len(os.sched_getaffinity(0)), "torch": torch.__version__}


def load_baseline(path: str) -> dict[str, float]:
    """A file written by --save; one without a machine (written before it was recorded) is
    compared without the check."""
    with open(path) as handle:
        recorded = json.load(handle)
    if "seconds" not in recorded:
        return recorded
    here = machine()
    if recorded["machine"] != here:
        print(
            f"warning: {path} was recorded on {recorded['machine']}, this is {here}: the ratios "
            "below mix the code and the machine; record a baseline here with --save to compare code alone\n"
        )
    return recorded["seconds"]


def measure(cache: str) -> dict[str, float]:
    cfg = resolve("synthetic-business", overrides=["data.reader.scale=0.02"])
    log, _ = prepare(cfg.data, cache, progress=False)
    periods = list(prepared_periods(log))
    out: dict[str, float] = {}
    learner_cfg = replace(cfg.learner, strategies=replace(cfg.learner.strategies, enabled=list(STRATEGIES)))
    engine = Engine(learner_cfg, log.phases)
    period = state_at(engine, periods, PERIOD, base_epochs=2)  # cheap state, as bench_retrain does
    timed = time_period(engine, period)
    out["eval candidates"] = timed.candidates_s
    out["eval scoring (one strategy)"] = timed.strategies["sml"][1]
    for name, (retrain_s, _, _) in timed.strategies.items():
        out[f"retrain {name}"] = retrain_s
    bus = MemoryBus()
    producer = ReplayProducer(bus, log, "smoke", replay_settings(cfg, "smoke"))
    manifest = producer.publish_manifest()
    producer.run()
    start = time.perf_counter()
    StreamLearner(bus, _CountingEngine(log.phases), manifest).run()
    out["ingest, memory bus"] = time.perf_counter() - start
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", help="a JSON file written by --save: print ratios to it")
    parser.add_argument("--save", help="write this run's medians to a JSON file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        runs = [measure(cache) for _ in range(args.repeats)]
    medians = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    baseline = load_baseline(args.baseline) if args.baseline else {}
    print("| figure | median s | ratio to baseline |\n|---|---|---|")
    for key, value in medians.items():
        ratio = f"{value / baseline[key]:.2f}" if key in baseline and baseline[key] > 0 else "–"
        print(f"| {key} | {value:.3f} | {ratio} |")
    if args.save:
        with open(args.save, "w") as handle:
            json.dump({"machine": machine(), "seconds": medians}, handle, indent=2)


if __name__ == "__main__":
    main()
