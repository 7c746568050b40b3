"""Static checks of the observability stack: the Grafana dashboards and provisioning, the
Prometheus config, recording rules and alerts, docker-compose.yml and the Dockerfile.

No server runs here (no Grafana, Docker or Prometheus). promtool, from Debian's
`prometheus` package, parses the config and rules, runs the alert unit tests, and parses
every dashboard query rewritten as a recording rule. Without promtool those tests skip,
except in CI (CI=true), where they fail.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path, PurePosixPath

import pytest
import yaml

from tests.ci import unavailable

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "dashboards" / "grafana"
DASHBOARD_FILES = sorted((GRAFANA / "dashboards").glob("*.json"))
PROVISIONING = GRAFANA / "provisioning"
PROMETHEUS = ROOT / "dashboards" / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS / "prometheus.yml"
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml"))
ALERT_TESTS = PROMETHEUS / "tests" / "rtsim-alerts.test.yml"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"

OVERVIEW_UID = "rtsim-overview"
SERVICES = {"kafka", "prometheus", "grafana", "replay", "learner"}

# Grafana unit ids the dashboards may use (valueFormats categories), plus custom
# "suffix:"/"prefix:" units. A typo in a unit id silently shows raw numbers.
GRAFANA_UNITS = {
    "none",
    "short",
    "percentunit",
    "percent",
    "s",
    "ms",
    "dtdurations",
    "dateTimeAsIso",
    "eps",
    "ops",
    "bytes",
}

# Functions over a range whose window must be $__rate_interval in dashboards, so that the
# window always holds at least four scrapes whatever the zoom.
RATE_FUNCTIONS = ("rate", "irate", "increase")

# Values substituted for template variables before promtool parses a dashboard query.
VARIABLE_VALUES = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "${datasource}": "prometheus",
    "$strategy": ".*",
    "$k": "20",
    "$run": ".*",
}


# ----------------------------------------------------------------------------- helpers


def load_yaml(path: Path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="module")
def dashboards() -> dict[str, dict]:
    assert DASHBOARD_FILES, f"no dashboard JSON in {GRAFANA / 'dashboards'}"
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in DASHBOARD_FILES}


@pytest.fixture(scope="module")
def overview(dashboards) -> dict:
    [board] = [d for d in dashboards.values() if d.get("uid") == OVERVIEW_UID]
    return board


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_yaml(COMPOSE)


@pytest.fixture(scope="module")
def prometheus_config() -> dict:
    return load_yaml(PROMETHEUS_CONFIG)


@pytest.fixture(scope="module")
def provisioned_datasources() -> list[dict]:
    sources = []
    for path in sorted((PROVISIONING / "datasources").glob("*.yml")):
        doc = load_yaml(path)
        assert doc.get("apiVersion") == 1, f"{path.name}: apiVersion must be 1"
        sources.extend(doc.get("datasources") or [])
    return sources


@pytest.fixture(scope="module")
def rules() -> dict[str, dict]:
    """Every rule of the rule files by name: {record or alert name: rule}."""
    found = {}
    for path in RULE_FILES:
        for group in load_yaml(path)["groups"]:
            for rule in group["rules"]:
                name = rule.get("record") or rule.get("alert")
                assert name not in found, f"rule {name} defined twice"
                found[name] = rule
    return found


@pytest.fixture(scope="module")
def exported() -> dict[str, set[str]]:
    """{sample name: label names} for every series the learner, the producer and a sweep register.

    Labelled metrics have no samples until a label set is used, so the names come from the
    metric objects: counters gain _total, histograms _bucket/_sum/_count (le on _bucket).
    """
    from prometheus_client.metrics import MetricWrapperBase

    from learner.metrics import LearnerMetrics
    from simulator.metrics import ProducerMetrics
    from simulator.sweep_metrics import SweepMetrics

    names: dict[str, set[str]] = {}
    for owner in (LearnerMetrics(), ProducerMetrics([0, 3600]), SweepMetrics()):
        for metric in vars(owner).values():
            if not isinstance(metric, MetricWrapperBase):
                continue
            labels = set(metric._labelnames) | {"run_id"}  # RunRegistry stamps every sample
            if metric._type == "counter":
                names[metric._name + "_total"] = labels
            elif metric._type == "histogram":
                names[metric._name + "_bucket"] = labels | {"le"}
                names[metric._name + "_sum"] = labels
                names[metric._name + "_count"] = labels
            else:
                names[metric._name] = labels
    names["rtsim_run_info"] = {"run_id", "preset", "bus"}  # RunRegistry's own
    assert len(names) > 20
    return names


def panels_of(board: dict) -> list[dict]:
    """Every panel, including those nested in collapsed rows."""
    out = []
    for panel in board.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def queries_of(board: dict) -> list[tuple[str, str]]:
    """(where, expr) for every Prometheus query of a dashboard: targets and annotations."""
    out = []
    for panel in panels_of(board):
        for target in panel.get("targets", []):
            out.append(
                (f"panel {panel.get('id')} '{panel.get('title')}' {target.get('refId')}", target.get("expr", ""))
            )
    for annotation in board.get("annotations", {}).get("list", []):
        if annotation.get("expr"):
            out.append((f"annotation '{annotation['name']}'", annotation["expr"]))
        if annotation.get("target", {}).get("expr"):
            out.append((f"annotation '{annotation['name']}' target", annotation["target"]["expr"]))
    return out


def all_queries(dashboards) -> list[tuple[str, str]]:
    return [(f"{name}: {where}", expr) for name, board in dashboards.items() for where, expr in queries_of(board)]


def variable_query(variable: dict) -> str:
    query = variable.get("query", "")
    return query.get("query", "") if isinstance(query, dict) else query


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_NAME = re.compile(r"(?<![\w:$])([a-zA-Z_][a-zA-Z0-9_]*(?::[a-zA-Z0-9_]+)+|rtsim_[a-zA-Z0-9_]+)")


def metric_names(expr: str) -> set[str]:
    """rtsim_* metric names and level:metric:operation recording-rule names in a query."""
    return set(_NAME.findall(_STRING.sub('""', expr)))


def call_arguments(expr: str, function: str) -> list[str]:
    """The argument text of every call of `function` in `expr` (balanced parentheses)."""
    out = []
    for match in re.finditer(rf"(?<![\w:]){function}\s*\(", expr):
        depth, start = 1, match.end()
        for i in range(start, len(expr)):
            depth += {"(": 1, ")": -1}.get(expr[i], 0)
            if depth == 0:
                out.append(expr[start:i])
                break
        else:
            pytest.fail(f"unbalanced parentheses after {function}( in {expr!r}")
    return out


def substitute(expr: str) -> str:
    for variable, value in sorted(VARIABLE_VALUES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"a template variable without a test value in {expr!r}"
    return expr


def command_option(command: list[str], option: str) -> str | None:
    return command[command.index(option) + 1] if option in command else None


def published(service: dict) -> list[tuple[str, str, str]]:
    """(host address, host port, container port) of each published port (short syntax)."""
    out = []
    for entry in service.get("ports", []):
        parts = str(entry).split(":")
        assert len(parts) == 3, f"publish {entry!r} as ADDRESS:HOST_PORT:CONTAINER_PORT"
        out.append(tuple(parts))
    return out


def mounts(service: dict) -> list[tuple[str, str, dict]]:
    """(source, target, long-syntax entry or {}) of each volume of a service."""
    out = []
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            out.append((entry["source"], entry["target"], entry))
        else:
            source, target = entry.split(":")[:2]
            out.append((source, target, {}))
    return out


def container_path(service: dict, repo_path: Path) -> str | None:
    """Where a repository path appears inside a service's container, through its binds."""
    for source, target, _ in mounts(service):
        if not source.startswith("."):
            continue
        src = (ROOT / source).resolve()
        if repo_path == src or src in repo_path.parents:
            return str(PurePosixPath(target) / repo_path.relative_to(src).as_posix()).rstrip("/.")
    return None


