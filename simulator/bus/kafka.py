"""The Kafka bus, over kafka-python 3.x against Kafka 4.x (docs/architecture.md, "Bus: wire format and topics").

Records travel as raw bytes (no serializers) with UTF-8 header values. Consumers assign
every partition of their topic (never subscribe): a learner that trains for minutes between
polls then has no group membership to lose, yet still commits offsets for its group.
Every kafka-python error that reaches a caller is re-raised as BusError, except a retriable
one in poll(), which is logged and reads as "no data yet" so a broker restart is survived.
Trouble that repeats while a broker is away (poll errors, undelivered records, kafka-python's
own reconnects) is logged on `rtsim.bus` at most once per WARN_EVERY_S, with a count.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import (
    KafkaError,
    KafkaTimeoutError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
    for_code,
)
from kafka.structs import OffsetAndMetadata

from simulator.bus.base import Bus, BusError, Consumer, Message, Producer

log = logging.getLogger("rtsim.bus")

_T = TypeVar("_T")

# Client construction: exponential backoff between short attempts, so that our schedule
# (and its WARNING per retry) paces the retries; a healthy local broker answers in ~20 ms.
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 5.0
ATTEMPT_MAX_S = 1.0
# kafka-python backs off reconnects up to 30 s, so a restarted broker would go unnoticed for
# that long (measured: 30 s before a consumer read again, 2 s with this cap).
RECONNECT_BACKOFF_MAX_MS = 2_000

# While a broker is away the same trouble repeats every poll or reconnect: one line per
# WARN_EVERY_S (with how many were held back) says so without flooding the log.
WARN_EVERY_S = 10.0

TOPIC_READY_TIMEOUT_MS = 30_000
# send() blocks only to fetch the metadata of a topic it has not seen yet: fail fast on a
# topic that was never created, instead of kafka-python's 60 s.
SEND_METADATA_WAIT_S = 10
PRODUCER_CONFIG = {
    # Batching is the producer's throughput lever; 10 ms adds no visible latency to a replay.
    "linger_ms": 10,
    "batch_size": 256 * 1024,
    "max_block_ms": SEND_METADATA_WAIT_S * 1000,
    # max_request_size keeps its 1 MiB default, which is also the broker's message.max.bytes:
    # a record of 1,000 JSON events is about 100 KB. acks keeps the 3.x default, all.
}
CONSUMER_CONFIG = {
    "enable_auto_commit": False,
    "auto_offset_reset": "earliest",
    "max_poll_records": 10_000,
    "fetch_max_wait_ms": 100,
    "max_partition_fetch_bytes": 4 * 1024 * 1024,
}


@contextmanager
def _reraised(what: str, bootstrap: str) -> Iterator[None]:
    """Turn kafka-python's errors into BusError, saying what failed and where."""
    try:
        yield
    except KafkaError as exc:
        raise BusError(f"{what} failed on Kafka at {bootstrap}: {type(exc).__name__}: {exc}") from exc


