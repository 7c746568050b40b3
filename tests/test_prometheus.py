"""The dashboards against a real Prometheus scraping a real run: every panel shows data.

tests/test_dashboards.py checks the dashboard JSON and rules statically (promtool parses
every query). This module runs what they describe: a tiny replay over the session's Kafka
broker (`rtsim run --keep-serving`, paced so the periods close while Prometheus watches),
with a strategy swap, late events and malformed records injected mid-run, scraped by
Prometheus 2.42 started on the project's own config and rule files (rewritten for the test:
1 s scrape and evaluation, the run's free ports as targets, absolute rule paths). Then:

- every panel target and annotation query of every dashboard, with its template variables
  substituted as Grafana would, returns at least one series: a range query over the run for
  time-series targets and annotations, an instant query for instant (table/stat) targets.
  A query that returns nothing fails the test with the panel title and the query;
- every recording rule's series exists, and every rule (recording and alerting) is healthy.

Without `prometheus` the test skips, except in CI (CI=true), where it fails. The alert
rules' unit tests (promtool test rules) run in tests/test_dashboards.py.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import urlencode, urlsplit
from urllib.request import ProxyHandler, build_opener

import pytest
import yaml

from simulator.bus import wire
from simulator.kafka_local import free_port
from tests.ci import unavailable

# about 65 s here (about 6 s of it starting the session's Kafka broker)
pytestmark = [pytest.mark.prometheus, pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = ROOT / "dashboards" / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
DASHBOARD_FILES = sorted((ROOT / "dashboards" / "grafana" / "dashboards").glob("*.json"))

# Event-time seconds per wall second. The tiny log spans about 65 hours, so the replay takes
# about 33 s; a period lasts 3 to 5 s of wall time, several 1 s scrapes and evaluations.
SPEED = 7200
SCRAPE_S = 1
# The scrape jobs of dashboards/prometheus/prometheus.yml by their `service` label, and the
# side of endpoints.json that serves each.
SERVICE_SIDE = {"learner": "learner", "replay": "producer"}
SWEEP_JOB = ("rtsim-sweep", "sweep")  # simulator/targets.py, SIDES["sweep"]
SWAP_TO = "fine_tune"  # tiny serves sml by default
# full_retrain retrains for seconds, longer than a period lasts: the learner falls behind
# the replay and a real backlog builds up (the consumer lag must show it)
SLOW_EPOCHS = 1250  # the compiled MF loop runs tiny's epochs ~5x faster than torch did: keep retrains seconds long
PROCESS_ENV = {k: v for k, v in os.environ.items() if k != "RTSIM_CONTROL_TOKEN"} | {"PYTHONUNBUFFERED": "1"}
HTTP = build_opener(ProxyHandler({}))  # loopback only: never through a proxy from the environment


# ----------------------------------------------------------------------------- helpers


def wait_for(
    what: str,
    check: Callable[[], Any],
    timeout_s: float,
    interval_s: float = 0.25,
    explain: Callable[[], str] = lambda: "",
) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}\n{explain()}", pytrace=False)
        time.sleep(interval_s)


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop_process(proc: subprocess.Popen, sig: int, wait_s: float) -> int:
    """Send `sig`, wait up to wait_s, then kill; the exit status."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def ctl(*args: str) -> dict:
    """`rtsim ctl ...` as a user runs it; its JSON answer."""
    result = subprocess.run(
        [sys.executable, "-m", "simulator.cli", "ctl", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=PROCESS_ENV,
    )
    assert result.returncode == 0, (
        f"rtsim ctl {' '.join(args)}: exit {result.returncode}\n{result.stdout}{result.stderr}"
    )
    return json.loads(result.stdout)


class Prometheus:
    """The HTTP API of the test's Prometheus server."""

    def __init__(self, url: str, log: Path) -> None:
        self.url = url
        self.log = log
        self.started = time.time()

    def get(self, path: str, **params: Any) -> dict:
        url = f"{self.url}{path}" + (f"?{urlencode(params, doseq=True)}" if params else "")
        try:
            with HTTP.open(url, timeout=15) as response:
                return json.load(response)
        except HTTPError as err:  # a refused query answers 4xx with {"status": "error", ...}
            body = err.read().decode(errors="replace")
            try:
                return json.loads(body)
            except ValueError:
                return {"status": "error", "error": f"HTTP {err.code}: {body[:500]}"}

    def query(self, expr: str) -> dict:
        return self.get("/api/v1/query", query=expr)

    def query_range(self, expr: str, start: float, end: float, step: str) -> dict:
        return self.get("/api/v1/query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=step)

    def series(self, expr: str) -> list[dict]:
        """The instant result of `expr` ([] when it fails: callers poll)."""
        answer = self.query(expr)
        return answer["data"]["result"] if answer.get("status") == "success" else []

    def value(self, expr: str) -> float | None:
        """The single value of an instant query, None when there is none."""
        result = self.series(expr)
        return float(result[0]["value"][1]) if len(result) == 1 else None


@dataclass
class Run:
    proc: subprocess.Popen
    path: Path  # the run directory
    log: Path  # its stdout and stderr
    run_id: str
    prefix: str
    bootstrap: str
    endpoints: dict[str, dict[str, str]]

    def closed_periods(self) -> set[int]:
        """Periods with rows in periods.csv (the online ones: pretraining writes none)."""
        try:
            with open(self.path / "periods.csv", newline="") as handle:
                return {int(row["period"]) for row in csv.DictReader(handle) if row.get("period")}
        except (OSError, ValueError, KeyError):
            return set()

    def explain(self) -> str:
        state = "running" if self.proc.poll() is None else f"exited with {self.proc.returncode}"
        return f"rtsim run {self.run_id} ({state}), last lines of its output:\n{tail(self.log)}"


def read_endpoints(path: Path) -> dict | None:
    try:
        endpoints = json.loads(path.read_text())
    except (OSError, ValueError):  # not yet written, or being written
        return None
    sides = ("learner", "producer")
    return endpoints if all({"metrics", "control"} <= set(endpoints.get(side, {})) for side in sides) else None


def run_manifest(bootstrap: str, prefix: str, run_id: str) -> dict:
    """This run's manifest from <prefix>.runs (its schedule says which periods are closed)."""
    from simulator.bus.kafka import KafkaBus

    bus = KafkaBus(bootstrap)
    consumer = bus.consumer(wire.runs_topic(prefix), f"test-prometheus-{uuid.uuid4().hex}")
    try:
        found: list[dict] = []
        deadline = time.monotonic() + 30
        while not found and time.monotonic() < deadline:
            for message in consumer.poll(0.5):
                manifest = json.loads(message.value)
                if manifest.get("run_id") == run_id:
                    found.append(manifest)
        assert found, f"no manifest for {run_id} on {wire.runs_topic(prefix)}"
        return found[-1]
    finally:
        consumer.close()
        bus.close()


def inject(bootstrap: str, topic: str, manifest: dict) -> None:
    """One late event (in period 0, closed long ago) and two malformed records, stamped as
    the run's producer with a row of partition 0 (else they would be refused as foreign
    before they could count as late or malformed)."""
    from simulator.bus.kafka import KafkaBus

    events = wire.headers(wire.EVENTS, row=int(manifest["partition_rows"][0][0]), producer=manifest["producer"])
    late_ts = int(manifest["schedule"][0])
    bus = KafkaBus(bootstrap)
    producer = bus.producer()
    try:
        late = {"ts": late_ts, "user": "late-user", "item": "late-item"}
        producer.send(topic, json.dumps(late).encode(), partition=0, key=b"late-user", headers=events)
        producer.send(topic, b"{not json", partition=0, headers=events)  # bad_json
        producer.send(topic, b'{"ts": 1, "user": "u"}', partition=0, headers=events)  # missing_field
        producer.flush()
    finally:
        producer.close()
        bus.close()


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def prometheus_bin() -> str:
    path = shutil.which("prometheus")
    if path is None:
        unavailable(
            "prometheus is not installed: apt-get install --no-install-recommends prometheus "
            "(scripts/install-services.sh, make services)"
        )
    return path


@pytest.fixture(scope="module")
def rtsim_run(request, tmp_path_factory, prometheus_bin) -> Iterator[Run]:
    """`rtsim run --preset tiny --keep-serving` over Kafka, its replay paused as soon as it
    serves (the test resumes it once Prometheus scrapes it); stopped with SIGINT at the end."""
    # asked for here, after prometheus_bin: without Prometheus no broker is started for nothing
    kafka_bootstrap = request.getfixturevalue("kafka_bootstrap")
    root = tmp_path_factory.mktemp("prometheus-run")
    run_id, prefix = "prom", f"tp{uuid.uuid4().hex[:8]}"
    log = root / "rtsim.log"
    command = [
        sys.executable,
        "-m",
        "simulator.cli",
        "run",
        "--preset",
        "tiny",
        "--keep-serving",
        "--speed",
        str(SPEED),
        "--bus",
        f"kafka://{kafka_bootstrap}",
        "--set",
        f"bus.prefix={prefix}",
        "--runs-dir",
        str(root / "runs"),
        "--run-id",
        run_id,
        "--data-dir",
        str(root / "prepared"),
        "--no-progress",
        "--set",
        f"learner.strategies.full_retrain.train.epochs={SLOW_EPOCHS}",
    ]
    with open(log, "w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=PROCESS_ENV, start_new_session=True)
    run = Run(proc, root / "runs" / run_id, log, run_id, prefix, kafka_bootstrap, {})
    try:

        def endpoints() -> dict | None:
            if proc.poll() is not None:
                pytest.fail(f"rtsim run stopped before serving: {run.explain()}", pytrace=False)
            return read_endpoints(run.path / "endpoints.json")

        run.endpoints = wait_for("endpoints.json", endpoints, timeout_s=120, explain=run.explain)
        ctl("--producer-url", run.endpoints["producer"]["control"], "pause")
        yield run
    finally:
        stop_process(proc, signal.SIGINT, 30)


@pytest.fixture(scope="module")
def sweep_exporter() -> Iterator[str]:
    """A sweep's progress metrics (simulator/sweep_metrics.py) mid-sweep, for the sweep
    panels: the exporter of a real sweep, fed a sweep.json job list instead of running jobs
    (tests/test_sweep*.py run those). Its address, HOST:PORT."""
    from simulator.sweep_metrics import SweepMetrics, serve_sweep_metrics

    metrics = SweepMetrics("promsweep", "tiny", "kafka://127.0.0.1:9092")
    metrics.observe(
        [{"state": "done", "worker": "w1"}, {"state": "running", "worker": "w2"}, {"state": "pending", "worker": None}]
    )
    lines: list[str] = []
    stop = serve_sweep_metrics(metrics, "promsweep", 0, lines.append)
    try:
        yield urlsplit(lines[0].split(": ", 1)[1]).netloc
    finally:
        stop()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory, prometheus_bin, rtsim_run, sweep_exporter) -> Iterator[Prometheus]:
    """Prometheus on a free loopback port: the project's config and rules, scraping the run."""
    root = tmp_path_factory.mktemp("prometheus")
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"] = {
        **config.get("global", {}),
        "scrape_interval": f"{SCRAPE_S}s",
        "evaluation_interval": f"{SCRAPE_S}s",
    }
    # rule_files are relative to the config file; the test's config lives elsewhere
    config["rule_files"] = [str((PROMETHEUS_DIR / pattern).resolve()) for pattern in config["rule_files"]]
    for job in config["scrape_configs"]:
        [static] = job["static_configs"]
        service = static.get("labels", {}).get("service")
        assert service in SERVICE_SIDE, f"scrape job {job['job_name']}: service {service!r} has no side in the run"
        metrics = urlsplit(rtsim_run.endpoints[SERVICE_SIDE[service]]["metrics"])
        static["targets"] = [metrics.netloc]
        job["metrics_path"] = metrics.path or "/metrics"
    # a sweep has no compose service: `rtsim monitor` finds it through its target file
    config["scrape_configs"].append(
        {
            "job_name": SWEEP_JOB[0],
            "static_configs": [{"targets": [sweep_exporter], "labels": {"service": SWEEP_JOB[1]}}],
        }
    )
    config_path = root / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    for attempt in range(3):  # the free port can be taken before Prometheus binds it
        port, log = free_port(), root / f"prometheus-{attempt}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(
                [
                    prometheus_bin,
                    f"--config.file={config_path}",
                    f"--storage.tsdb.path={root / f'data-{attempt}'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = Prometheus(f"http://127.0.0.1:{port}", log)
        try:

            def ready() -> bool:
                if proc.poll() is not None:
                    return True
                try:
                    with HTTP.open(f"{server.url}/-/ready", timeout=2) as response:
                        return response.status == 200
                except (URLError, OSError):
                    return False

            wait_for("Prometheus to be ready", ready, timeout_s=30, explain=lambda: tail(log))
            if proc.poll() is not None:
                if "address already in use" in tail(log) and attempt < 2:
                    continue
                pytest.fail(f"prometheus exited with {proc.returncode}:\n{tail(log)}", pytrace=False)
            yield server
            return
        finally:
            stop_process(proc, signal.SIGTERM, 20)


# ------------------------------------------------------------------------ dashboard queries


@dataclass(frozen=True)
class Query:
    where: str  # dashboard, panel title and id, refId
    expr: str
    instant: bool  # an instant query (tables, stats); else a range query over the run
    merged: frozenset[str] = frozenset()  # in a table merging its targets' rows: the labels they join on


def panels_of(board: dict) -> Iterator[dict]:
    for panel in board.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # those of a collapsed row


def merged_labels(panel: dict) -> frozenset[str]:
    """The labels a table's merge transform joins its targets on: those of its first target's
    outer `by (...)`; empty for a panel without merge."""
    if not any(t.get("id") == "merge" for t in panel.get("transformations", [])):
        return frozenset()
    match = re.match(r"\s*\w+\s+by\s*\(([^)]*)\)", panel["targets"][0]["expr"])
    assert match, f"panel {panel.get('title')}: a merged table's first target aggregates by (...)"
    return frozenset(label.strip() for label in match.group(1).split(","))


def dashboard_queries(name: str, board: dict) -> list[Query]:
    out = []
    for panel in panels_of(board):
        for target in panel.get("targets", []):
            if target.get("hide") or not target.get("expr"):
                continue
            where = f"{name}: panel '{panel.get('title')}' (id {panel.get('id')}) target {target.get('refId')}"
            # Grafana runs a target as an instant query, a range query, or both
            if target.get("instant"):
                out.append(Query(where, target["expr"], instant=True, merged=merged_labels(panel)))
            if target.get("range", not target.get("instant")):
                out.append(Query(where, target["expr"], instant=False))
    for annotation in board.get("annotations", {}).get("list", []):
        expr = annotation.get("expr") or annotation.get("target", {}).get("expr")
        if expr and not annotation.get("builtIn"):
            # annotations are range queries over the dashboard's time range, enabled or not
            out.append(Query(f"{name}: annotation '{annotation.get('name')}'", expr, instant=False))
    return out


_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)(?::\w+)?\]\]|\$(\w+)")


