"""The bus contract, run against both transports: the in-process bus and a real Kafka broker.

The producer, the learner and checkpoints rely on exactly these behaviours, so the same test
body runs on `memory` and on `kafka` (the session's broker from tests/kafka_fixture.py).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka.errors import KafkaConnectionError, KafkaTimeoutError, UnsupportedVersionError

from simulator.bus import Bus, BusError, Consumer, Message, Producer, open_bus
from simulator.bus.kafka import (
    CLIENT_LOGGER,
    KafkaBus,
    RateLimitedWarning,
    _ClientTrouble,
    _KafkaConsumer,
    _KafkaProducer,
    report_client_trouble,
)
from simulator.bus.memory import MemoryBus
from simulator.kafka_local import LocalKafka, free_port

# Generous: a fetch round trip on a loaded CI machine, never a timing assertion.
DRAIN_TIMEOUT_S = 15.0


class Clients:
    """Producers and consumers a test opened, closed at teardown even when it fails."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._opened: list[Producer | Consumer] = []

    def producer(self) -> Producer:
        producer = self.bus.producer()
        self._opened.append(producer)
        return producer

    def consumer(self, topic: str, group: str = "g") -> Consumer:
        consumer = self.bus.consumer(topic, group)
        self._opened.append(consumer)
        return consumer

    def close(self) -> None:
        for client in reversed(self._opened):
            client.close()


@pytest.fixture(params=["memory", pytest.param("kafka", marks=pytest.mark.kafka)])
def bus(request: pytest.FixtureRequest) -> Iterator[Bus]:
    if request.param == "memory":
        opened: Bus = MemoryBus()
    else:
        opened = KafkaBus(request.getfixturevalue("kafka_bootstrap"))
    yield opened
    opened.close()


@pytest.fixture
def clients(bus: Bus) -> Iterator[Clients]:
    opened = Clients(bus)
    yield opened
    opened.close()


def new_topic(bus: Bus, partitions: int) -> str:
    topic = f"test-bus-{uuid.uuid4().hex[:12]}"
    bus.create_topic(topic, partitions, {"retention.ms": "-1"})
    return topic


def drain(consumer: Consumer, count: int, max_records: int = 10_000) -> list[Message]:
    """Poll until `count` records came, checking each batch's order on the way."""
    got: list[Message] = []
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while len(got) < count and time.monotonic() < deadline:
        batch = consumer.poll(0.5, max_records)
        assert len(batch) <= max_records
        # Within a poll: grouped by partition, ascending, each in offset order.
        assert batch == sorted(batch, key=lambda m: (m.partition, m.offset))
        got.extend(batch)
    assert len(got) == count, f"got {len(got)} of {count} records"
    return got


def by_partition(messages: list[Message]) -> dict[int, list[Message]]:
    out: dict[int, list[Message]] = {}
    for m in messages:
        out.setdefault(m.partition, []).append(m)
    return out


def fill(producer: Producer, topic: str, per_partition: dict[int, int]) -> None:
    """Send values b"p<partition>-<i>" and flush."""
    for p, n in per_partition.items():
        for i in range(n):
            producer.send(topic, f"p{p}-{i}".encode(), partition=p)
    producer.flush()


def test_create_topic_is_idempotent_and_keeps_its_partitions(bus: Bus) -> None:
    topic = new_topic(bus, 3)
    assert bus.partitions(topic) == 3
    bus.create_topic(topic, 3)
    bus.create_topic(topic, 5)
    assert bus.partitions(topic) == 3


def test_missing_topic_is_a_bus_error(bus: Bus) -> None:
    with pytest.raises(BusError, match="does not exist"):
        bus.partitions("test-bus-never-created")
    with pytest.raises(BusError, match="does not exist"):
        bus.consumer("test-bus-never-created", "g")


def test_records_come_back_intact_in_per_partition_offset_order(bus: Bus, clients: Clients) -> None:
    topic = new_topic(bus, 3)
    producer = clients.producer()
    sent: dict[int, list[tuple[bytes | None, bytes, dict[str, str]]]] = {0: [], 1: [], 2: []}
    for i in range(60):
        p = (i * 7) % 3
        key = None if i % 10 == 0 else f"user-{i % 4}".encode()
        headers = {} if i % 5 == 0 else {"rtsim-type": "events", "rtsim-format": "1", "note": f"é{i}"}
        value = f'{{"ts": {i}, "user": "u{i}"}}'.encode()
        producer.send(topic, value, partition=p, key=key, headers=headers)
        sent[p].append((key, value, headers))
    producer.flush()

    got = by_partition(drain(clients.consumer(topic), 60))
    assert set(got) == {0, 1, 2}
    for p, records in got.items():
        assert [m.offset for m in records] == list(range(len(sent[p])))
        assert [(m.key, m.value, m.headers) for m in records] == sent[p]
        assert all(m.topic == topic and m.partition == p for m in records)


