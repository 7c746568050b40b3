"""The learner's Prometheus metrics and the HTTP exporter shared with the producer.

Names are an interface (docs/architecture.md, "Metrics and alerts"): dashboards, alerts and tests depend on them.
Each `LearnerMetrics` owns its registry, so tests and several learners in one process never
collide on the global one. No metric carries a `period` label: progression is the time
axis, and the period index is a gauge of its own. Every sample carries the run's `run_id`
(learner/exposition.py), which is also what the producer's series join on.
"""

from __future__ import annotations

import errno
import math
import re
import time
from collections.abc import Mapping
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, start_http_server

from learner.exposition import OptionalGauge, RunLabels, RunRegistry
from learner.memory import memory_limit_bytes, peak_resident_bytes, resident_bytes

# prometheus_client adds a `<name>_created` gauge family beside every counter and histogram;
# the exported families are kept to the named interface instead
disable_created_metrics()

# retraining takes from milliseconds (fine_tune on a tiny period) to hours (full_retrain at
# paper scale); the default buckets stop at 10 s
RETRAIN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 150, 300, 600, 1800, 3600, 7200, 14400)

METRIC_NAMES = (
    "rtsim_next_period_ndcg",
    "rtsim_next_period_recall",
    "rtsim_segment_ndcg",
    "rtsim_retrain_duration_seconds",
    "rtsim_retrain_last_duration_seconds",
    "rtsim_eval_duration_seconds",
    "rtsim_eval_last_duration_seconds",
    "rtsim_serving_strategy",
    "rtsim_serving_ndcg",
    "rtsim_strategy_swaps_total",
    "rtsim_period_index",
    "rtsim_period_interactions",
    "rtsim_period_new_users",
    "rtsim_period_new_items",
    "rtsim_events_consumed_total",
    "rtsim_events_rejected_total",
    "rtsim_events_late_total",
    "rtsim_events_ingested_total",
    "rtsim_model_users",
    "rtsim_model_items",
    "rtsim_last_retrain_timestamp_seconds",
    "rtsim_periods_below_fine_tune",
    "rtsim_run_info",
    "rtsim_model_nonfinite_rows",
    "rtsim_model_max_row_norm",
    "rtsim_model_norm_warnings_total",
    "rtsim_process_resident_memory_bytes",
    "rtsim_process_peak_resident_memory_bytes",
    "rtsim_process_memory_limit_bytes",
)

# the periods.csv columns exported per strategy: ndcg@K, recall@K and ndcg@K[SEGMENT]
_METRIC_COLUMN = re.compile(r"(ndcg|recall)@(\d+)(?:\[([A-Z]{2}-[A-Z]{2})\])?")


METRICS_BACKLOG = 1024


class MetricsPortInUse(OSError):
    """The metrics port is taken; the message names the port and the option to change it."""


def serve(
    registry: CollectorRegistry, host: str = "127.0.0.1", port: int = 0, *, option: str = "--metrics-port"
) -> tuple[WSGIServer, int]:
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
                f"metrics port {port} on {host} is already in use: choose another with {option} (0 picks a free port)",
            ) from err
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


def _set_finite(gauge: Gauge, labels: tuple[str, ...], value: float) -> None:
    """Set a labelled gauge, or drop the series when the value is NaN (an empty period or
    segment), so neither NaN nor a stale number from an earlier period is exported."""
    if math.isfinite(value):
        gauge.labels(*labels).set(value)
    else:
        gauge.remove(*labels)


