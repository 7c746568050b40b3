"""The bus interface: what the replay producer and the learner consumer need of a transport.

Two implementations share it (docs/architecture.md, "Bus: wire format and topics"): `memory` (in-process) and `kafka`.
Records are bytes with string headers; partitions and offsets mean the same on both, so
the producer, the learner, checkpoints and tests never care which one runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field


class BusError(RuntimeError):
    """The transport failed in a way the caller should report (message says what to do)."""


@dataclass(frozen=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, str] = field(default_factory=dict)


class Producer(ABC):
    @abstractmethod
    def send(
        self,
        topic: str,
        value: bytes,
        *,
        partition: int,
        key: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Queue one record for `partition` (the caller picks it: same on every bus)."""

    @abstractmethod
    def flush(self) -> None:
        """Block until every queued record is durable on the bus."""

    @abstractmethod
    def close(self) -> None: ...


class Consumer(ABC):
    """Reads every partition of one topic by explicit assignment (no group rebalances)."""

    @abstractmethod
    def poll(self, timeout_s: float, max_records: int = 10_000) -> list[Message]:
        """Next records in per-partition offset order; [] after timeout_s without data."""

    @abstractmethod
    def seek(self, positions: dict[int, int]) -> None:
        """Continue each partition from the given offset (the next one to read)."""

    @abstractmethod
    def positions(self) -> dict[int, int]:
        """Next offset to read, per partition."""

    @abstractmethod
    def end_offsets(self) -> dict[int, int]:
        """Offset one past the last record, per partition (lag = end - position)."""

    @abstractmethod
    def commit(self, positions: dict[int, int]) -> None:
        """Record `positions` as processed for this consumer's group."""

    @abstractmethod
    def committed(self) -> dict[int, int]:
        """The group's committed positions ({} if none)."""

    @abstractmethod
    def close(self) -> None: ...


class Bus(ABC):
    """A transport: topics with partitions, producers, and assign-all consumers."""

    url: str

    @abstractmethod
    def create_topic(self, topic: str, partitions: int, config: dict[str, str] | None = None) -> None:
        """Create the topic if missing (idempotent); an existing topic keeps its partitions."""

    @abstractmethod
    def partitions(self, topic: str) -> int:
        """Partition count of an existing topic (BusError if it does not exist)."""

    @abstractmethod
    def producer(self) -> Producer: ...

    @abstractmethod
    def consumer(self, topic: str, group: str) -> Consumer:
        """A consumer assigned to every partition of `topic`, starting at the group's
        committed positions, or at the beginning when there are none."""

    def close(self) -> None:
        """Release connections (the memory bus keeps its data until the process ends)."""