def test_positions_and_end_offsets_give_the_lag(bus: Bus, clients: Clients) -> None:
    topic = new_topic(bus, 2)
    fill(clients.producer(), topic, {0: 5, 1: 3})
    consumer = clients.consumer(topic)
    assert consumer.positions() == {0: 0, 1: 0}
    assert consumer.end_offsets() == {0: 5, 1: 3}
    drain(consumer, 8)
    assert consumer.positions() == consumer.end_offsets() == {0: 5, 1: 3}


def test_poll_is_bounded_by_max_records_and_serves_every_partition(bus: Bus, clients: Clients) -> None:
    topic = new_topic(bus, 3)
    fill(clients.producer(), topic, {0: 10, 1: 10, 2: 10})
    got = by_partition(drain(clients.consumer(topic), 30, max_records=4))
    assert {p: [m.offset for m in ms] for p, ms in got.items()} == {p: list(range(10)) for p in range(3)}


def test_a_new_consumer_of_the_group_resumes_from_its_commits(bus: Bus, clients: Clients) -> None:
    topic = new_topic(bus, 2)
    fill(clients.producer(), topic, {0: 10, 1: 10})
    first = clients.consumer(topic, "learner")
    assert first.committed() == {}
    drain(first, 20)
    first.commit({0: 4})
    first.commit({1: 7})  # a commit of some partitions keeps the others' commits
    assert first.committed() == {0: 4, 1: 7}
    first.close()

    again = clients.consumer(topic, "learner")
    assert again.committed() == {0: 4, 1: 7}
    assert again.positions() == {0: 4, 1: 7}
    got = by_partition(drain(again, 9))
    assert [m.offset for m in got[0]] == list(range(4, 10))
    assert [m.offset for m in got[1]] == [7, 8, 9]

    other = clients.consumer(topic, "another-group")
    assert other.committed() == {}
    assert other.positions() == {0: 0, 1: 0}
    assert len(drain(other, 20)) == 20


def test_seek_moves_the_next_offset_to_read(bus: Bus, clients: Clients) -> None:
    topic = new_topic(bus, 2)
    fill(clients.producer(), topic, {0: 6, 1: 4})
    consumer = clients.consumer(topic)
    drain(consumer, 10)
    consumer.seek({0: 2})
    assert consumer.positions() == {0: 2, 1: 4}
    got = drain(consumer, 4)
    assert [(m.partition, m.offset, m.value) for m in got] == [(0, i, f"p0-{i}".encode()) for i in range(2, 6)]
    consumer.seek({0: 0, 1: 0})
    assert len(drain(consumer, 10)) == 10
    assert consumer.poll(0.2) == []


def test_seek_and_commit_outside_the_log_are_refused(bus: Bus, clients: Clients) -> None:
    topic = new_topic(bus, 2)
    fill(clients.producer(), topic, {0: 3})
    consumer = clients.consumer(topic)
    for bad in ({0: 4}, {1: 1}, {0: -1}, {2: 0}):
        with pytest.raises(BusError, match="outside partition|no partition"):
            consumer.seek(bad)
        with pytest.raises(BusError, match="outside partition|no partition"):
            consumer.commit(bad)
    consumer.seek({0: 3})  # the end itself is a valid position: nothing left to read
    assert consumer.positions() == {0: 3, 1: 0}
    assert consumer.committed() == {}


def test_poll_returns_empty_after_the_timeout(bus: Bus, clients: Clients) -> None:
    topic = new_topic(bus, 2)
    consumer = clients.consumer(topic)
    started = time.monotonic()
    assert consumer.poll(0.2) == []
    assert time.monotonic() - started < 5.0
    # ...and also after the end of the data, without repeating anything.
    fill(clients.producer(), topic, {1: 2})
    drain(consumer, 2)
    assert consumer.poll(0.2) == []


