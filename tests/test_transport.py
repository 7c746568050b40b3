"""The same config gives the same periods over every transport, and the bus loses nothing."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
import weakref
from collections import Counter

import pandas as pd
import pytest
import torch

from learner.checkpoint import CheckpointStore
from learner.engine import Engine
from learner.results import as_row
from learner.windows import PeriodWindows
from replay_data.prepared import prepare
from simulator import run as simulator_run
from simulator.bus import wire
from simulator.bus.memory import MemoryBus
from simulator.config import resolve
from simulator.kafka_local import free_port
from simulator.producer import ReplayProducer
from simulator.run import load_checkpoint, replay_settings, run_embedded
from simulator.rundir import RunDir
from simulator.stream import StreamLearner
from tests.crash import checkpoint_after_first_online_period

pytestmark = pytest.mark.slow


def _deterministic(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=[c for c in frame.columns if c.endswith("_seconds")])


@pytest.fixture(scope="module")
def tiny_log(tmp_path_factory):
    cfg = resolve("tiny")
    log, _ = prepare(cfg.data, tmp_path_factory.mktemp("prepared"), progress=False)
    return log


@pytest.fixture(scope="module")
def direct_periods(tiny, tiny_log):
    """periods.csv rows of the engine fed straight from the prepared log (no bus)."""
    cfg, phases, periods = tiny
    engine = Engine(cfg.learner, phases)
    rows = [as_row(r) for t, events in periods for r in engine.close_period(t, events)]
    return _deterministic(pd.DataFrame(rows))


def _run(tmp_path, tiny_log, overrides, run_id):
    cfg = resolve("tiny", overrides=overrides)
    run_dir = RunDir(tmp_path / "runs", run_id).create(cfg)
    run_embedded(cfg, tiny_log, run_dir, report=lambda line: None)
    return _deterministic(pd.read_csv(run_dir.periods_csv))


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(
        a.reset_index(drop=True), b.reset_index(drop=True), check_exact=True, check_dtype=False
    )


def test_memory_bus_equals_the_direct_engine(tmp_path, tiny_log, direct_periods):
    _same(_run(tmp_path, tiny_log, [], "mem"), direct_periods)


@pytest.mark.kafka
def test_kafka_with_three_partitions_equals_the_memory_bus(tmp_path, tiny_log, direct_periods, kafka_bootstrap):
    prefix = f"t{uuid.uuid4().hex[:8]}"
    frame = _run(
        tmp_path,
        tiny_log,
        [f"bus.url=kafka://{kafka_bootstrap}", f"bus.prefix={prefix}", "replay.partitions=3"],
        "kafka",
    )
    _same(frame, direct_periods)


@pytest.mark.kafka
def test_sequence_models_over_kafka_with_four_partitions_equal_the_memory_bus(tmp_path, tiny_log, kafka_bootstrap):
    """Issue #17's done-when: SML, the sequence models and fine-tune agree across buses."""
    lineup = ["learner.strategies.enabled=[sml,gru4rec,caser,fine_tune]", "learner.strategies.serving=sml"]
    memory = _run(tmp_path, tiny_log, [*lineup, "replay.partitions=4"], "seq-mem")
    prefix = f"t{uuid.uuid4().hex[:8]}"
    kafka = [f"bus.url=kafka://{kafka_bootstrap}", f"bus.prefix={prefix}", "replay.partitions=4"]
    frame = _run(tmp_path, tiny_log, [*lineup, *kafka], "seq-kafka")
    assert set(frame["strategy"]) == {"sml", "gru4rec", "caser", "fine_tune"}
    _same(frame, memory)


