"""The replay producer's Prometheus metrics (names: docs/architecture.md, "Metrics and alerts").

Served with `learner.metrics.serve`; its own registry, like the learner's.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from learner.metrics import CounterFeed
from simulator.producer import ReplayStats

METRIC_NAMES = (
    "rtsim_events_produced_total",
    "rtsim_replay_event_time_seconds",
    "rtsim_replay_speed",
)


class ProducerMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.produced = Counter("rtsim_events_produced", "Events published to the bus", registry=r)
        self.event_time = Gauge("rtsim_replay_event_time_seconds", "Event time (unix seconds) of the "
                                "last event published", registry=r)
        # a gauge always has a value, and speed max has no number: 0 stands for it
        self.speed = Gauge("rtsim_replay_speed", "Replay speed in event seconds per wall second; "
                           "0 means as fast as possible (speed max)", registry=r)
        self._produced = CounterFeed(self.produced)

    def observe(self, stats: ReplayStats) -> None:
        """The producer's cumulative stats; the counter advances by the difference."""
        self._produced.total(stats.produced)
        self.event_time.set(stats.event_time)
        self.speed.set(stats.speed if stats.speed is not None else 0)
