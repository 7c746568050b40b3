"""Metric exporters: the exposed names are an interface, and values are what was observed."""

from __future__ import annotations

import math
import re
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from learner.engine import StrategyResult
from learner.evaluation import PeriodMetrics
from learner.exposition import RunLabels
from learner.health import TableHealth
from learner.metrics import METRIC_NAMES, LearnerMetrics, MetricsPortInUse, serve
from learner.results import as_row
from simulator.metrics import METRIC_NAMES as PRODUCER_METRIC_NAMES
from simulator.metrics import ProducerMetrics, period_wall_seconds
from simulator.producer import ReplayStats


def documented_names() -> set[str]:
    """The names in the first column of the learner's and the producer's tables in
    docs/architecture.md, "Metrics and alerts": dashboards and alerts depend on exactly
    these, and the document must list what is exported."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text()
    section = text[text.index("### Metrics and alerts") : text.index("Sweep metrics (")]
    rows = (line.split("|")[1] for line in section.splitlines() if line.startswith("| `rtsim_"))
    return {name for cell in rows for name in re.findall(r"`(rtsim_\w+)`", cell)}


DESIGN_NAMES = documented_names()


EDGES = [0, 36_000, 61_200, 97_200]
RUN = RunLabels("r1", "tiny", "memory")


def result(t: int, strategy: str, serving: bool, ndcg10: float, retrain: float) -> dict:
    """A periods.csv row, as the learner passes it to its metrics."""
    segments = {"OU-OI": ndcg10 + 0.06, "OU-NI": 0.01, "NU-OI": 0.02, "NU-NI": math.nan}
    metrics = PeriodMetrics(
        n=200,
        recall={5: ndcg10 + 0.1, 10: ndcg10 + 0.2, 20: ndcg10 + 0.3},
        ndcg={5: ndcg10 - 0.05, 10: ndcg10, 20: ndcg10 + 0.05},
        segment_ndcg={5: {**segments, "OU-OI": ndcg10}, 10: segments, 20: segments},
    )
    return as_row(
        StrategyResult(
            period=t,
            phase="online",
            strategy=strategy,
            serving=serving,
            n_interactions=200,
            n_new_users=7 + t,
            n_new_items=3,
            n_candidates=1000.0,
            metrics=metrics,
            retrain_seconds=retrain,
            eval_seconds=0.25 + t,
            health=TableHealth(0, 1.5 + t),
            guard_warning=False,
        )
    )


class Exporter:
    """A served registry and its scrapes, parsed."""

    def __init__(self, registry) -> None:
        self.server, self.port = serve(registry)

    def text(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as response:
            return response.read().decode()

    def samples(self) -> dict[tuple[str, frozenset], float]:
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(self.text())
            for s in family.samples
        }

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def learner():
    metrics = LearnerMetrics()  # no run: series without run_id, as in most of these tests
    exporter = Exporter(metrics.registry)
    yield metrics, exporter
    exporter.close()


@pytest.fixture
def producer():
    metrics = ProducerMetrics(EDGES)
    exporter = Exporter(metrics.registry)
    yield metrics, exporter
    exporter.close()


def value(samples, name: str, **labels) -> float:
    return samples[(name, frozenset(labels.items()))]


def exposed_names(text: str) -> set[str]:
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def test_exposed_families_are_exactly_the_design_list():
    lm, pm = LearnerMetrics(RUN), ProducerMetrics(EDGES, RUN)
    lx, px = Exporter(lm.registry), Exporter(pm.registry)
    lm.observe_period(3, [result(3, "sml", True, 0.3, 1.5), result(3, "fine_tune", False, 0.2, 0.1)], "sml", 500, 300)
    lm.observe_ingest(1000, {"bad_json": 2}, 1, 5)
    pm.observe(ReplayStats(produced=1000, event_time=40_000, speed=3600.0))
    texts = [lx.text(), px.text()]
    lx.close(), px.close()
    assert set(METRIC_NAMES) | set(PRODUCER_METRIC_NAMES) == DESIGN_NAMES
    assert exposed_names(texts[0]) == set(METRIC_NAMES)
    assert exposed_names(texts[1]) == set(PRODUCER_METRIC_NAMES)
    families = [f for text in texts for f in text_string_to_metric_families(text)]
    # the parser names a counter family without its _total suffix
    assert {f.name + "_total" if f.type == "counter" else f.name for f in families} == DESIGN_NAMES
    for family in families:
        assert family.documentation, family.name
        assert all("period" not in s.labels for s in family.samples), family.name
        # every series names its run, so one Prometheus tells runs apart
        assert all(s.labels["run_id"] == "r1" for s in family.samples), family.name
    info = [s.labels for f in families if f.name == "rtsim_run_info" for s in f.samples]
    assert info == [{"run_id": "r1", "preset": "tiny", "bus": "memory"}] * 2


def test_nothing_measured_yet_is_absent_not_zero(learner, producer):
    """Before the first online period there are no counts, no retrain time and no speed at
    max: a 0 would read as a measurement (and a period wall time of 0 fires alerts)."""
    (_, lx), (pm, px) = learner, producer
    names = {name for name, _ in lx.samples()}
    assert not names & {
        "rtsim_period_index",
        "rtsim_period_interactions",
        "rtsim_period_new_users",
        "rtsim_period_new_items",
        "rtsim_last_retrain_timestamp_seconds",
        "rtsim_events_rejected_total",
        "rtsim_model_users",
    }, names
    pm.observe(ReplayStats(produced=0, speed=None))  # speed max
    samples = px.samples()
    assert not {name for name, _ in samples} & {
        "rtsim_replay_speed",
        "rtsim_period_wall_seconds",
        "rtsim_replay_event_time_seconds",
    }
    assert value(samples, "rtsim_replay_paused") == 0


def test_period_values_are_what_was_observed(learner):
    metrics, exporter = learner
    metrics.observe_period(1, [], "sml", 100, 80)  # a pretrain period: no results yet
    samples = exporter.samples()
    assert value(samples, "rtsim_period_index") == 1
    assert value(samples, "rtsim_model_users") == 100
    assert not any(name.startswith(("rtsim_next_period", "rtsim_retrain")) for name, _ in samples)

    before = time.time()
    metrics.observe_period(
        4, [result(4, "sml", True, 0.30, 2.0), result(4, "fine_tune", False, 0.20, 0.5)], "sml", 500, 300
    )
    metrics.observe_period(
        5, [result(5, "sml", True, 0.35, 3.0), result(5, "fine_tune", False, 0.25, 0.7)], "sml", 520, 310
    )
    samples = exporter.samples()
    assert value(samples, "rtsim_next_period_ndcg", strategy="sml", k="10") == pytest.approx(0.35)
    assert value(samples, "rtsim_next_period_ndcg", strategy="fine_tune", k="5") == pytest.approx(0.20)
    assert value(samples, "rtsim_next_period_recall", strategy="fine_tune", k="20") == pytest.approx(0.55)
    assert value(samples, "rtsim_segment_ndcg", strategy="sml", segment="OU-OI", k="20") == pytest.approx(0.41)
    # every k, not only the largest
    assert value(samples, "rtsim_segment_ndcg", strategy="sml", segment="OU-OI", k="5") == pytest.approx(0.35)
    # an empty segment is absent rather than NaN
    assert ("rtsim_segment_ndcg", frozenset({"strategy": "sml", "segment": "NU-NI", "k": "20"}.items())) not in samples
    assert all(not math.isnan(v) for v in samples.values())
    assert value(samples, "rtsim_retrain_duration_seconds_count", strategy="sml") == 2
    assert value(samples, "rtsim_retrain_duration_seconds_sum", strategy="sml") == pytest.approx(5.0)
    assert value(samples, "rtsim_retrain_duration_seconds_bucket", strategy="fine_tune", le="1.0") == 2
    assert value(samples, "rtsim_retrain_last_duration_seconds", strategy="sml") == pytest.approx(3.0)
    assert value(samples, "rtsim_eval_last_duration_seconds", strategy="fine_tune") == pytest.approx(5.25)
    assert value(samples, "rtsim_eval_duration_seconds_count", strategy="fine_tune") == 2
    assert value(samples, "rtsim_eval_duration_seconds_sum", strategy="fine_tune") == pytest.approx(9.5)
    assert value(samples, "rtsim_serving_strategy", strategy="sml") == 1
    assert value(samples, "rtsim_serving_strategy", strategy="fine_tune") == 0
    assert value(samples, "rtsim_serving_ndcg", k="10") == pytest.approx(0.35)
    assert value(samples, "rtsim_period_index") == 5
    assert value(samples, "rtsim_period_interactions") == 200
    assert value(samples, "rtsim_period_new_users") == 12
    assert value(samples, "rtsim_period_new_items") == 3
    assert value(samples, "rtsim_model_users") == 520
    assert value(samples, "rtsim_periods_below_fine_tune", strategy="sml") == 0  # above in period 5
    assert value(samples, "rtsim_model_items") == 310
    assert before <= value(samples, "rtsim_last_retrain_timestamp_seconds") <= time.time()


def test_swaps_count_only_swaps_and_serving_is_one_hot(learner):
    metrics, exporter = learner
    strategies = ["sml", "fine_tune", "spmf"]
    metrics.set_serving("sml", strategies, swapped=False)
    metrics.set_serving("sml", strategies, swapped=False)
    assert value(exporter.samples(), "rtsim_strategy_swaps_total") == 0
    metrics.set_serving("spmf", strategies, swapped=True)
    samples = exporter.samples()
    assert value(samples, "rtsim_strategy_swaps_total") == 1
    assert {s: value(samples, "rtsim_serving_strategy", strategy=s) for s in strategies} == {
        "sml": 0,
        "fine_tune": 0,
        "spmf": 1,
    }
    # the new serving strategy's quality is what rtsim_serving_ndcg shows from then on
    metrics.observe_period(6, [result(6, "sml", False, 0.4, 1.0), result(6, "spmf", True, 0.1, 1.0)], "spmf", 10, 10)
    samples = exporter.samples()
    assert value(samples, "rtsim_serving_ndcg", k="10") == pytest.approx(0.1)
    assert value(samples, "rtsim_strategy_swaps_total") == 1


def test_periods_below_fine_tune_are_counted_at_every_close(learner):
    """The streak SmlBelowFineTune alerts on, counted by the learner whatever Prometheus
    scrapes in between; an empty period (NaN) keeps it; above fine_tune resets it."""
    metrics, exporter = learner

    def close(t: int, sml: float, fine_tune: float = 0.3) -> float:
        metrics.observe_period(
            t, [result(t, "sml", True, sml, 1.0), result(t, "fine_tune", False, fine_tune, 1.0)], "sml", 10, 10
        )
        return value(exporter.samples(), "rtsim_periods_below_fine_tune", strategy="sml")

    assert [close(2, 0.3), close(3, 0.2), close(4, 0.1), close(5, math.nan), close(6, 0.2)] == [0, 1, 2, 2, 3]
    assert close(7, 0.4) == 0
    assert ("rtsim_periods_below_fine_tune", frozenset({"strategy": "fine_tune"}.items())) not in exporter.samples()


def test_ingest_counters_advance_by_deltas_and_never_decrease(learner):
    metrics, exporter = learner
    metrics.observe_ingest(100, {"bad_json": 1, "after_schedule": 0}, 0, 0)
    metrics.observe_ingest(250, {"bad_json": 3, "before_schedule": 2, "after_schedule": 0}, 4, 10)
    samples = exporter.samples()
    assert value(samples, "rtsim_events_consumed_total") == 250
    assert value(samples, "rtsim_events_rejected_total", reason="bad_json") == 3
    assert value(samples, "rtsim_events_rejected_total", reason="before_schedule") == 2
    assert value(samples, "rtsim_events_late_total") == 4
    assert value(samples, "rtsim_events_ingested_total") == 260  # consumed + outside the schedule
    # a reason that never happened is absent, not 0
    assert ("rtsim_events_rejected_total", frozenset({"reason": "after_schedule"}.items())) not in samples
    # a source that restarts its count (a resumed stream): the counter goes on from where it was
    metrics.observe_ingest(30, {"bad_json": 3}, 4, 0)
    assert value(exporter.samples(), "rtsim_events_consumed_total") == 280


def test_producer_values(producer):
    metrics, exporter = producer
    metrics.observe(ReplayStats(produced=5000, event_time=40_000, speed=3600.0))
    samples = exporter.samples()
    assert value(samples, "rtsim_replay_speed") == 3600
    assert value(samples, "rtsim_period_wall_seconds") == 7.0  # period 1: 25,200 s of log
    # `rtsim ctl speed 7200` then `pause`: the period's wall time follows the new speed
    metrics.observe(ReplayStats(produced=5000, event_time=40_000, speed=7200.0, paused=True))
    samples = exporter.samples()
    assert value(samples, "rtsim_period_wall_seconds") == 3.5
    assert value(samples, "rtsim_replay_paused") == 1
    metrics.observe(ReplayStats(produced=8000, event_time=70_000, speed=None))
    samples = exporter.samples()
    assert value(samples, "rtsim_events_produced_total") == 8000
    assert value(samples, "rtsim_replay_event_time_seconds") == 70_000
    assert value(samples, "rtsim_replay_paused") == 0
    # speed max: no speed and no period wall time, rather than a 0 that reads as "0x" or "0 s"
    assert not {name for name, _ in samples} & {"rtsim_replay_speed", "rtsim_period_wall_seconds"}


def test_period_wall_seconds():
    assert period_wall_seconds(EDGES, 40_000, 3600.0) == 7.0
    assert period_wall_seconds(EDGES, -5, 3600.0) == 10.0  # before the first event: period 0
    assert period_wall_seconds(EDGES, 10**9, 3600.0) == 10.0  # after the last: the last period
    assert period_wall_seconds(EDGES, 0, None) is None


def test_a_resumed_run_continues_its_counts(learner):
    """After a resume the metrics continue from the checkpoint's rows and swap count: the
    period index, swaps, retrain histograms and the last NDCG are there before the next close."""
    metrics, exporter = learner
    rows = [
        result(4, "sml", True, 0.3, 2.0),
        result(4, "fine_tune", False, 0.2, 0.5),
        result(5, "sml", False, 0.35, 3.0),
        result(5, "fine_tune", True, 0.25, 0.7),
    ]
    metrics.restore(6, rows, 520, 310, swaps=1, closed_at=1234.0)
    samples = exporter.samples()
    assert value(samples, "rtsim_period_index") == 6  # a pretrain-free period closed after 5
    assert value(samples, "rtsim_strategy_swaps_total") == 1
    assert value(samples, "rtsim_retrain_duration_seconds_count", strategy="sml") == 2
    assert value(samples, "rtsim_retrain_duration_seconds_sum", strategy="sml") == pytest.approx(5.0)
    assert value(samples, "rtsim_next_period_ndcg", strategy="sml", k="10") == pytest.approx(0.35)
    assert value(samples, "rtsim_serving_ndcg", k="10") == pytest.approx(0.25)  # fine_tune served in 5
    assert value(samples, "rtsim_serving_strategy", strategy="fine_tune") == 1
    assert value(samples, "rtsim_last_retrain_timestamp_seconds") == 1234.0
    assert value(samples, "rtsim_model_users") == 520
    assert value(samples, "rtsim_periods_below_fine_tune", strategy="sml") == 0  # above in period 5


def test_a_taken_port_names_the_port_and_the_option(learner):
    _, exporter = learner
    with pytest.raises(MetricsPortInUse, match=rf"port {exporter.port} .*--metrics-port"):
        serve(LearnerMetrics().registry, port=exporter.port)