class LearnerMetrics:
    def __init__(self, run: RunLabels | None = None) -> None:
        self.registry = r = RunRegistry(run)
        self.ndcg = Gauge(
            "rtsim_next_period_ndcg",
            "NDCG@k of each strategy's served model on the last closed period (test-then-train)",
            ["strategy", "k"],
            registry=r,
        )
        self.recall = Gauge(
            "rtsim_next_period_recall",
            "Recall@k of each strategy's served model on the last closed period",
            ["strategy", "k"],
            registry=r,
        )
        self.segment_ndcg = Gauge(
            "rtsim_segment_ndcg",
            "NDCG@k per old/new user x old/new item segment on the last closed period; absent for an empty segment",
            ["strategy", "segment", "k"],
            registry=r,
        )
        self.retrain = Histogram(
            "rtsim_retrain_duration_seconds",
            "Seconds of training work per retrain (evaluation excluded)",
            ["strategy"],
            buckets=RETRAIN_BUCKETS,
            registry=r,
        )
        self.retrain_last = Gauge(
            "rtsim_retrain_last_duration_seconds", "Seconds of the last retrain", ["strategy"], registry=r
        )
        self.eval = Histogram(
            "rtsim_eval_duration_seconds",
            "Seconds per evaluation of a strategy on a closed period",
            ["strategy"],
            buckets=RETRAIN_BUCKETS,
            registry=r,
        )
        self.eval_last = Gauge(
            "rtsim_eval_last_duration_seconds", "Seconds of the last evaluation", ["strategy"], registry=r
        )
        self.serving = Gauge(
            "rtsim_serving_strategy", "1 for the strategy being served, else 0", ["strategy"], registry=r
        )
        self.serving_ndcg = Gauge(
            "rtsim_serving_ndcg", "NDCG@k of the serving strategy on the last closed period", ["k"], registry=r
        )
        self.swaps = Counter(
            "rtsim_strategy_swaps",
            "Changes of the serving strategy in this run (continued from the checkpoint after a resume)",
            registry=r,
        )
        self.period_index = OptionalGauge("rtsim_period_index", "Index of the last closed period", registry=r)
        self.period_interactions = OptionalGauge(
            "rtsim_period_interactions", "Interactions in the last closed online period", registry=r
        )
        self.period_new_users = OptionalGauge(
            "rtsim_period_new_users", "Users first seen in the last closed online period", registry=r
        )
        self.period_new_items = OptionalGauge(
            "rtsim_period_new_items", "Items first seen in the last closed online period", registry=r
        )
        self.consumed = Counter("rtsim_events_consumed", "Events decoded into a period window", registry=r)
        self.ingested = Counter(
            "rtsim_events_ingested",
            "Events taken off the bus (into a period "
            "window or outside the schedule); the producer's "
            "rtsim_events_produced_total minus this is the consumer lag",
            registry=r,
        )
        self.rejected = Counter(
            "rtsim_events_rejected",
            "Events rejected, by reason (a reason appears once it happens)",
            ["reason"],
            registry=r,
        )
        self.late = Counter("rtsim_events_late", "Events older than the open period, folded into it", registry=r)
        self.model_users = OptionalGauge("rtsim_model_users", "Users known to the models", registry=r)
        self.model_items = OptionalGauge("rtsim_model_items", "Items known to the models", registry=r)
        self.below_fine_tune = Gauge(
            "rtsim_periods_below_fine_tune",
            "Closed periods in a row in "
            "which the strategy's NDCG at the largest k was below fine_tune's "
            "(0 when it was not; absent without fine_tune)",
            ["strategy"],
            registry=r,
        )
        self.last_retrain = OptionalGauge(
            "rtsim_last_retrain_timestamp_seconds",
            "Unix time at which the last period's retraining finished",
            registry=r,
        )
        self.nonfinite_rows = Gauge(
            "rtsim_model_nonfinite_rows",
            "Rows of each strategy's served tables holding NaN or inf when the last period was scored",
            ["strategy"],
            registry=r,
        )
        self.max_row_norm = Gauge(
            "rtsim_model_max_row_norm",
            "Largest L2 norm among the finite rows of each strategy's served tables when the last period was scored",
            ["strategy"],
            registry=r,
        )
        self.norm_warnings = Counter(
            "rtsim_model_norm_warnings",
            "Periods in which a strategy's served "
            "tables held non-finite rows or their largest row norm, above "
            "learner.guard.norm_floor, grew more than learner.guard.norm_growth times",
            ["strategy"],
            registry=r,
        )
        # read when scraped: memory moves within a period, between the observe_* calls
        self.resident = Gauge(
            "rtsim_process_resident_memory_bytes", "Resident memory of the learner's process now", registry=r
        )
        self.resident.set_function(resident_bytes)
        self.peak_resident = Gauge(
            "rtsim_process_peak_resident_memory_bytes",
            "Largest resident memory of the learner's process so far (the kernel's high-water mark)",
            registry=r,
        )
        self.peak_resident.set_function(peak_resident_bytes)
        self.memory_limit = Gauge(
            "rtsim_process_memory_limit_bytes",
            "Memory the learner's process may hold: the machine's, or its container's limit where lower",
            registry=r,
        )
        self.memory_limit.set_function(memory_limit_bytes)
        self._consumed = CounterFeed(self.consumed)
        self._ingested = CounterFeed(self.ingested)
        self._late = CounterFeed(self.late)
        self._rejected: dict[str, CounterFeed] = {}
        self._last_ndcg: dict[str, dict[str, float]] = {}  # per strategy, for a swap between periods
        self._below: dict[str, int] = {}  # per strategy: the current streak below fine_tune

    def observe_period(self, t: int, rows: list[dict], serving: str, n_users: int, n_items: int) -> None:
        """Period t closed with `rows` (its periods.csv rows; none for a pretrain period)."""
        self._observe_progress(t, n_users, n_items)
        if rows:
            self._observe_rows(rows, serving, time.time())

    def restore(
        self, t: int, rows: list[dict], n_users: int, n_items: int, swaps: int, closed_at: float | None
    ) -> None:
        """A resumed run: what reads as "so far in this run" (retrain and evaluation
        histograms, swaps, the period index, the last results) continues from the
        checkpoint's rows and swap count instead of from 0. closed_at: when period t closed."""
        by_period: dict[int, list[dict]] = {}
        for row in rows:
            by_period.setdefault(int(row["period"]), []).append(row)
        for period_rows in (by_period[p] for p in sorted(by_period)):
            serving = next((row["strategy"] for row in period_rows if row["serving"]), period_rows[0]["strategy"])
            self._observe_rows(period_rows, serving, closed_at)
        self._observe_progress(t, n_users, n_items)
        self.swaps.inc(swaps)

    def _observe_progress(self, t: int, n_users: int, n_items: int) -> None:
        self.period_index.set(t)
        self.model_users.set(n_users)
        self.model_items.set(n_items)

    def _observe_rows(self, rows: list[dict], serving: str, closed_at: float | None) -> None:
        first = rows[0]  # the period's counts are the same in every strategy's row
        self.period_interactions.set(first["n_interactions"])
        self.period_new_users.set(first["n_new_users"])
        self.period_new_items.set(first["n_new_items"])
        for row in rows:
            name = row["strategy"]
            self._last_ndcg[name] = {}
            for column, value in row.items():
                match = _METRIC_COLUMN.fullmatch(column)
                if match is None:
                    continue
                metric, k, segment = match.groups()
                if segment is not None:
                    _set_finite(self.segment_ndcg, (name, segment, k), value)
                elif metric == "recall":
                    _set_finite(self.recall, (name, k), value)
                else:
                    self._last_ndcg[name][k] = value
                    _set_finite(self.ndcg, (name, k), value)
                    if name == serving:
                        _set_finite(self.serving_ndcg, (k,), value)
            self.retrain.labels(name).observe(row["retrain_seconds"])
            self.retrain_last.labels(name).set(row["retrain_seconds"])
            self.eval.labels(name).observe(row["eval_seconds"])
            self.eval_last.labels(name).set(row["eval_seconds"])
            # rows of a checkpoint written before the health columns have none
            self.nonfinite_rows.labels(name).set(row.get("nonfinite_rows", 0))
            _set_finite(self.max_row_norm, (name,), row.get("max_row_norm", math.nan))
            self.norm_warnings.labels(name).inc(row.get("norm_warning", 0))
        names = [row["strategy"] for row in rows]
        self._count_below_fine_tune(names)
        self.set_serving(serving, names, swapped=False)
        if closed_at is not None:
            self.last_retrain.set(closed_at)

    def _count_below_fine_tune(self, names: list[str]) -> None:
        """Streaks of the strategies of the period just closed, counted at every close, so
        the SmlBelowFineTune alert does not depend on a scrape having caught the periods in
        between. An empty period (NaN) leaves a streak as it was."""
        if "fine_tune" not in names:
            return
        baseline = self._last_ndcg["fine_tune"]
        top = max(baseline, key=int)
        for name in names:
            ndcg = self._last_ndcg[name]
            if name == "fine_tune" or math.isnan(ndcg.get(top, math.nan)) or math.isnan(baseline[top]):
                continue
            self._below[name] = self._below.get(name, 0) + 1 if ndcg[top] < baseline[top] else 0
            self.below_fine_tune.labels(name).set(self._below[name])

    def observe_ingest(self, consumed: int, rejected: Mapping[str, int], late: int, outside: int) -> None:
        """Cumulative ingest totals since the stream started (events outside the schedule
        among `rejected` too); counters advance by the difference."""
        self._consumed.total(consumed)
        self._ingested.total(consumed + outside)
        self._late.total(late)
        for reason, total in rejected.items():
            if total and reason not in self._rejected:
                self._rejected[reason] = CounterFeed(self.rejected.labels(reason))
            if reason in self._rejected:
                self._rejected[reason].total(total)

    def set_serving(self, strategy: str, strategies: list[str], swapped: bool) -> None:
        """Mark `strategy` as served among `strategies`; count a swap when it replaced another."""
        for name in strategies:
            self.serving.labels(name).set(1 if name == strategy else 0)
        if swapped:
            self.swaps.inc()
            # the serving quality switches with the swap, not at the next period
            for k, value in self._last_ndcg.get(strategy, {}).items():
                _set_finite(self.serving_ndcg, (k,), value)