class RateLimitedWarning:
    """A warning on `rtsim.bus` at most once per `every_s`; the next one says how many were held back."""

    def __init__(self, every_s: float = WARN_EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._every_s = every_s
        self._clock = clock
        self._lock = threading.Lock()  # producer errbacks run on kafka-python's sender thread
        self._last: float | None = None
        self._held = 0

    def warn(self, message: str, *args: object) -> None:
        with self._lock:
            now = self._clock()
            if self._last is not None and now - self._last < self._every_s:
                self._held += 1
                return
            held, self._held, self._last = self._held, 0, now
        if held:
            message, args = message + " (%d more like it in the last %.0f s)", (*args, held, self._every_s)
        log.warning(message, *args)


class _ClientTrouble(logging.Handler):
    """kafka-python's own warnings and errors (connections lost or refused, metadata
    refreshes failed: it reconnects and retries by itself) as rate-limited warnings on
    `rtsim.bus`, so an outage that no call of ours sees fail is still reported."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.warning = RateLimitedWarning()

    def emit(self, record: logging.LogRecord) -> None:
        self.warning.warn("Kafka client trouble (%s); kafka-python is retrying", record.getMessage())


CLIENT_LOGGER = "kafka"  # kafka-python's loggers


def report_client_trouble() -> None:
    """Install the _ClientTrouble handler once per process."""
    client_log = logging.getLogger(CLIENT_LOGGER)
    if not any(isinstance(handler, _ClientTrouble) for handler in client_log.handlers):
        client_log.addHandler(_ClientTrouble())


class KafkaBus(Bus):
    """`bootstrap` is HOST:PORT[,HOST:PORT...]; the admin client connects at construction,
    so an unreachable broker is reported here (BusError after connect_timeout_s)."""

    def __init__(self, bootstrap: str, *, connect_timeout_s: float = 30.0) -> None:
        if not bootstrap:
            raise BusError("no Kafka address: use kafka://HOST:PORT")
        self.bootstrap = bootstrap
        self.url = f"kafka://{bootstrap}"
        self.connect_timeout_s = connect_timeout_s
        report_client_trouble()
        self._admin = self._connect("admin client", KafkaAdminClient)

    def _connect(self, what: str, factory: Callable[..., _T], **config: object) -> _T:
        """Construct a client, retrying retriable errors with backoff until the deadline."""
        deadline = time.monotonic() + self.connect_timeout_s
        delay = BACKOFF_FIRST_S
        while True:
            attempt_s = max(0.1, min(deadline - time.monotonic(), ATTEMPT_MAX_S))
            try:
                return factory(
                    bootstrap_servers=self.bootstrap,
                    bootstrap_timeout_ms=int(attempt_s * 1000),
                    reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS,
                    **config,
                )
            except KafkaError as exc:
                if not exc.retriable:
                    raise BusError(
                        f"Kafka at {self.bootstrap} refused the {what}: {type(exc).__name__}: {exc}"
                    ) from exc
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BusError(
                        f"cannot reach Kafka at {self.bootstrap} after {self.connect_timeout_s:g} s: "
                        "is the broker running? `rtsim kafka up` starts a local one "
                        f"(last error: {type(exc).__name__}: {exc})"
                    ) from exc
                pause = min(delay, remaining)
                log.warning(
                    "Kafka at %s unavailable for the %s (%s: %s); retrying in %.1f s",
                    self.bootstrap,
                    what,
                    type(exc).__name__,
                    exc,
                    pause,
                )
                time.sleep(pause)
                delay = min(2 * delay, BACKOFF_MAX_S)
            except ValueError as exc:  # an unparsable address, e.g. host:notaport
                raise BusError(f"bad Kafka address {self.bootstrap!r} ({exc}): use kafka://HOST:PORT") from exc

    def create_topic(self, topic: str, partitions: int, config: dict[str, str] | None = None) -> None:
        # Replication -1 takes the broker's default.replication.factor (1 on the local broker).
        spec = {topic: {"num_partitions": partitions, "replication_factor": -1, "configs": dict(config or {})}}
        with _reraised(f"creating topic {topic!r}", self.bootstrap):
            try:
                self._admin.create_topics(spec)
            except TopicAlreadyExistsError:
                pass
            # Created is not yet usable: wait until every partition has a leader (KRaft lags).
            self._admin.wait_for_topics([topic], timeout_ms=TOPIC_READY_TIMEOUT_MS)

    def partitions(self, topic: str) -> int:
        with _reraised(f"describing topic {topic!r}", self.bootstrap):
            [info] = self._admin.describe_topics([topic])
        code = info["error_code"]
        if code == UnknownTopicOrPartitionError.errno:
            raise BusError(f"topic {topic!r} does not exist on Kafka at {self.bootstrap}: create it first")
        if code:
            raise BusError(f"describing topic {topic!r} failed on Kafka at {self.bootstrap}: {for_code(code).__name__}")
        return len(info["partitions"])

    def producer(self) -> Producer:
        return _KafkaProducer(self._connect("producer", KafkaProducer, **PRODUCER_CONFIG), self.bootstrap)

    def consumer(self, topic: str, group: str) -> Consumer:
        n = self.partitions(topic)
        client = self._connect("consumer", KafkaConsumer, group_id=group, **CONSUMER_CONFIG)
        try:
            return _KafkaConsumer(client, topic, n, self.bootstrap)
        except BaseException:
            client.close(autocommit=False)
            raise

    def close(self) -> None:
        """Closes the admin client; producers and consumers are closed by their owners."""
        self._admin.close()


class _KafkaProducer(Producer):
    """Thread-safe, like the KafkaProducer under it."""

    def __init__(self, client: KafkaProducer, bootstrap: str) -> None:
        self._client = client
        self._bootstrap = bootstrap
        self._lock = threading.Lock()
        self._failed = 0
        self._first_failure: BaseException | None = None
        self._counts: dict[str, int] = {}
        self._closed = False
        self._warning = RateLimitedWarning()

    def send(
        self,
        topic: str,
        value: bytes,
        *,
        partition: int,
        key: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        if self._closed:
            raise BusError("send on a closed producer")
        n = self._partition_count(topic)
        if not 0 <= partition < n:
            raise BusError(f"topic {topic!r} has {n} partitions (0..{n - 1}): no partition {partition}")
        encoded = [(k, v.encode("utf-8")) for k, v in headers.items()] if headers else None
        with _reraised(f"send to {topic!r}", self._bootstrap):
            future = self._client.send(topic, value, key=key, headers=encoded, partition=partition)
        # Delivery fails asynchronously (after retries, at delivery_timeout_ms); flush reports it.
        future.add_errback(self._on_failure)

    def _partition_count(self, topic: str) -> int:
        """Known after the first send to a topic (kafka-python waits for its metadata)."""
        n = self._counts.get(topic)
        if n is None:
            with _reraised(f"metadata of {topic!r}", self._bootstrap):
                try:
                    n = self._counts[topic] = len(self._client.partitions_for(topic))
                except KafkaTimeoutError as exc:
                    raise BusError(
                        f"no metadata for topic {topic!r} from Kafka at {self._bootstrap} "
                        f"within {SEND_METADATA_WAIT_S} s: does the topic exist and is "
                        "the broker up?"
                    ) from exc
        return n

    def _on_failure(self, exc: BaseException) -> None:
        with self._lock:
            self._failed += 1
            self._first_failure = self._first_failure or exc
        # now, not only at the next flush, which a replay reaches at its end
        self._warning.warn(
            "a record was not delivered to Kafka at %s (%s: %s); flush will fail",
            self._bootstrap,
            type(exc).__name__,
            exc,
        )

    def flush(self) -> None:
        """Block until every sent record is acknowledged; BusError if any was not delivered."""
        with _reraised("flush", self._bootstrap):
            self._client.flush()
        with self._lock:
            failed, first = self._failed, self._first_failure
            self._failed, self._first_failure = 0, None
        if failed:
            raise BusError(
                f"{failed} records were not delivered to Kafka at {self._bootstrap}: {type(first).__name__}: {first}"
            ) from first

    def close(self) -> None:
        """Flushes first (so it may raise like flush), then releases the connection."""
        if self._closed:
            return
        self._closed = True
        try:
            self.flush()
        finally:
            self._client.close()


class _KafkaConsumer(Consumer):
    """Used by one thread (KafkaConsumer is not thread-safe)."""

    def __init__(self, client: KafkaConsumer, topic: str, partitions: int, bootstrap: str) -> None:
        self._client = client
        self._topic = topic
        self._bootstrap = bootstrap
        self._tps = [TopicPartition(topic, p) for p in range(partitions)]
        self._closed = False
        self._warning = RateLimitedWarning()
        with _reraised(f"assigning {topic!r}", bootstrap):
            client.assign(self._tps)
            committed = self.committed()
            for tp in self._tps:
                if tp.partition in committed:
                    client.seek(tp, committed[tp.partition])
                else:
                    client.seek_to_beginning(tp)

    def poll(self, timeout_s: float, max_records: int = 10_000) -> list[Message]:
        self._check_open()
        deadline = time.monotonic() + max(timeout_s, 0.0)
        try:
            batches = self._client.poll(timeout_ms=int(max(timeout_s, 0.0) * 1000), max_records=max_records)
        except KafkaError as exc:
            if not exc.retriable:
                raise BusError(
                    f"poll of {self._topic!r} failed on Kafka at {self._bootstrap}: {type(exc).__name__}: {exc}"
                ) from exc
            self._warning.warn(
                "poll of %r on Kafka at %s: %s: %s; retrying", self._topic, self._bootstrap, type(exc).__name__, exc
            )
            # Honour the timeout so a caller's poll loop does not spin while the broker is away.
            time.sleep(max(0.0, deadline - time.monotonic()))
            return []
        return [
            Message(
                r.topic,
                r.partition,
                r.offset,
                r.key,
                b"" if r.value is None else r.value,
                {k: "" if v is None else v.decode("utf-8", "replace") for k, v in r.headers},
            )
            for tp in sorted(batches, key=lambda t: t.partition)
            for r in batches[tp]
        ]

    def seek(self, positions: dict[int, int]) -> None:
        self._check_open()
        self._check_positions(positions)
        with _reraised(f"seek in {self._topic!r}", self._bootstrap):
            for p, offset in positions.items():
                self._client.seek(self._tps[p], offset)

    def positions(self) -> dict[int, int]:
        self._check_open()
        with _reraised(f"positions in {self._topic!r}", self._bootstrap):
            return {tp.partition: self._client.position(tp) for tp in self._tps}

    def end_offsets(self) -> dict[int, int]:
        self._check_open()
        with _reraised(f"end offsets of {self._topic!r}", self._bootstrap):
            ends = self._client.end_offsets(self._tps)
        return {tp.partition: ends[tp] for tp in self._tps}

    def commit(self, positions: dict[int, int]) -> None:
        self._check_open()
        self._check_positions(positions)
        offsets = {self._tps[p]: OffsetAndMetadata(offset, "", -1) for p, offset in positions.items()}
        with _reraised(f"commit in {self._topic!r}", self._bootstrap):
            self._client.commit(offsets)

    def committed(self) -> dict[int, int]:
        self._check_open()
        with _reraised(f"committed offsets of {self._topic!r}", self._bootstrap):
            offsets = {tp.partition: self._client.committed(tp) for tp in self._tps}
        return {p: offset for p, offset in offsets.items() if offset is not None}

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._client.close(autocommit=False)

    def _check_open(self) -> None:
        if self._closed:
            raise BusError(f"consumer of {self._topic!r} is closed")

    def _check_positions(self, positions: dict[int, int]) -> None:
        """Offsets must lie in 0..end: past the end, Kafka would rewind to the beginning."""
        n = len(self._tps)
        bad = [p for p in positions if not 0 <= p < n]
        if bad:
            raise BusError(f"topic {self._topic!r} has {n} partitions: no partition {bad[0]}")
        if not positions:
            return
        ends = self.end_offsets()
        for p, offset in positions.items():
            if not 0 <= offset <= ends[p]:
                raise BusError(f"offset {offset} is outside partition {p} of {self._topic!r} (0..{ends[p]})")
