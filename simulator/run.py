"""Run orchestration: the replay producer and the learner, together or as separate processes."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TypeVar

import pandas as pd

from learner.checkpoint import CheckpointStore
from learner.engine import Engine, StrategyResult
from learner.exposition import RunLabels, bus_kind
from learner.metrics import LearnerMetrics, MetricsPortInUse, serve
from learner.results import PeriodsCsv, save_ranks, summary_markdown
from replay_data.prepared import PreparedLog
from simulator.bus import Bus, open_bus, wire
from simulator.config import RunConfig
from simulator.control import LearnerCommands, ProducerCommands
from simulator.control_topic import ControlTopicListener
from simulator.http_api import ControlPortInUse, check_bind, learner_routes, load_token, producer_routes, start_api
from simulator.metrics import ProducerMetrics
from simulator.ports import PortPlan, plan_port
from simulator.producer import ReplayProducer, ReplaySettings
from simulator.report import write_report
from simulator.rundir import RunDir
from simulator.stream import StreamLearner, find_manifest
from simulator.targets import write_target

Report = Callable[[str], None]
T = TypeVar("T")


def prepared_periods(log: PreparedLog) -> Iterable[tuple[int, pd.DataFrame]]:
    """The log's periods as the bus delivers them: raw ids, one closed period at a time."""
    bounds = log.period_bounds()
    for t in range(len(log.phases)):
        yield t, log.frame(bounds[t], bounds[t + 1])


def connect(cfg: RunConfig) -> Bus:
    if cfg.bus.url.startswith("kafka://"):
        from simulator.bus.kafka import KafkaBus

        return KafkaBus(cfg.bus.url[len("kafka://") :], connect_timeout_s=cfg.bus.connect_timeout_s)
    return open_bus(cfg.bus.url)


def run_labels(cfg: RunConfig, run_id: str, preset: str) -> RunLabels:
    return RunLabels(run_id, preset, bus_kind(cfg.bus.url))


def replay_settings(cfg: RunConfig, preset: str) -> ReplaySettings:
    speed = None if cfg.replay.speed == "max" else float(cfg.replay.speed)
    return ReplaySettings(
        partitions=cfg.replay.partitions,
        speed=speed,
        max_events_per_second=cfg.replay.max_events_per_second,
        block_events=cfg.replay.block_events,
        block_seconds=cfg.replay.block_seconds,
        prefix=cfg.bus.prefix,
        extra_manifest={"preset": preset},
    )


class Endpoints:
    """The servers a process runs (metrics exporters, control APIs) and their addresses.

    The token check comes first: nothing may listen on an exposed address, not even the
    metrics, when the control API is going to be refused."""

    def __init__(self, report: Report, cfg: RunConfig) -> None:
        self.token = load_token(cfg.serve.token_file)
        check_bind(cfg.serve.host, self.token)
        self.addresses: dict[str, dict[str, str]] = {}
        self._closers: list[Callable[[], None]] = []
        self.report = report

    def metrics(self, side: str, registry, cfg: RunConfig, key: str, option: str) -> None:
        host = cfg.serve.host
        server, bound = self._bind(
            side, "metrics", plan_port(cfg.serve, key), lambda port: serve(registry, host, port, option=option)
        )
        self._add(side, "metrics", f"http://{host}:{bound}/metrics", lambda: (server.shutdown(), server.server_close()))

    def control(self, side: str, routes, cfg: RunConfig, key: str, option: str) -> None:
        api = self._bind(
            side,
            "control",
            plan_port(cfg.serve, key),
            lambda port: start_api(routes, cfg.serve.host, port, self.token, option=option),
        )
        self._add(side, "control", api.url, api.close)

    def _bind(self, side: str, kind: str, plan: PortPlan, start: Callable[[int], T]) -> T:
        """start(port); a default port that is taken (another run) gives way to a free one."""
        try:
            return start(plan.port)
        except (MetricsPortInUse, ControlPortInUse):
            if not plan.fallback:
                raise
            self.report(f"{side} {kind}: default port {plan.port} is taken (another run?); using a free port")
            return start(0)

    def listen(self, listener: ControlTopicListener) -> None:
        """A control-topic listener, joined on close (its stop event is set by the run)."""
        listener.start()
        self._closers.append(lambda: listener.join(5.0))

    def _add(self, side: str, kind: str, url: str, close: Callable[[], object]) -> None:
        self.addresses.setdefault(side, {})[kind] = url
        self._closers.append(close)
        self.report(f"{side} {kind}: {url}")

    def write(self, run_dir: RunDir) -> None:
        run_dir.write_endpoints(self.addresses)

    def announce(self, run_id: str) -> None:
        """Service-discovery files for the metrics served so far (simulator/targets.py),
        removed on close; a target folder that cannot be written costs the discovery only."""
        for side, kinds in self.addresses.items():
            try:
                path = write_target(run_id, side, kinds["metrics"])
            except OSError as err:
                self.report(f"{side} metrics: not announced for Prometheus discovery ({err})")
                continue
            self._closers.append(lambda path=path: path.unlink(missing_ok=True))

    def close(self) -> None:
        for close in reversed(self._closers):
            close()
        self._closers.clear()


