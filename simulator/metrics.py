"""The replay producer's Prometheus metrics (names: docs/architecture.md, "Metrics and alerts").

Served with `learner.metrics.serve`; its own registry, like the learner's. The pace of the
replay lives here, where it changes (`rtsim ctl speed|pause|resume`): the learner's metrics
join these on `run_id`.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

from prometheus_client import Counter, Gauge

from learner.exposition import OptionalGauge, RunLabels, RunRegistry
from learner.metrics import CounterFeed
from simulator.producer import ReplayStats

METRIC_NAMES = (
    "rtsim_events_produced_total",
    "rtsim_replay_event_time_seconds",
    "rtsim_replay_speed",
    "rtsim_replay_paused",
    "rtsim_period_wall_seconds",
    "rtsim_run_info",
)


def period_wall_seconds(edges: Sequence[int], event_time: int, speed: float | None) -> float | None:
    """The wall seconds the period holding `event_time` lasts at `speed` (event seconds per
    wall second); None at speed max, where a period has no wall-time length."""
    if speed is None or speed <= 0:
        return None
    t = min(max(bisect_right(edges, event_time) - 1, 0), len(edges) - 2)
    return (edges[t + 1] - edges[t]) / speed


class ProducerMetrics:
    def __init__(self, edges: Sequence[int], run: RunLabels | None = None) -> None:
        self.registry = r = RunRegistry(run)
        self.edges = [int(edge) for edge in edges]
        self.produced = Counter("rtsim_events_produced", "Events published to the bus", registry=r)
        self.event_time = OptionalGauge(
            "rtsim_replay_event_time_seconds", "Event time (unix seconds) of the last event published", registry=r
        )
        self.speed = OptionalGauge(
            "rtsim_replay_speed",
            "Replay speed in event seconds per wall second; absent at speed max (as fast as possible)",
            registry=r,
        )
        self.paused = Gauge("rtsim_replay_paused", "1 while the replay is paused (rtsim ctl pause), else 0", registry=r)
        self.period_wall = OptionalGauge(
            "rtsim_period_wall_seconds",
            "Wall seconds the period being replayed lasts at the current speed; absent at speed max",
            registry=r,
        )
        self._produced = CounterFeed(self.produced)

    def observe(self, stats: ReplayStats) -> None:
        """The producer's cumulative stats; the counter advances by the difference."""
        self._produced.total(stats.produced)
        if stats.event_time:
            self.event_time.set(stats.event_time)
        self.paused.set(int(stats.paused))
        wall = period_wall_seconds(self.edges, stats.event_time, stats.speed)
        for gauge, value in ((self.speed, stats.speed), (self.period_wall, wall)):
            if value is None:
                gauge.clear()
            else:
                gauge.set(value)
