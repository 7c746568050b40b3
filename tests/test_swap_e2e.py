"""Runtime control of a live `rtsim run`, end to end: a serving swap mid-run over HTTP and over
the Kafka control topic, enabling a strategy mid-run, and pausing and re-pacing the replay.

Each test but the last drives a real `rtsim run --preset tiny` subprocess, paced so the replay
takes about 16 s of wall time, and acts through the addresses the run lists in its
endpoints.json. The last one injects requests into the middle of a period's retraining.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.error import HTTPError
from urllib.request import ProxyHandler, Request, build_opener

import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from simulator.bus import wire

pytestmark = pytest.mark.slow

# tiny: 8 periods over ~65 h of event time; at this speed the replay takes ~16 s and the
# online periods close ~1.7-2.4 s apart. Where an action lands is read from the answers, so a
# slower machine shifts the periods involved, not the verdict.
SPEED = 15000
PERIODS = 8
ONLINE = list(range(2, PERIODS))  # periods 0-1 pretrain: no rows
RUN_TIMEOUT_S = 180
METRIC_COLUMNS_PREFIXES = ("recall@", "ndcg@")

_opener = build_opener(ProxyHandler({}))  # 127.0.0.1 never goes through an environment proxy


def http(url: str, method: str = "GET", body: object = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with _opener.open(request, timeout=15) as answer:
            return answer.status, json.loads(answer.read())
    except HTTPError as err:
        return err.code, json.loads(err.read())


def scrape(url: str) -> dict[str, list[tuple[dict, float]]]:
    """Every sample of a metrics endpoint: sample name -> [(labels, value)]."""
    with _opener.open(url, timeout=15) as answer:
        text = answer.read().decode()
    samples: dict[str, list[tuple[dict, float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def single(samples: dict, name: str) -> float:
    [(labels, value)] = samples[name]
    assert set(labels) == {"run_id"}, f"{name} carries labels {labels}"
    return value


def poll(condition, timeout_s: float, what: str, interval_s: float = 0.1):
    """condition()'s first truthy value; fails naming `what` after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout_s:.0f} s waiting for {what}"
        time.sleep(interval_s)


def eventually(check, timeout_s: float = 10.0) -> None:
    """Run `check` until it passes (a period closing mid-scrape may show half an update)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            check()
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def ctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "simulator.cli", "ctl", *args], env=_env(), capture_output=True, text=True, timeout=60
    )


def _env() -> dict[str, str]:
    """No token or default URLs from the caller's shell: the tests talk to their own run."""
    hidden = ("RTSIM_CONTROL_TOKEN", "RTSIM_CONTROL_URL", "RTSIM_PRODUCER_URL")
    return {k: v for k, v in os.environ.items() if k not in hidden}