def hold(report: Report) -> None:
    """--keep-serving: keep metrics and control APIs up until interrupted."""
    report("run finished; still serving metrics and control (Ctrl-C to stop)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


class RunRecorder:
    """Writes what the learner produces into the run directory and reports progress."""

    def __init__(self, cfg: RunConfig, run_dir: RunDir, engine: Engine, report: Report) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        self.engine = engine
        self.report = report
        self.csv = PeriodsCsv(run_dir.periods_csv, cfg.learner.eval.ks, cfg.learner.eval.full_ranking)
        self.started = time.perf_counter()

    def on_period(self, t: int, phase: str, n_events: int, results: list[StrategyResult]) -> None:
        self.csv.append(results)
        save_ranks(self.run_dir.path, t, results)
        if self.engine.base_model is not None and not self.run_dir.base_model.exists():
            self.run_dir.save_base_model(self.engine)
        self.report(progress_line(t, phase, n_events, results, time.perf_counter() - self.started))

    def finish(self) -> pd.DataFrame:
        frame = pd.read_csv(self.run_dir.periods_csv)
        self.run_dir.summary_md.write_text(
            summary_markdown(frame, f"rtsim run {self.run_dir.run_id} ({self.cfg.preset})")
        )
        written = write_report(self.run_dir.path)
        self.report(f"report: {self.run_dir.path / 'report.md'} ({len(written) - 2} plots)")
        return frame

    def deadletter_file(self, record: dict) -> None:
        with open(self.run_dir.path / "deadletter.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")


def run_embedded(
    cfg: RunConfig,
    log: PreparedLog,
    run_dir: RunDir,
    report: Report = print,
    keep_serving: bool = False,
    resume: bool = False,
) -> pd.DataFrame:
    """Producer (a thread) and learner (this thread) in one process, over cfg.bus.

    resume: continue from the run directory's newest valid checkpoint. On the in-process
    bus the producer replays the log again (same records at the same offsets) unpaced up
    to the checkpoint; on Kafka it continues from where the topic shows it stopped.
    """
    state = load_checkpoint(run_dir, report) if resume else None
    endpoints = Endpoints(report, cfg)  # refuses an exposed API before anything connects or listens
    bus = connect(cfg)
    try:
        run = run_labels(cfg, run_dir.run_id, cfg.preset)
        producer_metrics, learner_metrics = ProducerMetrics(log.schedule.edges, run), LearnerMetrics(run)
        endpoints.metrics(
            "producer",
            producer_metrics.registry,
            cfg,
            "producer_metrics_port",
            "--set serve.producer_metrics_port=PORT",
        )
        endpoints.metrics("learner", learner_metrics.registry, cfg, "metrics_port", "--metrics-port")
        producer = ReplayProducer(bus, log, run_dir.run_id, replay_settings(cfg, cfg.preset), producer_metrics)
        manifest = producer.publish_manifest()
        stop = threading.Event()
        _serve_producer(endpoints, bus, cfg, producer, producer_metrics, stop)
        failure: list[BaseException] = []

        def produce() -> None:
            try:
                producer.run(stop, start_row=start_row, fast_until_ts=fast_until)
            except BaseException as err:  # re-raised in the main thread below
                failure.append(err)
                stop.set()

        start_row, fast_until = 0, None
        if state is not None:
            if cfg.bus.url == "memory":
                fast_until = int(manifest["schedule"][state["windows"]["open"]])
            else:
                start_row = producer.resume_row()
        thread = threading.Thread(target=produce, name="rtsim-replay", daemon=True)
        if start_row is not None:
            thread.start()
        else:
            report("the producer had sent the whole log before; resuming the learner only")
        try:
            frame = _learn(bus, cfg, manifest, run_dir, report, stop, learner_metrics, endpoints, state)
            if keep_serving and not failure:
                hold(report)
        finally:
            stop.set()
            if thread.is_alive():
                thread.join()
        if failure:
            raise failure[0]
        return frame
    finally:
        endpoints.close()
        bus.close()


def replay(
    cfg: RunConfig, log: PreparedLog, run_id: str, report: Report = print, stop: threading.Event | None = None
) -> dict:
    """The producer alone (`rtsim replay`)."""
    endpoints = Endpoints(report, cfg)  # refuses an exposed API before anything connects or listens
    bus = connect(cfg)
    try:
        metrics = ProducerMetrics(log.schedule.edges, run_labels(cfg, run_id, cfg.preset))
        endpoints.metrics("producer", metrics.registry, cfg, "producer_metrics_port", "--metrics-port")
        endpoints.announce(run_id)
        producer = ReplayProducer(bus, log, run_id, replay_settings(cfg, cfg.preset), metrics)
        manifest = producer.publish_manifest()
        stop = stop or threading.Event()
        _serve_producer(endpoints, bus, cfg, producer, metrics, stop, control_option="--control-port")
        report(
            f"replaying run {run_id}: {manifest['n_events']:,} events onto {producer.topic} "
            f"({cfg.replay.partitions} partitions, speed {manifest['speed']})"
        )
        stats = producer.run(stop)
        report(f"done: {stats.produced:,} events produced" + ("" if stats.done else " (stopped early)"))
        return manifest
    finally:
        if stop is not None:
            stop.set()
        endpoints.close()
        bus.close()


def learn(
    cfg: RunConfig,
    runs_root: str,
    run_id: str | None,
    report: Report = print,
    wait_s: float = 600.0,
    stop: threading.Event | None = None,
    keep_serving: bool = False,
    resume: bool = False,
) -> pd.DataFrame:
    """The learner alone (`rtsim learn`): the run manifest comes from the bus, or from the
    checkpoint of runs_root/run_id when resuming."""
    endpoints = Endpoints(report, cfg)  # refuses an exposed API before anything connects or listens
    bus = connect(cfg)
    try:
        state = load_checkpoint(RunDir(runs_root, run_id), report) if resume else None
        manifest = state["manifest"] if state else find_manifest(bus, cfg.bus.prefix, run_id, wait_s, stop)
        # the resolved config records the topic the learner reads, not the preset's default
        topic_partitions = bus.partitions(wire.events_topic(cfg.bus.prefix, manifest["run_id"]))
        cfg = replace(cfg, replay=replace(cfg.replay, partitions=topic_partitions))
        run_dir = RunDir(runs_root, manifest["run_id"]).create(cfg)
        report(f"learning run {manifest['run_id']}: {len(manifest['phases'])} periods, run directory {run_dir.path}")
        metrics = LearnerMetrics(run_labels(cfg, manifest["run_id"], manifest.get("preset", "")))
        stop = stop or threading.Event()
        with run_dir.removed_if_refused():
            endpoints.metrics("learner", metrics.registry, cfg, "metrics_port", "--metrics-port")
            frame = _learn(bus, cfg, manifest, run_dir, report, stop, metrics, endpoints, state)
        if keep_serving:
            hold(report)
        return frame
    finally:
        if stop is not None:
            stop.set()
        endpoints.close()
        bus.close()


def _serve_producer(
    endpoints: Endpoints,
    bus: Bus,
    cfg: RunConfig,
    producer: ReplayProducer,
    metrics: ProducerMetrics,
    stop: threading.Event,
    control_option: str = "--set serve.producer_control_port=PORT",
) -> None:
    """The producer's control API and control-topic listener; changes show in its metrics."""
    commands = ProducerCommands(producer, on_change=lambda event: metrics.observe(producer.stats))
    endpoints.control("producer", producer_routes(commands), cfg, "producer_control_port", control_option)
    endpoints.listen(ControlTopicListener(bus, cfg.bus.prefix, "producer", producer.run_id, commands, stop))


def load_checkpoint(run_dir: RunDir, report: Report) -> dict:
    state, path = CheckpointStore(run_dir.checkpoints).load_latest(report)
    report(f"resuming from {path} (periods 0-{state['windows']['open'] - 1} done)")
    return state


def _learn(
    bus: Bus,
    cfg: RunConfig,
    manifest: dict,
    run_dir: RunDir,
    report: Report,
    stop: threading.Event,
    metrics: LearnerMetrics,
    endpoints: Endpoints,
    resume: dict | None = None,
    group: str | None = None,
) -> pd.DataFrame:
    """group: the learner's consumer group, when several learners read one replay (a sweep's jobs)."""
    engine = Engine(cfg.learner, manifest["phases"])
    metrics.set_serving(engine.serving, engine.enabled, swapped=False)

    def on_change(event: dict) -> None:
        state = event["state"]
        report(
            f"control: {event['command']} {event.get('strategy', '')} -> serving {state['serving']}, "
            f"enabled {', '.join(state['enabled'])}"
        )
        metrics.set_serving(
            state["serving"],
            sorted(set(state["enabled"]) | set(state["disabled"])),
            swapped=event["command"] == "serve",
        )

    commands = LearnerCommands(engine, on_change=on_change)
    endpoints.control("learner", learner_routes(commands), cfg, "control_port", "--control-port")
    endpoints.listen(ControlTopicListener(bus, cfg.bus.prefix, "learner", manifest["run_id"], commands, stop))
    endpoints.write(run_dir)
    endpoints.announce(manifest["run_id"])
    recorder = RunRecorder(cfg, run_dir, engine, report)
    deadletter = recorder.deadletter_file if cfg.bus.url == "memory" else None
    learner = StreamLearner(
        bus,
        engine,
        manifest,
        prefix=cfg.bus.prefix,
        group=group,
        on_period=recorder.on_period,
        deadletter=deadletter,
        metrics=metrics,
        checkpoints=CheckpointStore(run_dir.checkpoints, cfg.learner.checkpoint.keep),
        checkpoint_every=cfg.learner.checkpoint.every,
    )
    if resume is not None:
        recorder.csv.rewrite(resume["rows"])
        learner.restore(resume)
        # the engine holds what it needs now; left to the caller, the checkpoint's tensors
        # (1.8 GB at Adressa scale) would stay resident after the strategies replaced them
        resume.clear()
        metrics.set_serving(engine.serving, engine.enabled, swapped=False)
    learner.run(stop)
    return recorder.finish()


def progress_line(t: int, phase: str, n_events: int, results: list[StrategyResult], elapsed: float) -> str:
    head = f"period {t:>3} {phase:<10} {n_events:>8} events"
    if not results:
        return f"{head} | buffered for pretraining  [{elapsed:6.1f}s]"
    top = max(results[0].metrics.ndcg)
    parts = [
        f"{r.strategy}{'*' if r.serving else ''}{' NOT FINITE' if r.health.nonfinite_rows else ''} "
        f"{r.metrics.ndcg[top]:.4f} ({r.retrain_seconds:.1f}s)"
        for r in results
    ]
    return f"{head} | NDCG@{top} (retrain s; * serving): " + "  ".join(parts) + f"  [{elapsed:6.1f}s]"
