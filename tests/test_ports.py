"""Which ports a run's servers bind, and how a run announces its metrics for discovery."""

from __future__ import annotations

import json
import socket
from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry

from learner.metrics import MetricsPortInUse
from simulator.config import RunConfig, ServeConfig
from simulator.http_api import ControlPortInUse
from simulator.ports import DEFAULT_PORTS, PortPlan, plan_port
from simulator.run import Endpoints
from simulator.targets import target_file


def test_unset_ports_are_defaults_that_may_give_way():
    serve = ServeConfig()
    assert plan_port(serve, "metrics_port") == PortPlan(9108, fallback=True)
    assert plan_port(serve, "producer_control_port") == PortPlan(8766, fallback=True)
    # a port given is used as given, the default included
    assert plan_port(replace(serve, metrics_port=9108), "metrics_port") == PortPlan(9108, fallback=False)


def test_producer_ports_follow_a_learner_port_of_0():
    """`rtsim run --metrics-port 0 --control-port 0` puts every server of the run on a free port."""
    serve = ServeConfig(metrics_port=0, control_port=0)
    assert plan_port(serve, "producer_metrics_port") == PortPlan(0, fallback=False)
    assert plan_port(serve, "producer_control_port") == PortPlan(0, fallback=False)
    # a producer port given explicitly wins
    assert plan_port(replace(serve, producer_metrics_port=9200), "producer_metrics_port").port == 9200


@pytest.fixture
def taken(monkeypatch) -> int:
    """A port another process holds, made the default of every server."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    for key in DEFAULT_PORTS:
        monkeypatch.setitem(DEFAULT_PORTS, key, port)
    yield port
    sock.close()


def test_a_taken_default_port_gives_way_to_a_free_one_and_says_so(taken):
    said: list[str] = []
    endpoints = Endpoints(said.append, RunConfig())
    try:
        endpoints.metrics("learner", CollectorRegistry(), RunConfig(), "metrics_port", "--metrics-port")
        endpoints.control("learner", {}, RunConfig(), "control_port", "--control-port")
    finally:
        endpoints.close()
    for kind in ("metrics", "control"):
        url = endpoints.addresses["learner"][kind]
        assert f":{taken}" not in url
        assert f"learner {kind}: default port {taken} is taken (another run?); using a free port" in said
        assert f"learner {kind}: {url}" in said  # the port it serves on instead


def test_a_taken_explicit_port_fails_naming_the_option(taken):
    cfg = RunConfig(serve=ServeConfig(metrics_port=taken, control_port=taken))
    endpoints = Endpoints(lambda line: None, cfg)
    try:
        with pytest.raises(MetricsPortInUse, match=rf"port {taken} .*--metrics-port"):
            endpoints.metrics("learner", CollectorRegistry(), cfg, "metrics_port", "--metrics-port")
        with pytest.raises(ControlPortInUse, match=rf"port {taken} .*--control-port"):
            endpoints.control("learner", {}, cfg, "control_port", "--control-port")
    finally:
        endpoints.close()


def test_a_run_announces_its_metrics_while_it_serves(tmp_path, monkeypatch):
    monkeypatch.setenv("RTSIM_TARGETS_DIR", str(tmp_path))
    monkeypatch.setenv("RTSIM_CONTROL_TOKEN", "a-token")  # an exposed host needs one
    cfg = RunConfig(serve=ServeConfig(metrics_port=0, host="0.0.0.0"))
    endpoints = Endpoints(lambda line: None, cfg)
    endpoints.metrics("learner", CollectorRegistry(), cfg, "metrics_port", "--metrics-port")
    endpoints.metrics("producer", CollectorRegistry(), cfg, "producer_metrics_port", "--metrics-port")
    endpoints.announce("run-1")
    try:
        for side, service in (("learner", "learner"), ("producer", "replay")):
            port = endpoints.addresses[side]["metrics"].rsplit(":", 1)[1].split("/")[0]
            # a wildcard bind is scraped on loopback; service as in the compose stack's jobs
            assert json.loads(target_file("run-1", side).read_text()) == [
                {"targets": [f"127.0.0.1:{port}"], "labels": {"service": service}}
            ]
    finally:
        endpoints.close()
    assert list(tmp_path.iterdir()) == []  # gone with the run