@pytest.mark.kafka
def test_two_processes_equal_the_embedded_run(tmp_path, direct_periods, kafka_bootstrap):
    """`rtsim replay` and `rtsim learn` as separate processes; the learner has no prepared log."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    common = ["--bus", f"kafka://{kafka_bootstrap}", "--set", f"bus.prefix={prefix}", "--run-id", "two"]
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "learner-cache")}  # nothing prepared there
    learner = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulator.cli",
            "learn",
            "--preset",
            "tiny",
            "--runs-dir",
            str(tmp_path / "runs"),
            "--wait",
            "120",
            *common,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    replay = subprocess.run(
        [
            sys.executable,
            "-m",
            "simulator.cli",
            "replay",
            "--preset",
            "tiny",
            "--data-dir",
            str(tmp_path / "prepared"),
            "--no-progress",
            *common,
            "--set",
            "replay.partitions=4",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert replay.returncode == 0, replay.stdout + replay.stderr
    out, _ = learner.communicate(timeout=300)
    assert learner.returncode == 0, out
    assert not (tmp_path / "learner-cache" / "rtsim" / "prepared").exists()
    _same(_deterministic(pd.read_csv(tmp_path / "runs" / "two" / "periods.csv")), direct_periods)
    # the learner's resolved config names the topic's 4 partitions, not the preset's 3 (issue #18)
    assert "partitions: 4" in (tmp_path / "runs" / "two" / "config.yaml").read_text()


def _produce_and_learn(bus, log, cfg, run_id, inject=None):
    settings = replay_settings(cfg, "tiny")
    producer = ReplayProducer(bus, log, run_id, settings)
    manifest = producer.publish_manifest()
    if inject:
        inject(bus, producer)
    producer.run()
    deadletters: list[dict] = []
    engine = Engine(cfg.learner, manifest["phases"])
    learner = StreamLearner(
        bus,
        engine,
        manifest,
        prefix=settings.prefix,
        deadletter=deadletters.append if isinstance(bus, MemoryBus) else None,
    )
    learner.run()
    return learner, deadletters


def _topic_events(bus, topic):
    consumer = bus.consumer(topic, f"count-{uuid.uuid4().hex}")
    total, end = 0, consumer.end_offsets()
    while consumer.positions() != end:
        for message in consumer.poll(1.0):
            if message.headers.get(wire.TYPE_HEADER) == wire.EVENTS:
                try:
                    total += len(wire.decode(message.headers, message.value).ts)
                except wire.DecodeError:
                    pass
    consumer.close()
    return total


def _inject_bad_records(bus, replay):
    """Bad records that carry the run's producer identity, so the decoder is what refuses them."""
    producer, me = bus.producer(), {wire.PRODUCER_HEADER: replay.producer_id}
    bad = [
        (b"{nope", wire.headers(wire.EVENTS)),
        (b'{"ts": 1, "user": "u"}', wire.headers(wire.EVENTS)),
        (b"\xff\xfe", wire.headers(wire.EVENTS)),
        (b"{}", {wire.TYPE_HEADER: "events", wire.FORMAT_HEADER: "7"}),
    ]
    for value, headers in bad:
        producer.send(replay.topic, value, partition=0, headers=headers | me)
    producer.close()


@pytest.mark.parametrize("transport", ["memory", pytest.param("kafka", marks=pytest.mark.kafka)])
def test_consumed_events_equal_the_topic_and_bad_records_are_dead_lettered(request, tiny_log, transport):
    prefix = f"t{uuid.uuid4().hex[:8]}"
    if transport == "memory":
        bus, url = MemoryBus(), "memory"
    else:
        from simulator.bus.kafka import KafkaBus

        bootstrap = request.getfixturevalue("kafka_bootstrap")
        bus, url = KafkaBus(bootstrap), f"kafka://{bootstrap}"
    cfg = resolve("tiny", overrides=[f"bus.url={url}", f"bus.prefix={prefix}"])
    learner, deadletters = _produce_and_learn(bus, tiny_log, cfg, "count", inject=_inject_bad_records)
    topic = wire.events_topic(prefix, "count")
    assert learner.windows.stats.consumed == _topic_events(bus, topic) == len(tiny_log.ts)
    assert dict(learner.stats.rejected) == {"bad_json": 1, "missing_field": 1, "not_utf8": 1, "bad_format": 1}
    if transport == "memory":
        letters = deadletters
    else:
        letters = _deadletters(bus, prefix)
    assert sorted(d["reason"] for d in letters) == ["bad_format", "bad_json", "missing_field", "not_utf8"]
    assert all(d["topic"] == topic and d["partition"] == 0 and "raw_base64" in d for d in letters)
    bus.close()


def _deadletters(bus, prefix: str) -> list[dict]:
    consumer = bus.consumer(wire.deadletter_topic(prefix), f"dl-{uuid.uuid4().hex}")
    letters = [json.loads(m.value) for _ in range(20) for m in consumer.poll(0.5)]
    consumer.close()
    return letters


def _event(row: int | str, producer: str | None, ts: int = 0, user: str = "forger") -> tuple[bytes, dict[str, str]]:
    value = json.dumps({"ts": ts, "user": user, "item": "forged"}).encode()
    return value, {**wire.headers(wire.EVENTS, producer=producer), wire.ROW_HEADER: str(row)}