# ------------------------------------------------------------------ dashboard structure


def test_dashboards_have_fixed_unique_uids(dashboards):
    uids = [board.get("uid") for board in dashboards.values()]
    assert len(set(uids)) == len(uids), f"duplicate dashboard uids: {uids}"
    for name, board in dashboards.items():
        assert re.fullmatch(r"[A-Za-z0-9_-]{8,40}", board.get("uid") or ""), f"{name}: uid"
        assert board.get("id") is None, f"{name}: provisioned files carry id null"
        assert board.get("title"), f"{name}: title"
        assert 36 <= board.get("schemaVersion", 0) <= 41, f"{name}: classic JSON model, schemaVersion ~39"
        assert not board.get("rows"), f"{name}: the pre-5.0 rows model is not supported"


def test_overview_dashboard_identity(overview):
    assert overview["title"] == "rtsim: retraining overview"
    assert overview["refresh"] and overview["time"]["from"].startswith("now-")


def test_template_variables(overview):
    variables = {v["name"]: v for v in overview["templating"]["list"]}
    datasource_vars = [v for v in overview["templating"]["list"] if v["type"] == "datasource"]
    assert [v["name"] for v in datasource_vars] == ["datasource"], "exactly one datasource variable"
    assert variables["datasource"]["query"] == "prometheus"

    strategy = variables["strategy"]
    assert strategy["type"] == "query"
    assert strategy["multi"] is True and strategy["includeAll"] is True
    assert re.sub(r"\s", "", variable_query(strategy)) == "label_values(rtsim_next_period_ndcg,strategy)"

    k = variables["k"]
    assert k["type"] == "query"
    assert re.sub(r"\s", "", variable_query(k)) == "label_values(rtsim_next_period_ndcg,k)"

    # several runs on one Prometheus: every query is scoped to the runs picked here
    run = variables["run"]
    assert run["type"] == "query" and run["multi"] is True and run["includeAll"] is True
    assert re.sub(r"\s", "", variable_query(run)) == "label_values(rtsim_run_info,run_id)"


