"""The in-process bus: topics as lists of append-only partitions, shared by threads.

A replay producer thread and the learner in the main thread share one MemoryBus. One
condition variable guards every topic: sends append and wake waiting consumers, so a
consumer blocks in poll() without spinning. Offsets are list indices, so positions,
commits and lag mean exactly what they mean on Kafka.
"""

from __future__ import annotations

import threading
import time

from simulator.bus.base import Bus, BusError, Consumer, Message, Producer

_BYTES = (bytes, bytearray, memoryview)


class MemoryBus(Bus):
    """Topics live as long as the instance; topic configs (retention...) are ignored."""

    url = "memory"

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._topics: dict[str, list[list[Message]]] = {}
        self._committed: dict[tuple[str, str], dict[int, int]] = {}

    def create_topic(self, topic: str, partitions: int, config: dict[str, str] | None = None) -> None:
        if partitions < 1:
            raise BusError(f"topic {topic!r} needs at least 1 partition, not {partitions}")
        with self._cond:
            self._topics.setdefault(topic, [[] for _ in range(partitions)])

    def partitions(self, topic: str) -> int:
        with self._cond:
            return len(self._logs(topic))

    def producer(self) -> Producer:
        return _MemoryProducer(self)

    def consumer(self, topic: str, group: str) -> Consumer:
        return _MemoryConsumer(self, topic, group)

    def _logs(self, topic: str) -> list[list[Message]]:
        """The topic's partitions; the caller holds self._cond."""
        try:
            return self._topics[topic]
        except KeyError:
            raise BusError(f"topic {topic!r} does not exist on the memory bus: create it first") from None

    def _append(self, topic: str, partition: int, key: bytes | None, value: bytes, headers: dict[str, str]) -> None:
        with self._cond:
            logs = self._logs(topic)
            if not 0 <= partition < len(logs):
                raise BusError(
                    f"topic {topic!r} has {len(logs)} partitions (0..{len(logs) - 1}): no partition {partition}"
                )
            log = logs[partition]
            log.append(Message(topic, partition, len(log), key, value, headers))
            self._cond.notify_all()


class _MemoryProducer(Producer):
    def __init__(self, bus: MemoryBus) -> None:
        self._bus = bus
        self._closed = False

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
        # Same types as kafka-python accepts; copies so later edits by the caller never
        # change a record already on the bus.
        if not isinstance(value, _BYTES) or not (key is None or isinstance(key, _BYTES)):
            raise TypeError("record key and value must be bytes")
        self._bus._append(
            topic, partition, None if key is None else bytes(key), bytes(value), dict(headers) if headers else {}
        )

    def flush(self) -> None:
        """Nothing to wait for: a sent record is visible to consumers at once."""

    def close(self) -> None:
        self._closed = True


class _MemoryConsumer(Consumer):
    """Used by one thread; safe against producers appending from other threads."""

    def __init__(self, bus: MemoryBus, topic: str, group: str) -> None:
        self._bus = bus
        self._topic = topic
        self._group = group
        with bus._cond:
            self._logs = bus._logs(topic)
            committed = bus._committed.get((group, topic), {})
            self._positions = [committed.get(p, 0) for p in range(len(self._logs))]
        self._next_first = 0  # partition served first by the next poll, rotated for fairness
        self._closed = False

    def poll(self, timeout_s: float, max_records: int = 10_000) -> list[Message]:
        self._check_open()
        if max_records < 1:
            raise ValueError(f"max_records must be positive, not {max_records}")
        deadline = time.monotonic() + max(timeout_s, 0.0)
        with self._bus._cond:
            while True:
                taken = self._take(max_records)
                if taken:
                    return taken
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._bus._cond.wait(remaining)

    def _take(self, max_records: int) -> list[Message]:
        """Up to max_records, grouped by partition in offset order; the caller holds the lock.

        Partitions take turns at being served first, so one with a long backlog never
        starves the others when max_records is small.
        """
        n = len(self._logs)
        chunks: dict[int, list[Message]] = {}
        left = max_records
        for i in range(n):
            p = (self._next_first + i) % n
            start = self._positions[p]
            stop = min(len(self._logs[p]), start + left)
            if stop > start:
                chunks[p] = self._logs[p][start:stop]
                self._positions[p] = stop
                left -= stop - start
                if left == 0:
                    break
        self._next_first = (self._next_first + 1) % n
        return [m for p in sorted(chunks) for m in chunks[p]]

    def seek(self, positions: dict[int, int]) -> None:
        self._check_open()
        with self._bus._cond:
            self._check_positions(positions)
            for p, offset in positions.items():
                self._positions[p] = offset

    def positions(self) -> dict[int, int]:
        self._check_open()
        with self._bus._cond:
            return dict(enumerate(self._positions))

    def end_offsets(self) -> dict[int, int]:
        self._check_open()
        with self._bus._cond:
            return {p: len(log) for p, log in enumerate(self._logs)}

    def commit(self, positions: dict[int, int]) -> None:
        self._check_open()
        with self._bus._cond:
            self._check_positions(positions)
            self._bus._committed.setdefault((self._group, self._topic), {}).update(positions)

    def committed(self) -> dict[int, int]:
        self._check_open()
        with self._bus._cond:
            return dict(self._bus._committed.get((self._group, self._topic), {}))

    def close(self) -> None:
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise BusError(f"consumer of {self._topic!r} (group {self._group!r}) is closed")

    def _check_positions(self, positions: dict[int, int]) -> None:
        """Offsets must lie in 0..end: Kafka would silently rewind a position past the end."""
        for p, offset in positions.items():
            if not 0 <= p < len(self._logs):
                raise BusError(f"topic {self._topic!r} has {len(self._logs)} partitions: no partition {p}")
            if not 0 <= offset <= len(self._logs[p]):
                raise BusError(f"offset {offset} is outside partition {p} of {self._topic!r} (0..{len(self._logs[p])})")
