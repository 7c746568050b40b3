"""The replay producer: pushes a prepared log onto the bus at accelerated event time.

Pacing: the event at time ts is sent at wall time start + (ts - ts0) / speed (speed 3600
= one hour of log per second; None = as fast as possible), optionally capped in events
per second. Events go out in blocks; each block is followed by a watermark on every
partition, so the learner can close a period even when some partition is quiet.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from replay_data.prepared import PreparedLog
from simulator.bus import Bus, wire

if TYPE_CHECKING:  # simulator.metrics reads ReplayStats from here
    from simulator.metrics import ProducerMetrics


@dataclass
class ReplayStats:
    """What the producer has done; read by its metrics and progress output."""

    produced: int = 0
    event_time: int = 0
    speed: float | None = None
    paused: bool = False
    done: bool = False


@dataclass
class ReplaySettings:
    partitions: int = 3
    speed: float | None = None  # event-time seconds per wall second; None = max
    max_events_per_second: float | None = None
    block_events: int = 5000  # at most this many events between watermarks
    block_seconds: int = 3600  # and at most this much log time
    prefix: str = "rtsim"
    extra_manifest: dict = field(default_factory=dict)


class ReplayProducer:
    def __init__(
        self, bus: Bus, log: PreparedLog, run_id: str, settings: ReplaySettings, metrics: ProducerMetrics | None = None
    ) -> None:
        self.bus = bus
        self.metrics = metrics
        self.log = log
        self.run_id = run_id
        self.settings = settings
        self.topic = wire.events_topic(settings.prefix, run_id)
        self.stats = ReplayStats(speed=settings.speed)
        self._resume = threading.Event()
        self._resume.set()

    @cached_property
    def producer_id(self) -> str:
        """Who may write this run's events: a digest of everything that decides the records'
        bytes (run id, log, partitions, blocks). A resumed producer of the same run gets the
        same id and re-sends identical records, which the learner drops as duplicates; any
        other producer gets another id, and the learner rejects its records. A counter
        epoch would add nothing here: every instance of this producer sends the same bytes."""
        log, settings = self.log, self.settings
        digest = hashlib.sha256(f"{wire.FORMAT}|{self.run_id}|{settings.partitions}|".encode())
        digest.update(f"{settings.block_events}|{settings.block_seconds}|".encode())
        for array in (log.ts, log.users, log.items):
            digest.update(np.ascontiguousarray(array).tobytes())
        for ids in (log.user_ids, log.item_ids):
            digest.update("\0".join(map(str, ids)).encode())
        return digest.hexdigest()[:16]

    @cached_property
    def _event_partitions(self) -> np.ndarray:
        """The partition of every event of the log."""
        parts = self.settings.partitions
        partition_of = np.array([wire.partition_for(u, parts) for u in self.log.user_ids], dtype=np.int32)
        return partition_of[self.log.users]

    def _partition_rows(self) -> list[list[int]]:
        """Per partition, [first row, last row + 1] of its events ([0, 0] when it has none)."""
        out = []
        for p in range(self.settings.partitions):
            rows = np.flatnonzero(self._event_partitions == p)
            out.append([int(rows[0]), int(rows[-1]) + 1] if len(rows) else [0, 0])
        return out

    def manifest(self) -> dict:
        return {
            "run_id": self.run_id,
            "dataset": self.log.manifest["dataset"],
            "schedule": [int(e) for e in self.log.schedule.edges],
            "phases": self.log.phases,
            "speed": self.settings.speed if self.settings.speed is not None else "max",
            "n_events": int(len(self.log.ts)),
            "partitions": self.settings.partitions,
            # what the learner trusts in record headers (simulator/admission.py)
            "producer": self.producer_id,
            "partition_rows": self._partition_rows(),
            "end_watermark": self._end_watermark(),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "format": wire.FORMAT,
            **self.settings.extra_manifest,
        }

    def publish_manifest(self) -> dict:
        """Create the run's topics and announce the run on the runs topic."""
        prefix = self.settings.prefix
        self.bus.create_topic(self.topic, self.settings.partitions, {"retention.ms": "-1"})
        for name in (wire.runs_topic(prefix), wire.results_topic(prefix), wire.deadletter_topic(prefix)):
            self.bus.create_topic(name, 1, {"retention.ms": "-1"})
        manifest = self.manifest()
        producer = self.bus.producer()
        producer.send(
            wire.runs_topic(prefix),
            json.dumps(manifest).encode(),
            partition=0,
            key=self.run_id.encode(),
            headers=wire.headers("manifest"),
        )
        producer.close()
        return manifest

    def set_speed(self, speed: float | None) -> None:
        self.settings.speed = speed
        self.stats.speed = speed
        self._anchor = None  # re-anchor pacing at the current event time

    def pause(self) -> None:
        self._resume.clear()
        self.stats.paused = True

    def resume(self) -> None:
        self._resume.set()
        self.stats.paused = False

    def run(
        self, stop: threading.Event | None = None, start_row: int = 0, fast_until_ts: int | None = None
    ) -> ReplayStats:
        """Send every event from `start_row`, then `end` on every partition.

        Events before `fast_until_ts` go out unpaced (catching up after a resume)."""
        stop = stop or threading.Event()
        log, parts, me = self.log, self.settings.partitions, self.producer_id
        producer = self.bus.producer()
        self._anchor = None
        block = self.settings.block_events
        try:
            row = start_row
            self.stats.produced = start_row
            if self.metrics is not None:  # pace and pause show before the first block goes out
                self.metrics.observe(self.stats)
            while row < len(log.ts) and not stop.is_set():
                if not self._resume.is_set():
                    while not self._resume.wait(0.2) and not stop.is_set():
                        pass
                    self._anchor = None  # no burst to catch up after a pause
                    continue
                hi = self._block_end(row, block)
                if fast_until_ts is None or log.ts[row] >= fast_until_ts:
                    self._wait_turn(int(log.ts[row]), row, stop)
                self._send_block(producer, row, hi)
                next_ts = int(log.ts[hi]) if hi < len(log.ts) else self._end_watermark()
                for p in range(parts):
                    producer.send(
                        self.topic,
                        wire.encode_watermark(next_ts),
                        partition=p,
                        headers=wire.headers(wire.WATERMARK, producer=me),
                    )
                self.stats.produced += hi - row
                self.stats.event_time = int(log.ts[hi - 1])
                if self.metrics is not None:
                    self.metrics.observe(self.stats)
                row = hi
            if row >= len(log.ts):
                for p in range(parts):
                    producer.send(self.topic, b"", partition=p, headers=wire.headers(wire.END, producer=me))
                self.stats.done = True
        finally:
            producer.close()  # flushes what was produced, also on Ctrl-C
        return self.stats

    def _end_watermark(self) -> int:
        """The last watermark, sent after the last block: no event of the log is at or after it."""
        return int(self.log.ts[-1]) + 1

    def _send_block(self, producer, lo: int, hi: int) -> None:
        log = self.log
        users, items = log.users[lo:hi], log.items[lo:hi]
        parts = self._event_partitions[lo:hi]
        for p in np.unique(parts):
            rows = np.flatnonzero(parts == p)
            for start in range(0, len(rows), wire.MAX_EVENTS_PER_RECORD):
                chunk = rows[start : start + wire.MAX_EVENTS_PER_RECORD]
                value = wire.encode_events(
                    log.ts[lo:hi][chunk], list(log.user_ids[users[chunk]]), list(log.item_ids[items[chunk]])
                )
                producer.send(
                    self.topic,
                    value,
                    partition=int(p),
                    key=log.user_ids[users[chunk[0]]].encode(),
                    headers=wire.headers(wire.EVENTS, row=lo + int(chunk[0]), producer=self.producer_id),
                )

    def resume_row(self) -> int | None:
        """Where an earlier producer of this run stopped, read from the topic itself: the
        start of the block after its last watermark (None: it sent everything). Blocks are
        deterministic, so records sent again are identical and the learner drops them. Only
        this producer's own watermarks and end markers count: a stray one must not make it
        skip rows."""
        consumer = self.bus.consumer(self.topic, f"rtsim-producer-resume-{time.time_ns()}")
        last_watermark: dict[int, int] = {}
        ended: set[int] = set()
        try:
            end = consumer.end_offsets()
            while consumer.positions() != end:
                for message in consumer.poll(1.0):
                    if message.headers.get(wire.PRODUCER_HEADER) != self.producer_id:
                        continue
                    kind = message.headers.get(wire.TYPE_HEADER)
                    if kind == wire.WATERMARK:
                        last_watermark[message.partition] = wire.decode(message.headers, message.value).ts[0]
                    elif kind == wire.END:
                        ended.add(message.partition)
        finally:
            consumer.close()
        if len(ended) == self.settings.partitions:
            return None
        if len(last_watermark) < self.settings.partitions:
            return 0
        resume_ts = min(last_watermark.values())
        row = 0
        while row < len(self.log.ts) and self.log.ts[row] < resume_ts:
            row = self._block_end(row, self.settings.block_events)
        return row

    def _block_end(self, row: int, block: int) -> int:
        """At most `block` events and `block_seconds` of log time, so pacing and watermarks
        advance smoothly. Blocks depend on the log alone, never on speed or pauses: the
        same log always yields the same records at the same offsets, which resuming needs."""
        span_end = self.log.ts[row] + self.settings.block_seconds
        limit = int(np.searchsorted(self.log.ts, span_end, side="left"))
        return max(row + 1, min(len(self.log.ts), row + block, limit))

    def _wait_turn(self, ts: int, row: int, stop: threading.Event) -> None:
        """Sleep until event time `ts` (at the current speed) and row `row` (under the cap) are due."""
        speed, cap = self.settings.speed, self.settings.max_events_per_second
        if speed is None and cap is None:
            return
        now = time.monotonic()
        if self._anchor is None:
            self._anchor = (now, ts, row)
        wall0, ts0, row0 = self._anchor
        due = now
        if speed is not None:
            due = max(due, wall0 + (ts - ts0) / speed)
        if cap is not None:
            due = max(due, wall0 + (row - row0) / cap)
        if due > now:
            stop.wait(due - now)