def _forgeries(replay: ReplayProducer, genuine: tuple[bytes, dict[str, str]]) -> list[tuple[tuple, str]]:
    """(record, the reason the learner gives) for records a live run must shrug off;
    `genuine` is a record the producer has sent already."""
    me, manifest = replay.producer_id, replay.manifest()
    lo, hi = manifest["partition_rows"][0]
    last = manifest["end_watermark"]
    far = manifest["schedule"][-1] + 10**9
    return [
        (_event(10**15, None), "foreign_producer"),  # the record of issue #18, as it was sent
        (_event(lo, "someone-else"), "foreign_producer"),  # another producer, a row in range
        (_event(lo, me + "x"), "foreign_producer"),
        (_event(10**15, me), "bad_row"),  # with the run's identity, still bounded by the manifest
        (_event(-1, me), "bad_row"),
        (_event("+3", me), "bad_row"),
        (_event(hi, me), "bad_row"),  # one past the partition's last row
        (_event(len(replay.log.ts), me), "bad_row"),
        (genuine, "duplicate"),  # a genuine record replayed: dropped once, its original stays
        (genuine, "duplicate"),
        ((wire.encode_watermark(far), wire.headers(wire.WATERMARK)), "foreign_producer"),
        ((wire.encode_watermark(last + 1), wire.headers(wire.WATERMARK, producer=me)), "bad_watermark"),
        ((b"", wire.headers(wire.END)), "foreign_producer"),
        ((b"", wire.headers(wire.END, producer="someone-else")), "foreign_producer"),
        ((b"", wire.headers(wire.END, producer=me)), "early_end"),  # before the last watermark
    ]


class _InjectMidway:
    """Producer metrics that, once half the log is out, send `forgeries` to partition 0."""

    def __init__(self, bus, replay: ReplayProducer) -> None:
        self.bus, self.replay, self.sent = bus, replay, []

    def observe(self, stats) -> None:
        if self.sent or stats.produced < len(self.replay.log.ts) // 2:
            return
        self.sent = _forgeries(self.replay, self._first_record())
        producer = self.bus.producer()
        for (value, headers), _ in self.sent:
            producer.send(self.replay.topic, value, partition=0, headers=headers)
        producer.close()

    def _first_record(self) -> tuple[bytes, dict[str, str]]:
        consumer = self.bus.consumer(self.replay.topic, f"copy-{uuid.uuid4().hex}")
        try:
            while True:
                for message in consumer.poll(1.0):
                    if message.partition == 0 and message.headers[wire.TYPE_HEADER] == wire.EVENTS:
                        return message.value, message.headers
        finally:
            consumer.close()


@pytest.mark.kafka
def test_forged_records_in_a_live_run_change_nothing_and_are_each_counted(kafka_bootstrap, tiny_log, direct_periods):
    """Issue #18: one record with rtsim-row 10**15 made the learner drop every later genuine
    record of its partition as a duplicate, and forged watermarks or end markers could close
    periods early or end a partition. Injected while the run is live, over a real broker."""
    from simulator.bus.kafka import KafkaBus

    prefix = f"t{uuid.uuid4().hex[:8]}"
    bus = KafkaBus(kafka_bootstrap)
    cfg = resolve("tiny", overrides=[f"bus.url=kafka://{kafka_bootstrap}", f"bus.prefix={prefix}"])
    settings = replay_settings(cfg, "tiny")
    replay = ReplayProducer(bus, tiny_log, "forged", settings)
    replay.metrics = injector = _InjectMidway(bus, replay)
    manifest = replay.publish_manifest()
    producing = threading.Thread(target=replay.run)
    producing.start()
    learner = StreamLearner(bus, Engine(cfg.learner, manifest["phases"]), manifest, prefix=settings.prefix)
    learner.run()
    producing.join()
    _same(direct_periods, _deterministic(pd.DataFrame(learner.rows)))
    reasons = [reason for _, reason in injector.sent]
    assert dict(learner.stats.rejected) == dict(Counter(reasons))
    assert learner.windows.stats.consumed == len(tiny_log.ts) and not any(learner.windows.stats.outside.values())
    assert sorted(d["reason"] for d in _deadletters(bus, prefix)) == sorted(r for r in reasons if r != "duplicate")
    bus.close()