class LiveRun:
    """A `rtsim run` subprocess; stdout and stderr go to files in its runs directory."""

    def __init__(self, runs_dir: Path, data_dir: str, run_id: str, args: tuple[str, ...]) -> None:
        self.run_id = run_id
        self.path = runs_dir / run_id
        runs_dir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = runs_dir / f"{run_id}.stdout"
        self.stderr_path = runs_dir / f"{run_id}.stderr"
        with open(self.stdout_path, "w") as out, open(self.stderr_path, "w") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "simulator.cli",
                    "run",
                    "--preset",
                    "tiny",
                    "--speed",
                    str(SPEED),
                    "--runs-dir",
                    str(runs_dir),
                    "--run-id",
                    run_id,
                    "--data-dir",
                    data_dir,
                    "--no-progress",
                    *args,
                ],
                stdout=out,
                stderr=err,
                env=_env(),
            )

    @property
    def output(self) -> str:
        return self.stdout_path.read_text() + self.stderr_path.read_text()

    def endpoints(self, timeout_s: float = 60.0) -> dict:
        def read():
            self._alive()
            try:
                return json.loads((self.path / "endpoints.json").read_text())
            except (FileNotFoundError, ValueError):  # not written yet, or half written
                return None

        return poll(read, timeout_s, "endpoints.json")

    def closed_periods(self) -> list[int]:
        """Periods with complete rows in periods.csv so far (safe while the run appends)."""
        try:
            lines = (self.path / "periods.csv").read_text().splitlines(keepends=True)[1:]
        except FileNotFoundError:
            return []
        return sorted({int(line.split(",", 1)[0]) for line in lines if line.endswith("\n")})

    def wait_for_an_online_period(self, timeout_s: float = 90.0) -> list[int]:
        def closed():
            self._alive()
            return self.closed_periods()

        return poll(closed, timeout_s, "the first online period to close")

    def finish(self, timeout_s: float = RUN_TIMEOUT_S) -> pd.DataFrame:
        """Wait for a clean exit; the run's periods.csv."""
        try:
            rc = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"rtsim run {self.run_id} did not finish within {timeout_s} s:\n{self.output[-3000:]}")
        assert rc == 0, f"rtsim run {self.run_id} exited {rc}:\n{self.output[-3000:]}"
        return pd.read_csv(self.path / "periods.csv")

    def _alive(self) -> None:
        rc = self.proc.poll()
        if rc is not None:
            pytest.fail(f"rtsim run {self.run_id} ended early (exit {rc}):\n{self.output[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    """The tiny log prepared once, so every run finds it cached."""
    from replay_data.prepared import prepare
    from simulator.config import resolve

    root = tmp_path_factory.mktemp("prepared")
    prepare(resolve("tiny").data, root, progress=False)
    return str(root)


@pytest.fixture
def start_run(tmp_path, data_dir):
    runs: list[LiveRun] = []

    def start(run_id: str, *args: str) -> LiveRun:
        run = LiveRun(tmp_path / "runs", data_dir, run_id, args)
        runs.append(run)
        return run

    yield start
    for run in runs:  # a failed test leaves no process behind
        run.stop()


def serving_by_period(frame: pd.DataFrame) -> dict[int, str]:
    """The one serving strategy of each period (fails if a period has none or several)."""
    serving = {}
    for period, rows in frame.groupby("period"):
        names = rows.loc[rows["serving"] == 1, "strategy"].tolist()
        assert len(names) == 1, f"period {period} has serving strategies {names}"
        serving[int(period)] = names[0]
    return serving


def assert_swapped_at(frame: pd.DataFrame, first: int) -> None:
    """sml served every period before `first`, fine_tune every period from it on."""
    serving = serving_by_period(frame)
    assert sorted(serving) == ONLINE
    expected = {t: "sml" if t < first else "fine_tune" for t in ONLINE}
    assert serving == expected
    assert "sml" in serving.values() and "fine_tune" in serving.values()


def test_a_swap_over_http_mid_run_shows_in_metrics_periods_and_log(start_run):
    run = start_run("swap-http")
    learner = run.endpoints()["learner"]
    closed = run.wait_for_an_online_period()
    done = ctl("--url", learner["control"], "serve", "fine_tune")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["serving"] == "fine_tune" and answer["swapped"] is True and answer["state"]["swaps"] == 1
    # a swap takes effect at once: the period being filled is the first fine_tune serves
    first = answer["state"]["next_period"]
    assert max(closed) < first < PERIODS, f"swapped as period {first} was filling: lower SPEED"

    def metrics_show_the_swap() -> None:
        samples = scrape(learner["metrics"])
        serving = {labels["strategy"]: value for labels, value in samples["rtsim_serving_strategy"]}
        assert serving.pop("fine_tune") == 1 and "sml" in serving and set(serving.values()) == {0}
        assert single(samples, "rtsim_strategy_swaps_total") == 1
        fine_tune = {
            labels["k"]: value
            for labels, value in samples["rtsim_next_period_ndcg"]
            if labels["strategy"] == "fine_tune"
        }
        served = {labels["k"]: value for labels, value in samples["rtsim_serving_ndcg"]}
        assert sorted(served, key=int) == ["5", "10", "20"] and served == fine_tune

    eventually(metrics_show_the_swap)
    frame = run.finish()
    assert_swapped_at(frame, first)
    assert set(frame["strategy"]) == {"sml", "sml_s", "fine_tune", "full_retrain", "spmf"}
    assert "control: serve fine_tune -> serving fine_tune" in run.stdout_path.read_text()


def _results(bootstrap: str, prefix: str) -> list[dict]:
    """Every record on <prefix>.results, read from the beginning to the end offsets."""
    from simulator.bus.kafka import KafkaBus

    bus = KafkaBus(bootstrap)
    try:
        consumer = bus.consumer(wire.results_topic(prefix), group=f"swap-check-{uuid.uuid4().hex}")
        try:
            end, records = consumer.end_offsets(), []
            deadline = time.monotonic() + 60
            while consumer.positions() != end:
                assert time.monotonic() < deadline, "the results topic was not read to its end in 60 s"
                records += [json.loads(m.value) for m in consumer.poll(1.0)]
            return records
        finally:
            consumer.close()
    finally:
        bus.close()


@pytest.mark.kafka
def test_a_swap_over_the_kafka_control_topic_mid_run(start_run, kafka_bootstrap):
    prefix = f"swap{uuid.uuid4().hex[:10]}"
    bus = f"kafka://{kafka_bootstrap}"
    run = start_run("swap-kafka", "--bus", bus, "--set", f"bus.prefix={prefix}")
    control = run.endpoints()["learner"]["control"]
    closed = run.wait_for_an_online_period()
    before = http(control + "/status")[1]["next_period"]
    done = ctl("--bus", bus, "--prefix", prefix, "--run-id", run.run_id, "serve", "fine_tune")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["published"]["run_id"] == run.run_id

    def swapped():
        status = http(control + "/status")[1]
        return status if status["serving"] == "fine_tune" else None

    status = poll(swapped, 30, "the learner to apply the command from the control topic")
    assert status["swaps"] == 1
    after = status["next_period"]
    assert max(closed) < before <= after < PERIODS, f"swapped as period {after} was filling: lower SPEED"
    frame = run.finish()
    first = min(t for t, name in serving_by_period(frame).items() if name == "fine_tune")
    assert before <= first <= after  # the topic's delivery time decides which period, no later
    assert_swapped_at(frame, first)
    assert "control: serve fine_tune -> serving fine_tune" in run.stdout_path.read_text()

    mine = [r for r in _results(kafka_bootstrap, prefix) if r["run_id"] == run.run_id]
    keys = [(r["period"], r["strategy"]) for r in mine]
    assert len(keys) == len(set(keys)), "a (period, strategy) was published twice"
    from_topic = {(r["period"], r["strategy"]): r["serving"] for r in mine}
    from_csv = {(int(p), s): int(v) for p, s, v in frame[["period", "strategy", "serving"]].itertuples(index=False)}
    assert from_topic == from_csv


def _strategies(control: str) -> dict[str, dict]:
    status, answer = http(control + "/strategies")
    assert status == 200, answer
    return {s["name"]: s for s in answer["strategies"]}


def test_enabling_a_strategy_mid_run_starts_it_warm_at_the_next_boundary(start_run):
    run = start_run(
        "enable", "--set", "learner.strategies.enabled=[sml,fine_tune]", "--set", "learner.strategies.serving=fine_tune"
    )
    control = run.endpoints()["learner"]["control"]
    closed = run.wait_for_an_online_period()
    assert not _strategies(control)["spmf"]["enabled"]
    status, answer = http(control + "/strategies/spmf", "POST")
    assert status == 202 and answer["action"] == "enable" and answer["from_serving"] is False
    filling = answer["state"]["next_period"]  # spmf starts as this period closes
    assert answer["takes_effect"] == f"when period {filling} closes"
    assert max(closed) < filling < PERIODS - 1, f"enabled as period {filling} was filling: lower SPEED"
    spmf = _strategies(control)["spmf"]
    assert (spmf["enabled"], spmf["started"], spmf["pending"]) == (False, False, ["enable"])

    spmf = poll(lambda: (s := _strategies(control)["spmf"])["enabled"] and s, 60, "spmf to be enabled")
    assert spmf["started"] is True and spmf["pending"] == [] and spmf["serving"] is False
    frame = run.finish()

    periods = {name: sorted(rows["period"]) for name, rows in frame.groupby("strategy")}
    assert periods == {"sml": ONLINE, "fine_tune": ONLINE, "spmf": list(range(filling + 1, PERIODS))}
    assert set(serving_by_period(frame).values()) == {"fine_tune"}
    # warm start: spmf's first served model is the serving model handed over at the boundary,
    # so it scores exactly as fine_tune does on that period
    first = frame[frame["period"] == filling + 1].set_index("strategy")
    metric_columns = [c for c in frame.columns if c.startswith(METRIC_COLUMNS_PREFIXES)]
    assert np.array_equal(
        first.loc["spmf", metric_columns].to_numpy(float),
        first.loc["fine_tune", metric_columns].to_numpy(float),
        equal_nan=True,
    )


def test_pause_resume_and_speed_through_the_producer_api(start_run):
    # one cheap strategy: the learner only has to keep up
    run = start_run(
        "pace", "--set", "learner.strategies.enabled=[fine_tune]", "--set", "learner.strategies.serving=fine_tune"
    )
    producer = run.endpoints()["producer"]
    control, metrics = producer["control"], producer["metrics"]

    def produced() -> float:
        return single(scrape(metrics), "rtsim_events_produced_total")

    poll(lambda: produced() > 0, 60, "the first events to be produced")
    assert single(scrape(metrics), "rtsim_replay_speed") == SPEED
    assert single(scrape(metrics), "rtsim_replay_paused") == 0
    assert single(scrape(metrics), "rtsim_period_wall_seconds") > 0

    status, answer = http(control + "/pause", "POST")
    assert status == 200 and answer["paused"] is True
    assert single(scrape(metrics), "rtsim_replay_paused") == 1
    # a block already under way may still go out: wait for the count to settle
    last = [produced()]

    def settled():
        time.sleep(0.3)
        now = produced()
        same, last[0] = now == last[0], now
        return same

    poll(settled, 10, "the producer to stop after pausing", interval_s=0)
    held = last[0]
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        assert produced() == held, "events were produced while paused"
        time.sleep(0.2)
    status, answer = http(control + "/status")
    assert answer["paused"] is True and answer["produced"] == held < answer["n_events"]

    status, answer = http(control + "/resume", "POST")
    assert status == 200 and answer["paused"] is False
    poll(lambda: produced() > held, 10, "events to flow again after resuming")
    assert single(scrape(metrics), "rtsim_replay_paused") == 0

    status, answer = http(control + "/speed", "PUT", {"speed": 2 * SPEED})
    assert status == 200 and answer["speed"] == 2 * SPEED
    poll(lambda: single(scrape(metrics), "rtsim_replay_speed") == 2 * SPEED, 10, "rtsim_replay_speed to change")
    status, answer = http(control + "/speed", "PUT", {"speed": "max"})  # and the rest goes at once
    assert status == 200 and answer["speed"] == "max"
    # speed max has no number and a period no wall time: absent, not 0
    assert not {"rtsim_replay_speed", "rtsim_period_wall_seconds"} & set(scrape(metrics))
    frame = run.finish()
    assert sorted(set(frame["period"])) == ONLINE
    # nothing was lost to the pause: every event reached a period
    counts = re.findall(r"^period +\d+ +\w+ +(\d+) events", run.stdout_path.read_text(), re.MULTILINE)
    assert len(counts) == PERIODS and sum(map(int, counts)) == answer["n_events"]


def test_requests_made_while_a_period_closes_take_effect_as_answered(data_dir):
    """A swap and an enable arriving mid-retrain (where a learner at scale spends its time): the
    closing period keeps the strategy that served it, the metrics keep the swap once the period
    is recorded, and the enable waits for the period its answer names."""
    from learner.engine import Engine
    from learner.metrics import LearnerMetrics
    from replay_data.prepared import prepare
    from simulator.bus.memory import MemoryBus
    from simulator.config import resolve
    from simulator.control import LearnerCommands
    from simulator.producer import ReplayProducer
    from simulator.run import replay_settings
    from simulator.stream import StreamLearner

    cfg = resolve("tiny", overrides=["learner.strategies.enabled=[sml,fine_tune]", "learner.strategies.serving=sml"])
    log, _ = prepare(cfg.data, data_dir, progress=False)
    bus = MemoryBus()
    producer = ReplayProducer(bus, log, "mid-close", replay_settings(cfg, "tiny"))
    manifest = producer.publish_manifest()
    producer.run()
    engine, metrics = Engine(cfg.learner, manifest["phases"]), LearnerMetrics()
    metrics.set_serving(engine.serving, engine.enabled, swapped=False)

    def on_change(event: dict) -> None:  # as `rtsim run` wires it
        state = event["state"]
        metrics.set_serving(
            state["serving"],
            sorted(set(state["enabled"]) | set(state["disabled"])),
            swapped=event["command"] == "serve",
        )

    commands, answers = LearnerCommands(engine, on_change=on_change), {}
    close = engine.close_period

    def close_with_requests_mid_retrain(t, events):
        if t == 3:
            sml = engine.strategies["sml"]
            retrain = sml.retrain

            def retrain_after_requests(period):
                sml.retrain = retrain
                answers["serve"] = commands.apply("serve", {"strategy": "fine_tune"})
                answers["enable"] = commands.apply("enable", {"strategy": "spmf"})
                return retrain(period)

            sml.retrain = retrain_after_requests
        return close(t, events)

    engine.close_period = close_with_requests_mid_retrain
    rows, after_3 = [], {}

    def on_period(t, phase, n_events, results):
        rows.extend((r.period, r.strategy, int(r.serving)) for r in results)
        if t == 3:
            value = metrics.registry.get_sample_value
            after_3.update(
                serving={s: value("rtsim_serving_strategy", {"strategy": s}) for s in ("sml", "fine_tune")},
                served=value("rtsim_serving_ndcg", {"k": "20"}),
                fine_tune=value("rtsim_next_period_ndcg", {"strategy": "fine_tune", "k": "20"}),
            )

    StreamLearner(bus, engine, manifest, prefix=cfg.bus.prefix, on_period=on_period, metrics=metrics).run()
    assert answers["serve"]["state"]["next_period"] == 4
    assert answers["enable"]["takes_effect"] == "when period 4 closes"
    assert after_3 == {
        "serving": {"sml": 0, "fine_tune": 1},
        "served": after_3["fine_tune"],
        "fine_tune": after_3["fine_tune"],
    }
    frame = pd.DataFrame(rows, columns=["period", "strategy", "serving"])
    assert serving_by_period(frame) == {
        2: "sml",
        3: "sml",
        4: "fine_tune",
        5: "fine_tune",
        6: "fine_tune",
        7: "fine_tune",
    }
    assert sorted(frame.loc[frame["strategy"] == "spmf", "period"]) == [5, 6, 7]