def test_every_query_is_scoped_to_the_run_variable(dashboards):
    for where, expr in all_queries(dashboards):
        for name in metric_names(expr):
            assert re.search(rf'{re.escape(name)}\{{run_id=~"\$run"', expr), (
                f'{where}: {name} without run_id=~"$run" in {expr!r}'
            )


def test_label_values_name_exported_metrics_and_labels(dashboards, exported):
    seen = 0
    for name, board in dashboards.items():
        for variable in board.get("templating", {}).get("list", []):
            if "definition" in variable:  # what the variable editor shows
                assert variable["definition"] == variable_query(variable), f"{name} ${variable['name']}"
            for metric, label in re.findall(r"label_values\(\s*([\w:]+)\s*,\s*(\w+)\s*\)", variable_query(variable)):
                seen += 1
                assert metric in exported, f"{name} ${variable['name']}: {metric} is not exported"
                assert label in exported[metric], f"{name} ${variable['name']}: {metric} has no label {label}"
    assert seen >= 2


def test_panel_ids_unique(dashboards):
    for name, board in dashboards.items():
        ids = [panel.get("id") for panel in panels_of(board)]
        assert all(isinstance(i, int) for i in ids), f"{name}: every panel needs an integer id"
        assert len(set(ids)) == len(ids), f"{name}: duplicate panel ids"