def test_events_after_the_end_marker_are_counted_and_dead_lettered(tiny_log, direct_periods):
    """Issue #18: records after the producer's end marker were ignored without a count."""
    cfg = resolve("tiny")
    bus, settings = MemoryBus(), replay_settings(cfg, "tiny")
    producer = ReplayProducer(bus, tiny_log, "after-end", settings)
    manifest = producer.publish_manifest()
    producer.run()
    stray = bus.producer()
    first_row = manifest["partition_rows"][0][0]  # a row the manifest allows on partition 0
    value, headers = _event(first_row, producer.producer_id, ts=int(tiny_log.ts[-1]))  # inside the last period
    stray.send(producer.topic, value, partition=0, headers=headers)
    stray.close()
    letters: list[dict] = []
    learner = StreamLearner(
        bus, Engine(cfg.learner, manifest["phases"]), manifest, prefix=settings.prefix, deadletter=letters.append
    )
    learner.run()
    _same(direct_periods, _deterministic(pd.DataFrame(learner.rows)))
    assert dict(learner.stats.rejected) == {"after_end": 1}
    assert [d["reason"] for d in letters] == ["after_end"]


def test_unreachable_broker_fails_fast_with_a_clear_error(tmp_path):
    port = free_port()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "simulator.cli",
            "run",
            "--preset",
            "tiny",
            "--bus",
            f"kafka://127.0.0.1:{port}",
            "--set",
            "bus.connect_timeout_s=2",
            "--runs-dir",
            str(tmp_path),
            "--data-dir",
            str(tmp_path / "prepared"),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert f"127.0.0.1:{port}" in result.stderr and "rtsim kafka up" in result.stderr


def test_ctrl_c_stops_producer_and_learner_cleanly(tmp_path):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulator.cli",
            "run",
            "--preset",
            "tiny",
            "--speed",
            "600",
            "--runs-dir",
            str(tmp_path),
            "--run-id",
            "stopped",
            "--data-dir",
            str(tmp_path / "prepared"),
            "--no-progress",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (tmp_path / "stopped" / "periods.csv").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err
    assert (tmp_path / "stopped" / "config.yaml").exists()


class _OneRecordPolls:
    """A bus whose consumers take one record per poll, as when a re-sent log arrives slowly."""

    def __init__(self, bus) -> None:
        self._bus = bus

    def __getattr__(self, name):
        return getattr(self._bus, name)

    def consumer(self, *args, **kwargs):
        consumer = self._bus.consumer(*args, **kwargs)
        poll = consumer.poll
        consumer.poll = lambda timeout_s, max_records=1: poll(timeout_s, 1)
        return consumer


def test_a_resume_closes_no_period_before_its_events_are_read_again(tmp_path, tiny_log, direct_periods):
    """A checkpoint's watermarks run ahead of its open periods when the learner had read on;
    after a resume those periods must wait for their events, however slowly they come back."""
    cfg = resolve("tiny")
    bus, settings = MemoryBus(), replay_settings(cfg, "tiny")
    producer = ReplayProducer(bus, tiny_log, "resume", settings)
    manifest = producer.publish_manifest()
    producer.run()  # the whole log on the bus: the learner reads it all before closing a period
    state = checkpoint_after_first_online_period(
        bus, cfg.learner, manifest, settings.prefix, CheckpointStore(tmp_path / "checkpoints")
    )
    windows = PeriodWindows(manifest["schedule"], len(state["windows"]["watermarks"]))
    windows.load_state_dict(state["windows"])
    assert windows.pop_closed() is not None, "the restored windows alone would close the open period"

    second = StreamLearner(
        _OneRecordPolls(bus),
        Engine(cfg.learner, manifest["phases"]),
        manifest,
        prefix=settings.prefix,
        checkpoints=CheckpointStore(tmp_path / "resumed"),
    )
    second.restore(state)
    second.run()
    _same(direct_periods, _deterministic(pd.DataFrame(second.rows)))


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)


def test_a_resumed_run_does_not_keep_its_checkpoint_alive(tmp_path, tiny_log, monkeypatch):
    """The caller's reference to the loaded checkpoint must not pin its tensors (GBs at
    paper scale) once the engine has let go of them."""
    cfg = resolve("tiny")
    run_dir = RunDir(tmp_path / "runs", "pinned").create(cfg)
    run_embedded(cfg, tiny_log, run_dir, report=lambda line: None)
    held, refs = [], []

    def load_and_hold(*args):
        state = load_checkpoint(*args)
        refs.extend(weakref.ref(t) for t in _tensors(state))
        held.append(state)
        return state

    monkeypatch.setattr(simulator_run, "load_checkpoint", load_and_hold)
    run_embedded(cfg, tiny_log, run_dir, report=lambda line: None, resume=True)
    assert held and refs, "the run did not resume from a checkpoint"
    gc.collect()
    assert all(ref() is None for ref in refs), "the resumed run kept the checkpoint's tensors alive"