def substitute(expr: str, values: dict[str, str]) -> str:
    def replace(match: re.Match) -> str:
        name = next(group for group in match.groups() if group)
        assert name in values, f"no test value for template variable ${name} in {expr!r}"
        return values[name]

    return _VARIABLE.sub(replace, expr)


def variable_values(board: dict, server: Prometheus) -> list[dict[str, str]]:
    """The values of the dashboard's query variables as Grafana fills them from this run:
    one assignment with the defaults (All = the variable's allValue), and one with every
    option ticked (Grafana's multi-value regex form (a|b|...))."""
    defaults, ticked = {}, {}
    for variable in board.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        query = query.get("query", "") if isinstance(query, dict) else query
        match = re.fullmatch(r"\s*label_values\(\s*([\w:]+)\s*,\s*(\w+)\s*\)\s*", query or "")
        assert match, f"${variable['name']}: the test knows label_values(metric, label) queries only, not {query!r}"
        metric, label = match.groups()
        answer = server.get(f"/api/v1/label/{label}/values", **{"match[]": metric})
        options = sorted(answer.get("data") or [])
        assert options, f"${variable['name']} = {query} lists no values in this run: {answer}"
        current = variable.get("current", {}).get("value")
        current = current if isinstance(current, list) else [current]
        everything = "(" + "|".join(re.escape(option) for option in options) + ")"
        if current == ["$__all"]:
            defaults[variable["name"]] = variable.get("allValue") or everything
        else:
            assert set(current) <= set(options), f"${variable['name']}: default {current} is not among {options}"
            defaults[variable["name"]] = (
                "(" + "|".join(map(re.escape, current)) + ")" if len(current) > 1 else current[0]
            )
        ticked[variable["name"]] = everything if variable.get("multi") else defaults[variable["name"]]
    return [defaults] if ticked == defaults else [defaults, ticked]