def test_grid_positions_do_not_overlap(dashboards):
    for name, board in dashboards.items():
        boxes = []
        for panel in board["panels"]:  # nested panels of collapsed rows have their own layout
            grid = panel.get("gridPos")
            assert grid and all(isinstance(grid.get(key), int) for key in "hwxy"), (
                f"{name}: panel {panel.get('id')} gridPos"
            )
            assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] >= 0 and grid["y"] >= 0
            assert grid["x"] + grid["w"] <= 24, f"{name}: panel {panel['id']} is wider than the 24-column grid"
            for other_id, other in boxes:
                overlap = (
                    grid["x"] < other["x"] + other["w"]
                    and other["x"] < grid["x"] + grid["w"]
                    and grid["y"] < other["y"] + other["h"]
                    and other["y"] < grid["y"] + grid["h"]
                )
                assert not overlap, f"{name}: panels {other_id} and {panel['id']} overlap"
            boxes.append((panel["id"], grid))


def test_datasources_exist_in_provisioning(dashboards, provisioned_datasources):
    uids = {source["uid"]: source for source in provisioned_datasources}
    assert uids, "no provisioned datasource"
    for source in provisioned_datasources:
        for key in ("name", "uid", "type", "url", "access"):
            assert source.get(key), f"provisioned datasource {source.get('name')}: {key}"
    allowed = {"${datasource}", *uids}

    def check(where: str, datasource) -> None:
        assert isinstance(datasource, dict), f"{where}: datasource must be {{type, uid}}"
        assert datasource.get("uid") in allowed, f"{where}: datasource uid {datasource.get('uid')!r}"
        if datasource["uid"] in uids:
            assert datasource.get("type") == uids[datasource["uid"]]["type"], f"{where}: datasource type"

    for name, board in dashboards.items():
        for variable in board["templating"]["list"]:
            if variable["type"] == "datasource":
                assert variable["current"]["value"] in uids, f"{name}: the datasource default is not provisioned"
                assert variable["query"] == uids[variable["current"]["value"]]["type"]
            elif "datasource" in variable:
                check(f"{name} ${variable['name']}", variable["datasource"])
        for annotation in board.get("annotations", {}).get("list", []):
            if not annotation.get("builtIn"):
                check(f"{name} annotation {annotation.get('name')}", annotation.get("datasource"))
        for panel in panels_of(board):
            if panel.get("type") == "row":
                continue
            check(f"{name} panel {panel['id']}", panel.get("datasource"))
            for target in panel.get("targets", []):
                check(f"{name} panel {panel['id']} {target.get('refId')}", target.get("datasource"))


def test_every_target_has_ref_id_and_expr(dashboards):
    for name, board in dashboards.items():
        for panel in panels_of(board):
            if panel.get("type") == "row":
                continue
            targets = panel.get("targets") or []
            assert targets, f"{name}: panel {panel['id']} '{panel.get('title')}' has no query"
            ref_ids = [t.get("refId") for t in targets]
            assert all(ref_ids), f"{name}: panel {panel['id']}: a target without refId"
            assert len(set(ref_ids)) == len(ref_ids), f"{name}: panel {panel['id']}: duplicate refIds"
            for target in targets:
                assert (target.get("expr") or "").strip(), f"{name}: panel {panel['id']} {target['refId']}: no expr"


def test_every_panel_has_a_unit(dashboards):
    def valid(unit) -> bool:
        return isinstance(unit, str) and (unit in GRAFANA_UNITS or re.fullmatch(r"(suffix|prefix):.+", unit))

    for name, board in dashboards.items():
        for panel in panels_of(board):
            if panel.get("type") == "row":
                continue
            unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
            assert valid(unit), f"{name}: panel {panel['id']} '{panel['title']}' unit {unit!r}"
            for override in panel["fieldConfig"].get("overrides", []):
                for prop in override.get("properties", []):
                    if prop["id"] == "unit":
                        assert valid(prop["value"]), f"{name}: panel {panel['id']} override unit {prop['value']!r}"


