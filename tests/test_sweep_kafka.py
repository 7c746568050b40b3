"""Sweeps over Kafka (issue #20, item 3), on the session's real broker: three `rtsim worker`
processes share a 6-job sweep of tiny through Kafka's group assignment; one is killed with
SIGKILL in the middle of a job, whose partition then goes to another worker that resumes it
from its checkpoint. Every job's periods.csv must equal the same job run alone, one after
another on the in-process bus."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from simulator.sweep import SweepDir, SweepError, expand, load_spec

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[1]
TIMING = ["retrain_seconds", "eval_seconds"]
DEADLINE_S = 600


def _workers(n: int, url: str, prefix: str, runs: Path, logs: Path) -> list[subprocess.Popen]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "simulator.cli", "worker", "--bus", url, "--prefix", prefix, "--runs-dir"]
    return [
        subprocess.Popen(
            [*command, str(runs)], env=env, stdout=open(logs / f"worker-{i}.log", "w"), stderr=subprocess.STDOUT
        )
        for i in range(n)
    ]


@pytest.mark.slow
def test_three_workers_one_killed_mid_job_give_the_sequential_results(tmp_path, kafka_bootstrap):
    from replay_data.prepared import prepare
    from simulator.bus.kafka import KafkaBus
    from simulator.run import run_embedded
    from simulator.rundir import RunDir
    from simulator.sweep_kafka import collect, publish, read_results

    prefix, url = f"t{uuid.uuid4().hex[:8]}", f"kafka://{kafka_bootstrap}"
    (tmp_path / "grid.yaml").write_text(
        f"name: k6\npreset: tiny\nset:\n  bus.prefix: {prefix}\n  learner.strategies.enabled: [fine_tune]\n"
        "  learner.strategies.serving: fine_tune\n  learner.pretrain.epochs: 2\n"
        "grid:\n  learner.strategies.fine_tune.train.epochs: [1, 2, 3]\nseeds: 2\n"
    )
    spec = load_spec(tmp_path / "grid.yaml")
    jobs = expand(spec)
    assert len(jobs) == 6
    cfg = jobs[0].config()
    log, _ = prepare(cfg.data, tmp_path / "prepared", progress=False)
    bus = KafkaBus(kafka_bootstrap)
    runs = tmp_path / "runs"
    workers = _workers(3, url, prefix, runs, tmp_path)
    try:
        publish(spec, jobs, bus, replace(cfg, bus=replace(cfg.bus, url=url)), log, report=lambda _: None)
        root = SweepDir(runs / "k6")
        deadline = time.monotonic() + DEADLINE_S
        victim = None
        while victim is None:  # a running job with a checkpoint, early enough not to finish before the kill
            assert time.monotonic() < deadline, "no job was ever seen mid-way"
            for job_id, record in read_results(bus, prefix, "k6").items():
                saved = sorted((root.jobs_root / job_id / "checkpoints").glob("ckpt-*.pt"))
                if record["state"] == "running" and saved and saved[-1].name <= "ckpt-000004.pt":
                    victim = job_id, int(record["worker"].rsplit("-", 1)[1])
                    break
            time.sleep(0.1)
        victim_job, pid = victim
        assert pid in [w.pid for w in workers]
        os.kill(pid, signal.SIGKILL)

        while True:
            state = collect(bus, prefix, "k6", root)
            if all(job["state"] == "done" for job in state["jobs"]):
                break
            assert not any(job["state"] == "failed" for job in state["jobs"]), state
            assert time.monotonic() < deadline, f"not done in {DEADLINE_S}s: {state['jobs']}"
            time.sleep(1.0)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(60)
        bus.close()
    finished = {job["id"]: job["worker"] for job in state["jobs"]}
    assert not finished[victim_job].endswith(f"-{pid}")  # another worker finished it
    assert "resuming from" in root.log_file(victim_job).read_text()

    for job in jobs:  # the same job, run alone on the in-process bus
        alone = run_embedded(
            job.config(), log, RunDir(tmp_path / "alone", job.id).create(job.config()), report=lambda _: None
        )
        swept = pd.read_csv(root.jobs_root / job.id / "periods.csv")
        pd.testing.assert_frame_equal(swept.drop(columns=TIMING), alone.drop(columns=TIMING), obj=job.id)


def test_publishing_a_sweep_again_sends_its_failed_jobs_again_and_nothing_else(tmp_path, kafka_bootstrap):
    from replay_data.prepared import prepare
    from simulator.bus.kafka import KafkaBus
    from simulator.sweep_kafka import jobs_topic, publish, read_results, send_result

    prefix, url = f"t{uuid.uuid4().hex[:8]}", f"kafka://{kafka_bootstrap}"
    (tmp_path / "grid.yaml").write_text(
        f"name: again\npreset: tiny\nset:\n  bus.prefix: {prefix}\ngrid:\n  learner.model.dim: [4, 8]\n"
    )
    spec = load_spec(tmp_path / "grid.yaml")
    jobs = expand(spec)
    cfg = jobs[0].config()
    cfg = replace(cfg, bus=replace(cfg.bus, url=url))
    log, _ = prepare(cfg.data, tmp_path / "prepared", progress=False)
    bus = KafkaBus(kafka_bootstrap)
    try:
        said: list[str] = []
        publish(spec, jobs, bus, cfg, log, said.append)
        send_result(bus, prefix, "again", {"job": jobs[1].id, "state": "failed", "worker": "w", "error": "boom"})
        publish(spec, jobs, bus, cfg, log, said.append)
        consumer = bus.consumer(jobs_topic(prefix, "again"), f"t-{uuid.uuid4().hex}")
        try:
            assert consumer.end_offsets() == {0: 1, 1: 2}  # job s01 twice, s00 once
        finally:
            consumer.close()
        assert read_results(bus, prefix, "again")[jobs[1].id]["state"] == "pending"
        assert "complete from before" in said[-2] and "0 published" in said[-1] and "1 failed ones again" in said[-1]
        other = replace(spec, grid={"learner.model.dim": [4, 16]})
        with pytest.raises(SweepError, match="another sweep named again"):
            publish(other, expand(other), bus, cfg, log, said.append)
    finally:
        bus.close()