def builtin_values(start: float, end: float) -> dict[str, str]:
    """Grafana's global variables for a dashboard showing [start, end] with the test's
    datasource (its scrape interval as the minimum interval, as the provisioned one has)."""
    range_s = max(1, math.ceil(end - start))
    interval_s = SCRAPE_S  # a short range over the ~1000 points of a panel: the minimum
    rate_s = max(interval_s + SCRAPE_S, 4 * SCRAPE_S)  # Grafana's $__rate_interval
    return {
        "__interval": f"{interval_s}s",
        "__interval_ms": str(interval_s * 1000),
        "__rate_interval": f"{rate_s}s",
        "__rate_interval_ms": str(rate_s * 1000),
        "__range": f"{range_s}s",
        "__range_s": str(range_s),
        "__range_ms": str(range_s * 1000),
    }


# ------------------------------------------------------------------------------- the test


def test_every_dashboard_query_and_recording_rule_returns_data(rtsim_run: Run, prometheus: Prometheus):
    run, server = rtsim_run, prometheus

    # 1. both exporters scraped (target discovery takes about 5 s), then the replay goes on
    # (the job and service labels the dashboards and alerts see in the compose stack)
    jobs = {
        (job["job_name"], job["static_configs"][0]["labels"]["service"])
        for job in yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]
    } | {SWEEP_JOB}

    def targets_up() -> bool:
        active = server.get("/api/v1/targets").get("data", {}).get("activeTargets", [])
        return {(t["labels"]["job"], t["labels"].get("service")) for t in active if t["health"] == "up"} == jobs

    wait_for(
        f"targets {sorted(jobs)} up",
        targets_up,
        timeout_s=30,
        explain=lambda: json.dumps(server.get("/api/v1/targets").get("data"), indent=1)[:3000],
    )
    wait_for("rtsim_replay_paused == 1", lambda: server.value("rtsim_replay_paused") == 1, timeout_s=10)
    ctl("--producer-url", run.endpoints["producer"]["control"], "resume")

    # 2. mid-run, once the first online period has closed: swap the serving strategy, then a
    # late event (in period 0, closed long ago) and two malformed records onto the topic
    manifest = run_manifest(run.bootstrap, run.prefix, run.run_id)
    n_periods = len(manifest["phases"])
    wait_for("the first online period in periods.csv", run.closed_periods, timeout_s=90, explain=run.explain)
    # the replay holds still meanwhile, so a slow machine cannot finish the run first
    ctl("--producer-url", run.endpoints["producer"]["control"], "pause")
    answer = ctl("--url", run.endpoints["learner"]["control"], "serve", SWAP_TO)
    assert answer["swapped"] is True, answer
    inject(run.bootstrap, wire.events_topic(run.prefix, run.run_id), manifest)
    assert max(run.closed_periods()) < n_periods - 1, "the run ended before the injection: lower SPEED"
    ctl("--producer-url", run.endpoints["producer"]["control"], "resume")

    # 3. the run has finished and Prometheus has scraped its last period
    wait_for(
        "every period in periods.csv", lambda: n_periods - 1 in run.closed_periods(), timeout_s=90, explain=run.explain
    )
    wait_for(
        "the run to finish and keep serving",
        lambda: "still serving" in run.log.read_text(),
        timeout_s=30,
        explain=run.explain,
    )
    wait_for(
        f"rtsim_period_index == {n_periods - 1} in Prometheus",
        lambda: server.value("rtsim_period_index") == n_periods - 1,
        timeout_s=15,
    )
    # what was done mid-run reached the metrics (else some panels would pass for nothing)
    checks = {
        "rtsim_events_late_total": 1,
        'rtsim_events_rejected_total{reason="bad_json"}': 1,
        'rtsim_events_rejected_total{reason="missing_field"}': 1,
        "rtsim_strategy_swaps_total": 1,
        f'rtsim_serving_strategy{{strategy="{SWAP_TO}"}}': 1,
    }
    for expr, at_least in checks.items():
        wait_for(
            f"{expr} >= {at_least}",
            lambda: (server.value(expr) or 0) >= at_least,
            timeout_s=10,
            explain=lambda: f"{expr} = {server.series(expr)}\n{run.explain()}",
        )

    # the backlog showed as consumer lag, in events, at some scrape
    over_run = f"{math.ceil(time.time() - server.started) + 5}s"
    lag = server.value(f"max_over_time(run:rtsim_consumer_lag_events:produced_minus_ingested[{over_run}])")
    assert lag is not None and lag > 0, f"the consumer lag never rose above 0 over the run: {lag}"

    # 4. recording rules: each series exists (a few evaluation cycles after the last scrape)
    rule_files = [
        path
        for pattern in yaml.safe_load(PROMETHEUS_CONFIG.read_text())["rule_files"]
        for path in sorted(PROMETHEUS_DIR.glob(pattern))
    ]
    rules = [
        rule for path in rule_files for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]
    ]
    records = [rule["record"] for rule in rules if "record" in rule]
    assert records

    def missing_records() -> list[str]:
        return [name for name in records if not server.series(name)]

    deadline = time.monotonic() + 10
    while (missing := missing_records()) and time.monotonic() < deadline:
        time.sleep(SCRAPE_S)
    assert not missing, f"recording rules without a series after the run: {missing}"

    # every rule, recording and alerting, is loaded and evaluates without error
    def loaded_rules() -> list[dict]:
        groups = server.get("/api/v1/rules").get("data", {}).get("groups", [])
        return [rule for group in groups for rule in group["rules"]]

    wait_for(
        "every rule evaluated",
        lambda: all(r.get("health") == "ok" for r in loaded_rules()) and loaded_rules(),
        timeout_s=10,
        explain=lambda: "\n".join(
            f"{r['name']}: {r.get('health')} {r.get('lastError', '')}"
            for r in loaded_rules()
            if r.get("health") != "ok"
        ),
    )
    assert sorted(r["name"] for r in loaded_rules()) == sorted(rule.get("record") or rule["alert"] for rule in rules)

    # 5. every dashboard query, as Grafana sends it over the run's time range
    assert DASHBOARD_FILES
    end = time.time()
    start = server.started
    failures, executed = [], 0
    for path in DASHBOARD_FILES:
        board = json.loads(path.read_text())
        queries = dashboard_queries(path.name, board)
        assert queries, f"{path.name}: no queries"
        done: set[tuple[str, bool]] = set()
        for values in variable_values(board, server):
            values = {**builtin_values(start, end), **values}
            for query in queries:
                expr = substitute(query.expr, values)
                if (expr, query.instant) in done:
                    continue
                done.add((expr, query.instant))
                if query.instant:
                    answer, kind = server.query(expr), "instant query at the end of the run"
                else:
                    answer = server.query_range(expr, start, end, values["__interval"])
                    kind = "range query over the run"
                executed += 1
                if answer.get("status") != "success":
                    failures.append(
                        f"{query.where}: {query.expr!r} -> {expr!r} ({kind}) failed: "
                        f"{answer.get('errorType')}: {answer.get('error')}"
                    )
                elif not answer["data"]["result"]:
                    failures.append(f"{query.where}: {query.expr!r} -> {expr!r} ({kind}) returned no series")
                elif query.merged and {frozenset(s["metric"]) for s in answer["data"]["result"]} != {query.merged}:
                    # Grafana's merge joins rows on every label: one more (a recording rule's
                    # __name__) or one fewer splits a row in two
                    failures.append(
                        f"{query.where}: {expr!r} labels {[sorted(s['metric']) for s in answer['data']['result']]}"
                        f" differ from the table's {sorted(query.merged)}"
                    )
    assert not failures, f"{len(failures)} of {executed} dashboard queries show no data:\n" + "\n".join(failures)

    # 6. a keep-serving run stops cleanly on Ctrl-C
    assert stop_process(run.proc, signal.SIGINT, 30) == 0, run.explain()
