"""The learner's Prometheus metrics and the HTTP exporter shared with the producer.

Names are an interface (DESIGN.md, "Metrics"): dashboards, alerts and tests depend on them.
Each `LearnerMetrics` owns its registry, so tests and several learners in one process never
collide on the global one. No metric carries a `period` label: progression is the time
axis, and the period index is a gauge of its own.
"""
from __future__ import annotations

import errno
import math
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, start_http_server

if TYPE_CHECKING:  # the engine pulls in torch; the producer imports this module for `serve`
    from learner.engine import StrategyResult

# prometheus_client adds a `<name>_created` gauge family beside every counter and histogram;
# the exported families are kept to the named interface instead
disable_created_metrics()

# retraining takes from milliseconds (fine_tune on a tiny period) to hours (full_retrain at
# paper scale); the default buckets stop at 10 s
RETRAIN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 150, 300, 600,
                   1800, 3600, 7200, 14400)

METRIC_NAMES = (
    "rtsim_next_period_ndcg",
    "rtsim_next_period_recall",
    "rtsim_segment_ndcg",
    "rtsim_retrain_duration_seconds",
    "rtsim_retrain_last_duration_seconds",
    "rtsim_eval_duration_seconds",
    "rtsim_serving_strategy",
    "rtsim_serving_ndcg",
    "rtsim_strategy_swaps_total",
    "rtsim_period_index",
    "rtsim_period_interactions",
    "rtsim_period_new_users",
    "rtsim_period_new_items",
    "rtsim_period_wall_seconds",
    "rtsim_events_consumed_total",
    "rtsim_events_rejected_total",
    "rtsim_events_late_total",
    "rtsim_consumer_lag_events",
    "rtsim_model_users",
    "rtsim_model_items",
    "rtsim_last_retrain_timestamp_seconds",
)


METRICS_BACKLOG = 1024


class MetricsPortInUse(OSError):
    """The metrics port is taken; the message names the port and the option to change it."""


def serve(registry: CollectorRegistry, host: str = "127.0.0.1", port: int = 0, *,
          option: str = "--metrics-port") -> tuple[WSGIServer, int]:
    """Serve `registry` at http://host:port/metrics from a daemon thread; (server, bound port).

    Port 0 picks a free port. Stop with `server.shutdown(); server.server_close()`.
    """
    try:
        server, _thread = start_http_server(port, host, registry)
        server.socket.listen(METRICS_BACKLOG)  # with the library's 5, a burst of scrapes timed out
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise MetricsPortInUse(
                errno.EADDRINUSE,
                f"metrics port {port} on {host} is already in use: choose another with {option} "
                "(0 picks a free port)") from err
        raise
    return server, server.server_port


class CounterFeed:
    """Advances a counter to a cumulative total, so callers pass their running stats as they are."""

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self.last = 0

    def total(self, value: int) -> None:
        if value < self.last:
            # the source restarted its count (a new stream after a resume): what it has seen
            # since is new; the exported counter still only goes up
            self.last = 0
        self.counter.inc(value - self.last)
        self.last = value


def period_wall_seconds(edges: Sequence[float], t: int, speed: float | None) -> float | None:
    """Period t's length in wall seconds at `speed` (event seconds per wall second); None at max."""
    if speed is None or speed <= 0:
        return None
    return (edges[t + 1] - edges[t]) / speed


def _set_finite(gauge: Gauge, labels: tuple[str, ...], value: float) -> None:
    """Set a labelled gauge, or drop the series when the value is NaN (an empty period or
    segment), so neither NaN nor a stale number from an earlier period is exported."""
    if math.isfinite(value):
        gauge.labels(*labels).set(value)
    else:
        gauge.remove(*labels)


class LearnerMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.ndcg = Gauge("rtsim_next_period_ndcg", "NDCG@k of each strategy's served model on the "
                          "last closed period (test-then-train)", ["strategy", "k"], registry=r)
        self.recall = Gauge("rtsim_next_period_recall", "Recall@k of each strategy's served model on "
                            "the last closed period", ["strategy", "k"], registry=r)
        self.segment_ndcg = Gauge("rtsim_segment_ndcg", "NDCG at the largest k per old/new user x "
                                  "old/new item segment on the last closed period; absent for an "
                                  "empty segment", ["strategy", "segment", "k"], registry=r)
        self.retrain = Histogram("rtsim_retrain_duration_seconds", "Seconds of training work per "
                                 "retrain (evaluation excluded)", ["strategy"], buckets=RETRAIN_BUCKETS,
                                 registry=r)
        self.retrain_last = Gauge("rtsim_retrain_last_duration_seconds", "Seconds of the last retrain",
                                  ["strategy"], registry=r)
        self.eval = Gauge("rtsim_eval_duration_seconds", "Seconds of the last evaluation",
                          ["strategy"], registry=r)
        self.serving = Gauge("rtsim_serving_strategy", "1 for the strategy being served, else 0",
                             ["strategy"], registry=r)
        self.serving_ndcg = Gauge("rtsim_serving_ndcg", "NDCG@k of the serving strategy on the last "
                                  "closed period", ["k"], registry=r)
        self.swaps = Counter("rtsim_strategy_swaps", "Changes of the serving strategy", registry=r)
        self.period_index = Gauge("rtsim_period_index", "Index of the last closed period", registry=r)
        self.period_interactions = Gauge("rtsim_period_interactions", "Interactions in the last "
                                         "closed online period", registry=r)
        self.period_new_users = Gauge("rtsim_period_new_users", "Users first seen in the last closed "
                                      "online period", registry=r)
        self.period_new_items = Gauge("rtsim_period_new_items", "Items first seen in the last closed "
                                      "online period", registry=r)
        self.period_wall = Gauge("rtsim_period_wall_seconds", "A period's length in wall seconds at "
                                 "the current replay speed (unset at speed max)", registry=r)
        self.consumed = Counter("rtsim_events_consumed", "Events decoded into a period window",
                                registry=r)
        self.rejected = Counter("rtsim_events_rejected", "Events rejected, by reason", ["reason"],
                                registry=r)
        self.late = Counter("rtsim_events_late", "Events older than the open period, folded into it",
                            registry=r)
        self.lag = Gauge("rtsim_consumer_lag_events", "Events published and not yet ingested",
                         registry=r)
        self.model_users = Gauge("rtsim_model_users", "Users known to the models", registry=r)
        self.model_items = Gauge("rtsim_model_items", "Items known to the models", registry=r)
        self.last_retrain = Gauge("rtsim_last_retrain_timestamp_seconds", "Unix time at which the "
                                  "last period's retraining finished", registry=r)
        self._consumed = CounterFeed(self.consumed)
        self._late = CounterFeed(self.late)
        self._rejected: dict[str, CounterFeed] = {}
        self._last_ndcg: dict[str, dict[int, float]] = {}  # per strategy, for a swap between periods

    def observe_period(self, t: int, results: list[StrategyResult], serving: str, n_users: int,
                       n_items: int, period_seconds: float | None) -> None:
        """Period t closed with `results` (empty for a pretrain period).

        period_seconds: the wall seconds of a period at the current speed (see
        `period_wall_seconds`); None at speed max leaves the gauge as it is.
        """
        self.period_index.set(t)
        self.model_users.set(n_users)
        self.model_items.set(n_items)
        if period_seconds is not None and math.isfinite(period_seconds):
            self.period_wall.set(period_seconds)
        if not results:
            return
        first = results[0]  # the period's counts are the same in every strategy's row
        self.period_interactions.set(first.n_interactions)
        self.period_new_users.set(first.n_new_users)
        self.period_new_items.set(first.n_new_items)
        for result in results:
            name, metrics = result.strategy, result.metrics
            self._last_ndcg[name] = dict(metrics.ndcg)
            for k, value in metrics.ndcg.items():
                _set_finite(self.ndcg, (name, str(k)), value)
                if name == serving:
                    _set_finite(self.serving_ndcg, (str(k),), value)
            for k, value in metrics.recall.items():
                _set_finite(self.recall, (name, str(k)), value)
            top = str(max(metrics.ndcg))
            for segment, value in metrics.segment_ndcg.items():
                _set_finite(self.segment_ndcg, (name, segment, top), value)
            self.retrain.labels(name).observe(result.retrain_seconds)
            self.retrain_last.labels(name).set(result.retrain_seconds)
            self.eval.labels(name).set(result.eval_seconds)
        self.set_serving(serving, [r.strategy for r in results], swapped=False)
        self.last_retrain.set(time.time())

    def observe_ingest(self, consumed: int, rejected: Mapping[str, int], late: int, lag: int) -> None:
        """Cumulative ingest totals since the stream started; counters advance by the difference."""
        self._consumed.total(consumed)
        self._late.total(late)
        for reason, total in rejected.items():
            if reason not in self._rejected:
                self._rejected[reason] = CounterFeed(self.rejected.labels(reason))
            self._rejected[reason].total(total)
        self.lag.set(lag)

    def set_serving(self, strategy: str, strategies: list[str], swapped: bool) -> None:
        """Mark `strategy` as served among `strategies`; count a swap when it replaced another."""
        for name in strategies:
            self.serving.labels(name).set(1 if name == strategy else 0)
        if swapped:
            self.swaps.inc()
            # the serving quality switches with the swap, not at the next period
            for k, value in self._last_ndcg.get(strategy, {}).items():
                _set_finite(self.serving_ndcg, (str(k),), value)
