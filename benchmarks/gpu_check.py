"""One prepared script for a lent GPU machine: correctness of `device: cuda`, then timings.

Part 1 runs the tiny preset through the engine on CPU and on CUDA and reports how far
the per-period metrics differ (CUDA's scatter-adds are not bit-reproducible, so results
agree within a tolerance, not exactly). Part 2 times one retrain per strategy at the
given periods of a Yelp-shaped synthetic log on each device, CPU baseline in the same
call, via benchmarks/bench_retrain.py.

examples:
  PYTHONPATH=. python benchmarks/gpu_check.py --devices cpu cuda --periods 39
  PYTHONPATH=. python benchmarks/gpu_check.py --devices cpu --scale 0.05 --periods 20   # a dry run without a GPU
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from dataclasses import replace

import numpy as np
import torch

from learner.engine import Engine
from replay_data.prepared import prepare
from simulator.config import resolve
from simulator.run import prepared_periods


def tiny_metrics(device: str, cache: str) -> np.ndarray:
    cfg = resolve("tiny", overrides=[f"learner.device={device}"])
    log, _ = prepare(cfg.data, cache, progress=False)
    engine = Engine(replace(cfg.learner, device=device), log.phases)
    out = []
    for t, events in prepared_periods(log):
        out += [[r.metrics.ndcg[20], r.metrics.recall[20]] for r in engine.close_period(t, events)]
    return np.array(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", nargs="+", default=["cpu", "cuda"])
    parser.add_argument("--periods", nargs="+", default=["39"])
    parser.add_argument("--scale", type=float, default=1.0, help="of the Yelp-shaped synthetic log")
    parser.add_argument("--strategies", nargs="+", default=["sml", "sml_s", "fine_tune", "full_retrain"])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for the CPU baseline")
    args = parser.parse_args()
    if "cuda" in args.devices:
        print(f"card: {torch.cuda.get_device_name(0)}; torch {torch.__version__}", flush=True)
    with tempfile.TemporaryDirectory() as cache:
        results = {device: tiny_metrics(device, cache) for device in args.devices}
        reference = results[args.devices[0]]
        for device, values in results.items():
            print(
                f"tiny preset on {device}: max |d NDCG@20| = {np.abs(values[:, 0] - reference[:, 0]).max():.2e}, "
                f"max |d Recall@20| = {np.abs(values[:, 1] - reference[:, 1]).max():.2e} (vs {args.devices[0]})",
                flush=True,
            )
        for device in args.devices:
            start = time.perf_counter()
            command = [
                sys.executable,
                "benchmarks/bench_retrain.py",
                "--preset",
                "synthetic-business",
                "--set",
                f"data.reader.scale={args.scale}",
                "--set",
                f"learner.device={device}",
                "--set",
                f"learner.threads={args.threads}",
                "--data-dir",
                cache,
                "--periods",
                *args.periods,
                "--strategies",
                *args.strategies,
                "--profile-lines",
                "6",
            ]
            print(f"\n## {device}: {' '.join(command)}", flush=True)
            subprocess.run(command, check=True)
            print(f"({device} part took {time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
