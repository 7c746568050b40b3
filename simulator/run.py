"""Run orchestration: the replay producer and the learner, together or as separate processes."""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable

import pandas as pd

from learner.engine import Engine, StrategyResult
from learner.results import PeriodsCsv, summary_markdown
from learner.stream import StreamLearner, find_manifest
from replay_data.prepared import PreparedLog
from simulator.bus import Bus, open_bus
from simulator.config import RunConfig
from simulator.producer import ReplayProducer, ReplaySettings
from simulator.rundir import RunDir

Report = Callable[[str], None]


def prepared_periods(log: PreparedLog) -> Iterable[tuple[int, pd.DataFrame]]:
    """The log's periods as the bus delivers them: raw ids, one closed period at a time."""
    bounds = log.period_bounds()
    for t in range(len(log.phases)):
        yield t, log.frame(bounds[t], bounds[t + 1])


def connect(cfg: RunConfig) -> Bus:
    if cfg.bus.url.startswith("kafka://"):
        from simulator.bus.kafka import KafkaBus

        return KafkaBus(cfg.bus.url[len("kafka://"):], connect_timeout_s=cfg.bus.connect_timeout_s)
    return open_bus(cfg.bus.url)


def replay_settings(cfg: RunConfig, preset: str) -> ReplaySettings:
    speed = None if cfg.replay.speed == "max" else float(cfg.replay.speed)
    return ReplaySettings(partitions=cfg.replay.partitions, speed=speed,
                          max_events_per_second=cfg.replay.max_events_per_second,
                          block_events=cfg.replay.block_events, prefix=cfg.bus.prefix,
                          extra_manifest={"preset": preset})


class RunRecorder:
    """Writes what the learner produces into the run directory and reports progress."""

    def __init__(self, cfg: RunConfig, run_dir: RunDir, engine: Engine, report: Report) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        self.engine = engine
        self.report = report
        self.csv = PeriodsCsv(run_dir.periods_csv, cfg.learner.eval.ks)
        self.started = time.perf_counter()

    def on_period(self, t: int, phase: str, n_events: int, results: list[StrategyResult]) -> None:
        self.csv.append(results)
        if self.engine.base_model is not None and not self.run_dir.base_model.exists():
            self.run_dir.save_base_model(self.engine)
        self.report(progress_line(t, phase, n_events, results, time.perf_counter() - self.started))

    def finish(self) -> pd.DataFrame:
        frame = pd.read_csv(self.run_dir.periods_csv)
        self.run_dir.summary_md.write_text(
            summary_markdown(frame, f"rtsim run {self.run_dir.run_id} ({self.cfg.preset})"))
        return frame

    def deadletter_file(self, record: dict) -> None:
        with open(self.run_dir.path / "deadletter.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")


def run_embedded(cfg: RunConfig, log: PreparedLog, run_dir: RunDir, report: Report = print) -> pd.DataFrame:
    """Producer (a thread) and learner (this thread) in one process, over cfg.bus."""
    bus = connect(cfg)
    producer = ReplayProducer(bus, log, run_dir.run_id, replay_settings(cfg, cfg.preset))
    manifest = producer.publish_manifest()
    stop = threading.Event()
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            producer.run(stop)
        except BaseException as err:  # re-raised in the main thread below
            failure.append(err)
            stop.set()

    thread = threading.Thread(target=produce, name="rtsim-replay", daemon=True)
    thread.start()
    try:
        frame = _learn(bus, cfg, manifest, run_dir, report, stop)
    finally:
        stop.set()
        thread.join()
        bus.close()
    if failure:
        raise failure[0]
    return frame


def replay(cfg: RunConfig, log: PreparedLog, run_id: str, report: Report = print,
           stop: threading.Event | None = None) -> dict:
    """The producer alone (`rtsim replay`)."""
    bus = connect(cfg)
    try:
        producer = ReplayProducer(bus, log, run_id, replay_settings(cfg, cfg.preset))
        manifest = producer.publish_manifest()
        report(f"replaying run {run_id}: {manifest['n_events']:,} events onto {producer.topic} "
               f"({cfg.replay.partitions} partitions, speed {manifest['speed']})")
        stats = producer.run(stop)
        report(f"done: {stats.produced:,} events produced" + ("" if stats.done else " (stopped early)"))
        return manifest
    finally:
        bus.close()


def learn(cfg: RunConfig, runs_root: str, run_id: str | None, report: Report = print,
          wait_s: float = 600.0, stop: threading.Event | None = None) -> pd.DataFrame:
    """The learner alone (`rtsim learn`): the run manifest comes from the bus."""
    bus = connect(cfg)
    try:
        manifest = find_manifest(bus, cfg.bus.prefix, run_id, wait_s, stop)
        run_dir = RunDir(runs_root, manifest["run_id"]).create(cfg)
        report(f"learning run {manifest['run_id']}: {len(manifest['phases'])} periods, "
               f"run directory {run_dir.path}")
        return _learn(bus, cfg, manifest, run_dir, report, stop or threading.Event())
    finally:
        bus.close()


def _learn(bus: Bus, cfg: RunConfig, manifest: dict, run_dir: RunDir, report: Report,
           stop: threading.Event) -> pd.DataFrame:
    engine = Engine(cfg.learner, manifest["phases"])
    recorder = RunRecorder(cfg, run_dir, engine, report)
    deadletter = recorder.deadletter_file if cfg.bus.url == "memory" else None
    learner = StreamLearner(bus, engine, manifest, prefix=cfg.bus.prefix,
                            on_period=recorder.on_period, deadletter=deadletter)
    learner.run(stop)
    return recorder.finish()


def progress_line(t: int, phase: str, n_events: int, results: list[StrategyResult], elapsed: float) -> str:
    head = f"period {t:>3} {phase:<10} {n_events:>8} events"
    if not results:
        return f"{head} | buffered for pretraining  [{elapsed:6.1f}s]"
    top = max(results[0].metrics.ndcg)
    parts = [f"{r.strategy} {r.metrics.ndcg[top]:.4f} ({r.retrain_seconds:.1f}s)" for r in results]
    return f"{head} | NDCG@{top} (retrain s): " + "  ".join(parts) + f"  [{elapsed:6.1f}s]"