def test_rate_functions_use_rate_interval(dashboards):
    checked = 0
    for where, expr in all_queries(dashboards):
        for function in RATE_FUNCTIONS:
            for argument in call_arguments(expr, function):
                windows = re.findall(r"\[([^\]]*)\]", argument)
                assert windows, f"{where}: {function}() without a range in {expr!r}"
                assert set(windows) == {"$__rate_interval"}, (
                    f"{where}: {function}() over {windows}, use [$__rate_interval]: {expr!r}"
                )
                checked += 1
    assert checked >= 3


def test_no_query_hides_missing_data(dashboards):
    for where, expr in all_queries(dashboards):
        assert not re.search(r"\bvector\s*\(", expr), f"{where}: a constant vector fills in missing data: {expr!r}"
        assert not re.search(r"\bor\s+on\s*\(\s*\)", expr), f"{where}: 'or on()' fills in missing data: {expr!r}"
    for name, board in dashboards.items():
        for panel in panels_of(board):
            defaults = panel.get("fieldConfig", {}).get("defaults", {})
            assert "noValue" not in defaults, f"{name}: panel {panel['id']} replaces missing data with noValue"
            assert defaults.get("custom", {}).get("spanNulls") is not True, (
                f"{name}: panel {panel['id']} draws lines across missing data"
            )
            assert not any(
                t.get("id") == "filterByValue" and "null" in json.dumps(t).lower()
                for t in panel.get("transformations", [])
            ), f"{name}: panel {panel['id']}"


def test_queries_name_exported_metrics_or_recording_rules(dashboards, exported, rules):
    for where, expr in all_queries(dashboards):
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        for name in names:
            assert name in exported or name in rules, f"{where}: unknown metric or rule {name!r}"


def test_dashboard_shows_every_exported_metric(overview, exported, rules):
    """Every series the learner and the producer export appears on the overview, directly
    or through a recording rule."""
    used = set()
    for _, expr in queries_of(overview):
        for name in metric_names(expr):
            used.add(name)
            if name in rules:
                used |= metric_names(rules[name]["expr"])
    histogram_bases = {n.rsplit("_", 1)[0] for n in exported if n.endswith("_bucket")}
    missing = {
        n
        for n in exported
        if n not in used and not any(n.startswith(base + "_") and base + "_bucket" in used for base in histogram_bases)
    }
    assert not missing, f"exported but not on the dashboard: {sorted(missing)}"


def test_serving_strategy_is_marked_and_swaps_annotated(overview):
    titles = {panel.get("title", ""): panel for panel in panels_of(overview)}
    ndcg = next(p for t, p in titles.items() if t.startswith("Next-period NDCG"))
    recall = next(p for t, p in titles.items() if t.startswith("Next-period Recall"))
    assert any("rtsim_serving_ndcg" in t["expr"] for t in ndcg["targets"])
    assert any("rtsim_serving_strategy" in t["expr"] for t in recall["targets"])
    for panel in (ndcg, recall):
        assert all('k="$k"' in t["expr"] for t in panel["targets"]), panel["title"]
        assert any('strategy=~"$strategy"' in t["expr"] for t in panel["targets"]), panel["title"]

    swaps = [a for a in overview["annotations"]["list"] if "rtsim_strategy_swaps_total" in a.get("expr", "")]
    assert len(swaps) == 1 and swaps[0]["enable"] is True
    assert swaps[0]["target"]["expr"] == swaps[0]["expr"]


def test_provisioning_files(compose):
    [provider_file] = sorted((PROVISIONING / "dashboards").glob("*.yml"))
    doc = load_yaml(provider_file)
    assert doc.get("apiVersion") == 1
    [provider] = doc["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")
    # the provider's path is where compose mounts the dashboard JSON
    grafana = compose["services"]["grafana"]
    for dashboard in DASHBOARD_FILES:
        inside = container_path(grafana, dashboard.resolve())
        assert inside == f"{provider['options']['path'].rstrip('/')}/{dashboard.name}"
    assert container_path(grafana, PROVISIONING.resolve()) == "/etc/grafana/provisioning"
    home = grafana["environment"].get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        assert home in {container_path(grafana, d.resolve()) for d in DASHBOARD_FILES}