def test_poll_wakes_up_when_a_record_arrives(bus: Bus, clients: Clients) -> None:
    topic = new_topic(bus, 1)
    consumer = clients.consumer(topic)
    producer = clients.producer()
    assert consumer.poll(0) == []

    def later() -> None:
        time.sleep(0.3)
        producer.send(topic, b"late", partition=0)
        producer.flush()

    sender = threading.Thread(target=later)
    sender.start()
    try:
        batch = consumer.poll(DRAIN_TIMEOUT_S)
    finally:
        sender.join()
    assert [m.value for m in batch] == [b"late"]


def test_send_to_a_partition_out_of_range_is_a_bus_error(bus: Bus, clients: Clients) -> None:
    topic = new_topic(bus, 3)
    producer = clients.producer()
    for partition in (3, -1):
        with pytest.raises(BusError, match=rf"{topic}.*3 partitions"):
            producer.send(topic, b"x", partition=partition)
    producer.send(topic, b"x", partition=2)
    producer.flush()
    assert clients.consumer(topic).end_offsets() == {0: 0, 1: 0, 2: 1}


def test_closed_clients_refuse_work(bus: Bus, clients: Clients) -> None:
    topic = new_topic(bus, 1)
    producer = clients.producer()
    producer.close()
    producer.close()
    with pytest.raises(BusError, match="closed"):
        producer.send(topic, b"x", partition=0)
    consumer = clients.consumer(topic)
    consumer.close()
    consumer.close()
    with pytest.raises(BusError, match="closed"):
        consumer.poll(0)


def test_memory_bus_hands_a_producer_thread_records_to_the_main_thread_exactly_once() -> None:
    bus = MemoryBus()
    topic = new_topic(bus, 2)
    total = 20_000
    consumer = bus.consumer(topic, "g")

    def produce() -> None:
        producer = bus.producer()
        for i in range(total):
            producer.send(topic, str(i).encode(), partition=i % 2)
        producer.close()

    thread = threading.Thread(target=produce)
    thread.start()
    try:
        got = drain(consumer, total, max_records=777)
    finally:
        thread.join()
    assert consumer.poll(0) == []
    for p, records in by_partition(got).items():
        assert [m.offset for m in records] == list(range(total // 2))
        assert [int(m.value) for m in records] == list(range(p, total, 2))


def test_memory_bus_send_to_a_missing_topic_is_a_bus_error() -> None:
    with pytest.raises(BusError, match="does not exist"):
        MemoryBus().producer().send("nowhere", b"x", partition=0)


def test_memory_bus_keeps_a_copy_of_what_was_sent() -> None:
    bus = MemoryBus()
    topic = new_topic(bus, 1)
    value, headers = bytearray(b"abc"), {"k": "v"}
    bus.producer().send(topic, value, partition=0, headers=headers)
    value[0:1], headers["k"] = b"X", "changed"
    [m] = bus.consumer(topic, "g").poll(0)
    assert (m.value, m.headers) == (b"abc", {"k": "v"})


def test_open_bus_memory_and_unknown_urls() -> None:
    assert isinstance(open_bus("memory"), MemoryBus)
    assert open_bus("memory").url == "memory"
    for url in ("bogus", "kafka:/127.0.0.1:9092", ""):
        with pytest.raises(BusError, match="use `memory` or `kafka://HOST:PORT`"):
            open_bus(url)
    with pytest.raises(BusError, match="kafka://HOST:PORT"):
        open_bus("kafka://")


@pytest.mark.kafka
def test_open_bus_kafka(kafka_bootstrap: str) -> None:
    bus = open_bus(f"kafka://{kafka_bootstrap}")
    try:
        assert isinstance(bus, KafkaBus)
        assert bus.url == f"kafka://{kafka_bootstrap}"
    finally:
        bus.close()


def test_unreachable_kafka_is_a_clear_bus_error_within_the_deadline(caplog: pytest.LogCaptureFixture) -> None:
    address = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="rtsim.bus"):
        with pytest.raises(BusError) as raised:
            KafkaBus(address, connect_timeout_s=2)
    elapsed = time.monotonic() - started
    assert str(raised.value).startswith(
        f"cannot reach Kafka at {address} after 2 s: is the broker running? `rtsim kafka up` starts a local one"
    )
    assert 1.5 < elapsed < 5.0
    assert any("retrying" in r.getMessage() for r in caplog.records if r.name == "rtsim.bus")


@pytest.mark.kafka
def test_kafka_poll_survives_a_retriable_error_and_reports_others(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    bus = KafkaBus(kafka_bootstrap)
    consumer = bus.consumer(new_topic(bus, 1), "g")
    try:

        def broker_gone(**_: object) -> dict:
            raise KafkaConnectionError("connection reset")

        monkeypatch.setattr(consumer._client, "poll", broker_gone)  # type: ignore[attr-defined]
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="rtsim.bus"):
            assert consumer.poll(0.2) == []
        assert time.monotonic() - started >= 0.15  # waits out the timeout: no hot loop
        assert "KafkaConnectionError" in caplog.text

        def broken(**_: object) -> dict:
            raise UnsupportedVersionError("no")

        monkeypatch.setattr(consumer._client, "poll", broken)  # type: ignore[attr-defined]
        with pytest.raises(BusError, match="UnsupportedVersionError"):
            consumer.poll(0.2)
    finally:
        monkeypatch.undo()
        consumer.close()
        bus.close()


class _GoneConsumerClient:
    """A KafkaConsumer whose broker is away: every poll fails with a retriable error."""

    def assign(self, tps: object) -> None:
        pass

    def committed(self, tp: object) -> None:
        return None

    def seek_to_beginning(self, tp: object) -> None:
        pass

    def poll(self, **_: object) -> dict:
        raise KafkaConnectionError("connection reset")

    def close(self, autocommit: bool = False) -> None:
        pass


class _GoneProducerClient:
    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def _bus_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "rtsim.bus" and r.levelno == logging.WARNING]


