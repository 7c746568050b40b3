"""The learner consumer: bus records -> period windows -> the engine, one period at a time.

It knows the data only through the bus (the run manifest and the events topic), reads
every partition by explicit assignment, and commits offsets only up to the first record
that still feeds an open period, so a restart never skips an event.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from learner.checkpoint import CheckpointError, CheckpointStore
from learner.engine import Engine, StrategyResult
from learner.metrics import LearnerMetrics
from learner.results import as_row
from learner.windows import PeriodWindows
from simulator.admission import Admission
from simulator.bus import Bus, BusError, Message, wire
from simulator.dedup import RowLedger

log = logging.getLogger("rtsim.learner")

RETRY_DEADLINE_S = 300.0  # how long a broker may be away before the learner gives up

PeriodCallback = Callable[[int, str, int, list[StrategyResult]], None]


@dataclass
class IngestStats:
    rejected: Counter = field(default_factory=Counter)
    records: int = 0


def find_manifest(
    bus: Bus, prefix: str, run_id: str | None, wait_s: float, stop: threading.Event | None = None
) -> dict:
    """The manifest of `run_id`, or the newest one; waits up to wait_s for it to appear."""
    topic = wire.runs_topic(prefix)
    bus.create_topic(topic, 1, {"retention.ms": "-1"})
    consumer = bus.consumer(topic, group=f"rtsim-manifest-reader-{time.time_ns()}")
    deadline = time.monotonic() + wait_s
    newest = None
    try:
        while True:
            for message in consumer.poll(0.5):
                try:
                    manifest = json.loads(message.value)
                except ValueError:
                    continue
                if run_id is None or manifest.get("run_id") == run_id:
                    newest = manifest
            if newest is not None and consumer.positions() == consumer.end_offsets():
                return newest
            if time.monotonic() > deadline or (stop is not None and stop.is_set()):
                wanted = f"run {run_id!r}" if run_id else "any run"
                raise TimeoutError(
                    f"no manifest for {wanted} on {topic} after {wait_s:.0f} s: "
                    "start the producer (`rtsim replay ...`) or check --run-id"
                )
    finally:
        consumer.close()


class StreamLearner:
    def __init__(
        self,
        bus: Bus,
        engine: Engine,
        manifest: dict,
        *,
        prefix: str = "rtsim",
        group: str | None = None,
        on_period: PeriodCallback | None = None,
        deadletter: Callable[[dict], None] | None = None,
        metrics: LearnerMetrics | None = None,
        checkpoints: CheckpointStore | None = None,
        checkpoint_every: int = 1,
    ) -> None:
        self.bus = bus
        self.engine = engine
        self.manifest = manifest
        self.run_id = manifest["run_id"]
        self.prefix = prefix
        self.topic = wire.events_topic(prefix, self.run_id)
        self.group = group or f"rtsim-learner-{self.run_id}"
        self.windows = PeriodWindows(manifest["schedule"], bus.partitions(self.topic))
        self.stats = IngestStats()
        self.on_period = on_period or (lambda *args: None)
        self._deadletter = deadletter or self._deadletter_topic
        self.metrics = metrics
        self.checkpoints = checkpoints
        self.checkpoint_every = checkpoint_every
        self.rows: list[dict] = []  # every result row so far, kept in checkpoints
        self._admission = Admission(manifest)  # what record headers may claim
        self._ledger = RowLedger()  # drops what a resumed producer re-sends
        self._reread_ledger = RowLedger()  # after a resume: refill each record once
        self._replay_until: dict[int, int] = {}  # per partition: offsets read before a resume
        self._seek_to: dict[int, int] | None = None
        self._refilling: dict[int, int] = {}  # per partition: re-read up to here before closing a period
        self._producer = bus.producer()

    def run(self, stop: threading.Event | None = None, poll_timeout_s: float = 0.5) -> None:
        """Consume until every period has closed (or `stop` is set)."""
        stop = stop or threading.Event()
        consumer = self.bus.consumer(self.topic, self.group)
        if self._seek_to is not None:
            self._await_offsets(consumer, self._seek_to, stop)
            consumer.seek(self._seek_to)
        try:
            while not self.windows.finished and not stop.is_set():
                for message in consumer.poll(poll_timeout_s):
                    self._ingest(message)
                self._observe_ingest()
                while not self._refilling_open(consumer) and (closed := self.windows.pop_closed()) is not None:
                    t, events = closed
                    self._close(t, events)
                    positions = self._retry(consumer.positions, "reading consumer positions")
                    if self._checkpoint_due(t):
                        self._checkpoint(t, positions)
                    if self.checkpoints is None or self._checkpoint_due(t):
                        # committed only once the checkpoint holding these positions is durable
                        safe = self.windows.safe_positions(positions)
                        self._retry(lambda: consumer.commit(safe), "committing offsets")
            if self.windows.finished:
                self._drain(consumer)
        finally:
            consumer.close()
            self._producer.close()

    def _drain(self, consumer, wait_s: float = 5.0) -> None:
        """Read what the topic holds beyond the end, so that records sent after the
        producer's end marker are counted and dead-lettered (after_end), not left unread."""
        ends = self._retry(consumer.end_offsets, "reading end offsets")
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and any(consumer.positions().get(p, 0) < end for p, end in ends.items()):
            for message in consumer.poll(0.2):
                self._ingest(message)
        self._observe_ingest()

    @staticmethod
    def _retry(action: Callable[[], object], what: str, deadline_s: float = RETRY_DEADLINE_S):
        """Retry a bus call with bounded backoff while the broker is away, saying so."""
        delay, start = 0.5, time.monotonic()
        while True:
            try:
                return action()
            except BusError as err:
                if time.monotonic() - start > deadline_s:
                    raise
                log.warning("%s failed (%s); retrying in %.1f s", what, err, delay)
                time.sleep(delay)
                delay = min(2 * delay, 5.0)

    def _refilling_open(self, consumer) -> bool:
        """Whether a resumed learner is still re-reading the open periods' events. The restored
        watermarks already cover everything the checkpoint had read, so closing a period
        before its events are re-read would close it short."""
        if self._refilling:
            positions = self._retry(consumer.positions, "reading consumer positions")
            self._refilling = {p: end for p, end in self._refilling.items() if positions.get(p, 0) < end}
        return bool(self._refilling)

    def _await_offsets(self, consumer, positions: dict[int, int], stop: threading.Event) -> None:
        """A resumed learner may start before a re-started producer has re-sent its records."""
        while not stop.is_set():
            ends = consumer.end_offsets()
            if all(ends.get(p, 0) >= offset for p, offset in positions.items()):
                return
            stop.wait(0.1)

    def _checkpoint_due(self, t: int) -> bool:
        return self.checkpoints is not None and (
            (t + 1) % self.checkpoint_every == 0 or t == self.windows.n_periods - 1
        )

    def _checkpoint(self, t: int, positions: dict[int, int]) -> None:
        self.checkpoints.save(
            t,
            {
                "format": 1,
                "manifest": self.manifest,
                "engine": self.engine.state_dict(),
                "windows": self.windows.state_dict(),
                "rejected": dict(self.stats.rejected),
                "rows": list(self.rows),
                "positions": dict(positions),  # everything before these was read
                "safe_positions": self.windows.safe_positions(positions),  # where reading resumes
                "rows_ingested": self._ledger.state_dict(),
                "closed_at": time.time(),  # when period t closed, for the metrics of a resumed run
            },
        )

    def restore(self, state: dict) -> None:
        """Continue from a checkpoint: re-read from its safe positions; records before its
        read positions only re-fill the open periods (their other effects already count)."""
        if "rows_ingested" not in state:  # written before the ledger: re-sent records would count twice
            raise CheckpointError(
                "the checkpoint was written by an older rtsim that kept no record digests; "
                "start the run afresh without --resume"
            )
        self.engine.load_state_dict(state["engine"])
        self.windows.load_state_dict(state["windows"])
        self.stats.rejected = Counter(state["rejected"])
        self.rows = list(state["rows"])
        self._ledger.load_state_dict(state["rows_ingested"])
        self._replay_until = dict(state["positions"])
        self._seek_to = dict(state["safe_positions"])
        self._refilling = {p: end for p, end in self._replay_until.items() if self._seek_to.get(p, end) < end}
        if self.metrics is not None:
            engine = self.engine
            self.metrics.restore(
                self.windows.open - 1,
                self.rows,
                len(engine.user_vocab),
                len(engine.item_vocab),
                engine.swaps,
                state.get("closed_at"),
            )
            self._observe_ingest()

    def _ingest(self, message: Message) -> None:
        if message.offset < self._replay_until.get(message.partition, 0):
            self._reread(message)
            return
        self.stats.records += 1
        try:
            decoded = self._admit(message, self._ledger)
            if decoded is None:
                self.stats.rejected["duplicate"] += 1  # a resumed producer sent it again
                return
            if decoded.kind == wire.EVENTS and self.windows.ended[message.partition]:
                raise wire.DecodeError("after_end", "events after the producer's end marker on this partition")
            if decoded.kind == wire.EVENTS and self.windows.finished:
                # the producer's last watermark can close the last period before its end
                # markers; events read after it (while draining) would reach no period
                raise wire.DecodeError("after_end", "events after the run's last period closed")
        except wire.DecodeError as err:
            self.stats.rejected[err.reason] += 1
            log.warning("rejected record %s/%d@%d: %s", message.topic, message.partition, message.offset, err)
            self._deadletter(
                {
                    "reason": err.reason,
                    "detail": str(err),
                    "topic": message.topic,
                    "partition": message.partition,
                    "offset": message.offset,
                    "raw_base64": base64.b64encode(message.value).decode(),
                }
            )
            return
        self._apply(message, decoded, self.windows.add)

    def _admit(self, message: Message, ledger: RowLedger) -> wire.Decoded | None:
        """The record decoded and within what the manifest allows, or None when `ledger`
        has seen it; DecodeError says why it is refused."""
        self._admission.check_producer(message.headers)
        decoded = wire.decode(message.headers, message.value)
        if decoded.kind == wire.EVENTS:
            row = self._admission.row(message.partition, message.headers, len(decoded.ts))
            if not ledger.first_time(message.partition, row, message.value):
                return None
        elif decoded.kind == wire.WATERMARK:
            self._admission.check_watermark(int(decoded.ts[0]))
        else:
            self._admission.check_end(message.partition, int(self.windows.watermarks[message.partition]))
        return decoded

    def _reread(self, message: Message) -> None:
        try:
            decoded = self._admit(message, self._reread_ledger)
        except wire.DecodeError:
            return  # counted and dead-lettered before the checkpoint
        if decoded is None:
            return  # a re-sent copy, counted before the checkpoint
        self._apply(message, decoded, self.windows.refill)

    def _apply(self, message: Message, decoded: wire.Decoded, add_events: Callable[..., None]) -> None:
        """Hand a decoded record to the windows; events go through add_events (add, or
        refill when re-reading what a checkpoint already counted)."""
        if decoded.kind == wire.EVENTS:
            add_events(message.partition, message.offset, decoded.ts, decoded.users, decoded.items)
        elif decoded.kind == wire.WATERMARK:
            self.windows.watermark(message.partition, int(decoded.ts[0]))
        else:
            self.windows.end(message.partition)

    def _close(self, t: int, events) -> None:
        results = self.engine.close_period(t, events)
        rows = [as_row(result) for result in results]
        self.rows += rows
        self._retry(lambda: self._publish(rows), "publishing results")
        if self.metrics is not None:
            engine = self.engine
            serving = engine.serving  # now: a swap made while the period closed stays in the metrics
            self.metrics.observe_period(t, rows, serving, len(engine.user_vocab), len(engine.item_vocab))
        self.on_period(t, self.engine.phases[t], len(events), results)

    def _publish(self, rows: list[dict]) -> None:
        for row in rows:
            record = {"run_id": self.run_id, **{k: None if v != v else v for k, v in row.items()}}
            self._producer.send(
                wire.results_topic(self.prefix),
                json.dumps(record).encode(),
                partition=0,
                key=self.run_id.encode(),
                headers=wire.headers("result"),
            )
        self._producer.flush()

    def _observe_ingest(self) -> None:
        if self.metrics is None:
            return
        windows = self.windows.stats
        rejected = {**self.stats.rejected, **windows.outside}
        self.metrics.observe_ingest(windows.consumed, rejected, windows.late, sum(windows.outside.values()))

    def _deadletter_topic(self, record: dict) -> None:
        self._producer.send(
            wire.deadletter_topic(self.prefix),
            json.dumps(record).encode(),
            partition=0,
            headers=wire.headers("deadletter"),
        )