# ------------------------------------------------------------------ compose and Dockerfile


def test_compose_services_and_pinned_images(compose):
    services = compose["services"]
    assert set(services) == SERVICES
    assert "version" not in compose, "the top-level version key is obsolete in Compose v2"
    for name, service in services.items():
        if "build" in service:
            build = service["build"]
            context = ROOT / (build["context"] if isinstance(build, dict) else build)
            dockerfile = build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile"
            assert (context / dockerfile).is_file(), f"{name}: {context / dockerfile} missing"
            continue
        image = service.get("image", "")
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: image {image!r} without a tag"
        assert tag not in ("", "latest") and re.search(r"\d", tag), f"{name}: pin {image!r} to a version"
    kafka = services["kafka"]["image"]
    assert kafka.startswith("apache/kafka:4."), f"Kafka 4.x: {kafka}"
    assert services["prometheus"]["image"].startswith("prom/prometheus:v")
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    assert {"replay", "learner"} <= {n for n, s in services.items() if "build" in s}


def test_prometheus_targets_match_compose(compose, prometheus_config):
    services = compose["services"]
    scraped = set()
    for job in prometheus_config["scrape_configs"]:
        for static in job["static_configs"]:
            for target in static["targets"]:
                host, port = target.split(":")
                assert host in services, f"{job['job_name']}: {host} is not a compose service"
                service = services[host]
                assert port in [str(p) for p in service.get("expose", [])] or port in [
                    p[2] for p in published(service)
                ], f"{host} does not expose {port}"
                assert command_option(service["command"], "--metrics-port") == port, (
                    f"{host} serves metrics on {command_option(service['command'], '--metrics-port')}, scraped on {port}"
                )
                assert static.get("labels", {}).get("service") == host, f"{target}: label service={host}"
                scraped.add(host)
    assert scraped == {"learner", "replay"}


def test_grafana_datasource_url_reaches_prometheus(compose, provisioned_datasources):
    [source] = [s for s in provisioned_datasources if s["type"] == "prometheus"]
    match = re.fullmatch(r"http://([\w-]+):(\d+)/?", source["url"])
    assert match, source["url"]
    host, port = match.groups()
    prometheus = compose["services"][host]
    assert prometheus["image"].startswith("prom/prometheus")
    listen = [c for c in prometheus.get("command", []) if c.startswith("--web.listen-address")]
    assert (listen[0].rsplit(":", 1)[1] if listen else "9090") == port
    assert port in [p[2] for p in published(prometheus)]


def test_prometheus_config_and_rules_are_mounted(compose):
    prometheus = compose["services"]["prometheus"]
    config_flag = next(c for c in prometheus["command"] if c.startswith("--config.file="))
    config_in_container = config_flag.split("=", 1)[1]
    assert container_path(prometheus, PROMETHEUS_CONFIG.resolve()) == config_in_container
    # rule_files are relative to the config file, in the container as in the repository
    for path in RULE_FILES:
        inside = container_path(prometheus, path.resolve())
        assert inside == str(PurePosixPath(config_in_container).parent / path.relative_to(PROMETHEUS).as_posix())


def test_bind_mounts_exist_and_named_volumes_are_declared(compose):
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for source, target, entry in mounts(service):
            assert target.startswith("/"), f"{name}: {target}"
            if source.startswith(("./", "../", "/")):
                assert source.startswith("./"), f"{name}: bind {source} from outside the repository"
                if entry.get("bind", {}).get("create_host_path") is True:
                    continue  # a data folder compose creates on first `up` (./data, ./runs)
                assert (ROOT / source).exists(), f"{name}: {source} does not exist in the repository"
            else:
                assert source in declared, f"{name}: named volume {source} is not declared"