def test_kafka_trouble_while_a_broker_is_away_is_warned_once_per_interval(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue #18: a 24 s outage logged no warning on rtsim.bus. Failing polls, undelivered
    records and kafka-python's own reconnects now warn, at most once per WARN_EVERY_S."""
    consumer = _KafkaConsumer(_GoneConsumerClient(), "t", 2, "broker:9092")  # type: ignore[arg-type]
    producer = _KafkaProducer(_GoneProducerClient(), "broker:9092")  # type: ignore[arg-type]
    report_client_trouble()
    report_client_trouble()  # once per process, however many buses
    [trouble] = [h for h in logging.getLogger(CLIENT_LOGGER).handlers if isinstance(h, _ClientTrouble)]
    monkeypatch.setattr(trouble, "warning", RateLimitedWarning())  # an interval of this test's own
    with caplog.at_level(logging.WARNING, logger="rtsim.bus"):
        for _ in range(5):
            assert consumer.poll(0) == []
            producer._on_failure(KafkaTimeoutError("expired after 120000 ms"))
            logging.getLogger("kafka.net.manager").error("Connection failed: %s", "[Errno 111] Connection refused")
    warned = _bus_warnings(caplog)
    assert len(warned) == 3, warned
    assert "poll of 't' on Kafka at broker:9092: KafkaConnectionError" in warned[0]
    assert "not delivered to Kafka at broker:9092 (KafkaTimeoutError" in warned[1]
    assert "Kafka client trouble (Connection failed: [Errno 111] Connection refused)" in warned[2]
    with pytest.raises(BusError, match="5 records were not delivered"):  # each failure still counts
        producer.flush()


def test_a_rate_limited_warning_says_how_many_it_held_back(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    warning = RateLimitedWarning(every_s=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="rtsim.bus"):
        for at in (0.0, 1.0, 9.9, 10.0, 25.0):
            now[0] = at
            warning.warn("broker away: %s", at)
    assert _bus_warnings(caplog) == [
        "broker away: 0.0",
        "broker away: 10.0 (2 more like it in the last 10 s)",
        "broker away: 25.0",
    ]


@pytest.mark.kafka
def test_kafka_clients_ride_out_a_broker_restart(kafka_bootstrap: str, tmp_path: Path) -> None:
    # A broker of its own, so stopping it leaves the session's broker to the other tests.
    broker = LocalKafka(tmp_path / "kafka", port=0, die_with_parent=True)
    bus = KafkaBus(broker.up(wait_s=120))
    opened = Clients(bus)
    try:
        topic = new_topic(bus, 2)
        producer, consumer = opened.producer(), opened.consumer(topic)
        fill(producer, topic, {0: 3, 1: 3})
        assert len(drain(consumer, 6)) == 6

        broker.down()
        for i in range(4):  # queued while the broker is away, delivered once it is back
            producer.send(topic, f"during-{i}".encode(), partition=i % 2)
        assert consumer.poll(0.5) == []

        broker.up(wait_s=120)
        producer.flush()
        got = drain(consumer, 4)
        assert sorted(m.value for m in got) == [f"during-{i}".encode() for i in range(4)]
        assert consumer.positions() == consumer.end_offsets() == {0: 5, 1: 5}
    finally:
        opened.close()
        bus.close()
        broker.down()
