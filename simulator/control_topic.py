"""The control topic `<prefix>.control`: commands published on the bus, applied by listeners.

A record is the JSON object {"target": "learner"|"producer", "run_id": ID|null, "command",
"args"} (docs/architecture.md, "Bus: wire format and topics"); the commands are those of the HTTP API. A listener
reads from the topic's end when it starts, so a restarted process never replays old
commands, and applies only records for its target and its run (or for any run: null).
Kept free of the learner's imports, so `rtsim ctl` publishes without loading torch.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Protocol

from simulator.bus import Bus, Message, wire

log = logging.getLogger("rtsim.control")

TARGETS = ("learner", "producer")
CONTROL = "control"  # the rtsim-type header of control records


class Commands(Protocol):
    def apply(self, command: str, args: dict) -> dict: ...


def _check_target(target: str) -> None:
    if target not in TARGETS:
        raise ValueError(f"control target must be one of {', '.join(TARGETS)}, not {target!r}")


def publish_command(
    bus: Bus, prefix: str, target: str, run_id: str | None, command: str, args: dict | None = None
) -> dict:
    """Send one command to `<prefix>.control` (created if missing); returns the record sent."""
    _check_target(target)
    topic = wire.control_topic(prefix)
    bus.create_topic(topic, 1)
    record = {"target": target, "run_id": run_id, "command": command, "args": args or {}}
    producer = bus.producer()
    try:
        producer.send(
            topic, json.dumps(record).encode(), partition=0, key=target.encode(), headers=wire.headers(CONTROL)
        )
        producer.flush()
    finally:
        producer.close()
    return record


class ControlTopicListener:
    """A daemon thread applying this process's commands from `<prefix>.control` until
    `stop_event` is set. Counters say what it did with each record it read."""

    def __init__(
        self,
        bus: Bus,
        prefix: str,
        target: str,
        run_id: str,
        commands: Commands,
        stop_event: threading.Event,
        poll_timeout_s: float = 0.5,
    ) -> None:
        _check_target(target)
        self.bus = bus
        self.topic = wire.control_topic(prefix)
        self.target = target
        self.run_id = run_id
        self.commands = commands
        self.stop_event = stop_event
        self.poll_timeout_s = poll_timeout_s
        self.applied = 0
        self.ignored = 0  # well-formed, for another target or run
        self.rejected = 0  # malformed, or refused by the commands
        self._thread: threading.Thread | None = None

    def start(self) -> ControlTopicListener:
        """Position at the topic's end now, so every command published after this returns is seen."""
        self.bus.create_topic(self.topic, 1)
        consumer = self.bus.consumer(self.topic, group=f"rtsim-control-{self.target}-{time.time_ns()}")
        consumer.seek(consumer.end_offsets())
        self._thread = threading.Thread(
            target=self._run, args=(consumer,), daemon=True, name=f"rtsim-control-{self.target}"
        )
        self._thread.start()
        return self

    def join(self, timeout_s: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self, consumer) -> None:
        try:
            while not self.stop_event.is_set():
                for message in consumer.poll(self.poll_timeout_s, max_records=100):
                    self.handle(message)
        except Exception:  # a bus failure ends control by topic, never the run
            log.exception("control topic listener on %s stopped", self.topic)
        finally:
            consumer.close()

    def handle(self, message: Message) -> None:
        where = f"{self.topic}[{message.partition}]@{message.offset}"
        try:
            record = json.loads(message.value)
        except ValueError as err:
            return self._reject(where, f"not JSON: {err}")
        if not isinstance(record, dict):
            return self._reject(where, "not a JSON object")
        target, run_id = record.get("target"), record.get("run_id")
        command, args = record.get("command"), record.get("args", {})
        if target not in TARGETS:
            return self._reject(where, f"target must be one of {', '.join(TARGETS)}, got {target!r:.100}")
        if run_id is not None and not isinstance(run_id, str):
            return self._reject(where, f"run_id must be a string or null, got {run_id!r:.100}")
        if not isinstance(command, str):
            return self._reject(where, f"command must be a string, got {command!r:.100}")
        if target != self.target or run_id not in (None, self.run_id):
            self.ignored += 1
            log.debug("control record %s is for %s run %s: ignored", where, target, run_id)
            return
        try:
            result = self.commands.apply(command, args)
        except ValueError as err:  # ControlError: a refused command, already explained
            return self._reject(where, f"{command} refused: {err}")
        except Exception:
            self.rejected += 1
            log.exception("control record %s: %s failed", where, command)
            return
        self.applied += 1
        log.info("control record %s applied: %s %s", where, command, json.dumps(args)[:200])
        log.debug("control record %s answer: %s", where, result)

    def _reject(self, where: str, reason: str) -> None:
        self.rejected += 1
        log.warning("control record %s skipped: %s", where, reason)