def test_healthchecks_and_start_order(compose):
    services = compose["services"]
    for name, service in services.items():
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name}: healthcheck"
        for dependency, spec in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            assert isinstance(spec, dict) and spec.get("condition") in (
                "service_started",
                "service_healthy",
                "service_completed_successfully",
            ), f"{name} -> {dependency}: give a condition"
    for name in ("replay", "learner"):
        assert services[name]["depends_on"]["kafka"]["condition"] == "service_healthy"
    # the learner takes the newest run manifest: it must start after the replay publishes
    assert services["learner"]["depends_on"]["replay"]["condition"] == "service_healthy"
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
    # healthchecks probe the ports the services are told to serve
    for name in ("replay", "learner"):
        port = command_option(services[name]["command"], "--metrics-port")
        assert f":{port}/metrics" in " ".join(services[name]["healthcheck"]["test"])


def test_kafka_listeners_serve_containers_and_host(compose):
    services = compose["services"]
    env = services["kafka"]["environment"]
    listeners = dict(item.split("://") for item in env["KAFKA_LISTENERS"].split(","))
    advertised = dict(item.split("://") for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    protocols = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) <= set(protocols) and set(advertised) <= set(listeners)
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    assert str(env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"]).lower() == "false"
    assert str(env["KAFKA_LOG_RETENTION_MS"]) == "-1"
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR",
    ):
        assert str(env[key]) == "1", f"{key}: a single node"

    # containers: the address in --bus is advertised by a listener on that port
    for name in ("replay", "learner"):
        bus = command_option(services[name]["command"], "--bus")
        assert bus and bus.startswith("kafka://"), f"{name}: --bus kafka://..."
        address = bus.removeprefix("kafka://")
        [listener] = [n for n, a in advertised.items() if a == address]
        assert listeners[listener].endswith(":" + address.rsplit(":", 1)[1])
    # the host: localhost:9092 reaches the listener advertised as localhost:9092
    [host_listener] = [n for n, a in advertised.items() if a.startswith("localhost:")]
    host_port = advertised[host_listener].rsplit(":", 1)[1]
    container_port = listeners[host_listener].rsplit(":", 1)[1]
    assert ("127.0.0.1", host_port, container_port) in published(services["kafka"])


def test_published_ports_are_local_and_consistent(compose):
    services = compose["services"]
    for name, service in services.items():
        for address, _, _ in published(service):
            assert address == "127.0.0.1", f"{name}: publish on 127.0.0.1 only"
    learner = services["learner"]["command"]
    assert ("127.0.0.1", "8765", command_option(learner, "--control-port")) in published(services["learner"])
    assert ("127.0.0.1", "3000", "3000") in published(services["grafana"])
    for name in ("replay", "learner"):
        command = services[name]["command"]
        assert command_option(command, "--host") == "0.0.0.0", f"{name}: bind beyond loopback for Prometheus"
        assert (
            "127.0.0.1",
            command_option(command, "--metrics-port"),
            command_option(command, "--metrics-port"),
        ) in published(services[name])


def test_control_token_comes_from_env_and_is_required(compose):
    services = compose["services"]
    for name in ("replay", "learner"):
        token = services[name]["environment"]["RTSIM_CONTROL_TOKEN"]
        assert token.startswith("${RTSIM_CONTROL_TOKEN:?"), f"{name}: compose must refuse to start without a token"
    example = ENV_EXAMPLE.read_text(encoding="utf-8")
    settings = dict(
        line.split("=", 1) for line in example.splitlines() if line.strip() and not line.lstrip().startswith("#")
    )
    assert settings.get("RTSIM_CONTROL_TOKEN", None) == "", ".env.example must not ship a token"
    # every variable compose reads is documented in .env.example
    used = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text(encoding="utf-8")))
    documented = set(re.findall(r"^#?\s*(\w+)=", example, flags=re.M))
    assert used <= documented, f"undocumented in .env.example: {sorted(used - documented)}"


def test_learner_and_replay_commands(compose):
    services = compose["services"]
    learner = services["learner"]
    assert learner["command"][:2] == ["rtsim", "learn"]
    assert "--keep-serving" in learner["command"]
    runs = command_option(learner["command"], "--runs-dir")
    assert runs in {target for _, target, _ in mounts(learner)}, "run directories on the host"
    replay = services["replay"]
    assert replay["command"][:2] == ["rtsim", "replay"]
    assert command_option(replay["command"], "--preset") == "demo"
    speed = command_option(replay["command"], "--speed")
    assert speed and speed != "max", "a paced default speed, so the dashboards fill as periods close"
    data_dir = command_option(replay["command"], "--data-dir")
    assert any(data_dir.startswith(target) for _, target, _ in mounts(replay)), "prepared logs cached on the host"


def test_dockerfile(compose):
    text = DOCKERFILE.read_text(encoding="utf-8")
    instructions = [
        line.strip()
        for line in re.sub(r"\\\n", " ", text).splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    froms = [line.split()[1] for line in instructions if line.upper().startswith("FROM ")]
    assert froms == ["python:3.11-slim"]
    assert any(re.search(r"\bpip install \.(\s|$)", line) for line in instructions), "pip install ."
    for line in instructions:
        if line.upper().startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: missing"
    copied = " ".join(line for line in instructions if line.upper().startswith("COPY "))
    for needed in ("pyproject.toml", "replay_data", "learner", "simulator"):
        assert needed in copied, f"the image needs {needed}"
    # the optional CPU-only torch must be the version pyproject pins
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    [torch] = [p for p in pins if re.match(r"torch\s*==", p)]
    [arg] = re.findall(r"^ARG TORCH_VERSION=(\S+)", text, flags=re.M)
    assert torch.split("==")[1].strip() == arg
    # the image never receives the local .env or data through the build context
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".env", "data/", "runs/"} <= set(ignored)


# ------------------------------------------------------------------------------ promtool


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        unavailable(
            "promtool not installed: apt-get install --no-install-recommends prometheus "
            "(scripts/install-services.sh, make services)"
        )
    return path


def run_promtool(promtool: str, *args: str) -> str:
    result = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60, cwd=ROOT)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


def test_promtool_check_config(promtool):
    output = run_promtool(promtool, "check", "config", str(PROMETHEUS_CONFIG))
    assert f"{len(RULE_FILES)} rule files found" in output, output


def test_promtool_check_rules(promtool):
    assert RULE_FILES
    run_promtool(promtool, "check", "rules", *map(str, RULE_FILES))


def test_promtool_alert_unit_tests(promtool):
    run_promtool(promtool, "test", "rules", str(ALERT_TESTS))


def test_every_alert_has_firing_and_quiet_tests(rules):
    alerts = {name for name, rule in rules.items() if "alert" in rule}
    assert {"RetrainSlowerThanPeriod", "SmlBelowFineTune", "LearnerStale", "RejectedEventsRising"} <= alerts
    firing, quiet = set(), set()
    for case in load_yaml(ALERT_TESTS)["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert alerts <= firing, f"no firing test for {sorted(alerts - firing)}"
    assert alerts <= quiet, f"no quiet test for {sorted(alerts - quiet)}"
    tested_files = {(ALERT_TESTS.parent / f).resolve() for f in load_yaml(ALERT_TESTS)["rule_files"]}
    assert tested_files == {p.resolve() for p in RULE_FILES}


def test_dashboard_queries_parse(promtool, dashboards, tmp_path):
    """Each dashboard query, variables substituted, written as a recording rule: promtool
    parses every expression (Grafana would only say so when the panel loads)."""
    queries = all_queries(dashboards)
    rules_doc = {
        "groups": [
            {
                "name": "dashboard-queries",
                "rules": [
                    {"record": f"dashboard:query_{i}:parse", "expr": substitute(expr)}
                    for i, (_, expr) in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules_doc, sort_keys=False), encoding="utf-8")
    output = run_promtool(promtool, "check", "rules", str(path))
    assert f"{len(queries)} rules found" in output, output
