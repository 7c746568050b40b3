"""The control surfaces over a real Engine and ReplayProducer: HTTP API, `rtsim ctl`, control topic."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import replace
from urllib.error import HTTPError
from urllib.request import ProxyHandler, Request, build_opener

import pytest

from learner.engine import Engine
from simulator.bus.memory import MemoryBus
from simulator.control import LearnerCommands, ProducerCommands, RequestError
from simulator.control_topic import ControlTopicListener, publish_command
from simulator.http_api import MAX_BODY_BYTES, ApiConfigError, learner_routes, load_token, producer_routes, start_api
from simulator.producer import ReplayProducer, ReplaySettings

_opener = build_opener(ProxyHandler({}))  # never route 127.0.0.1 through an environment proxy


def call(
    url: str, method: str = "GET", body: object = None, raw: bytes | None = None, token: str | None = None
) -> tuple[int, dict]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        with _opener.open(Request(url, data=data, method=method, headers=headers), timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except HTTPError as err:
        return err.code, json.loads(err.read())


def wait_for(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def changes() -> list[dict]:
    """What the learner API's commands passed to on_change."""
    return []


@pytest.fixture(scope="module")
def learner_api(engine, changes):
    with start_api(learner_routes(LearnerCommands(engine, on_change=changes.append))) as api:
        yield api


@pytest.fixture
def producer(tiny, tmp_path_factory):
    """A paced replay (about 5 s for the whole tiny log) running in a thread on the memory bus."""
    from replay_data.prepared import prepare

    cfg = tiny[0]
    log, _ = prepare(cfg.data, tmp_path_factory.mktemp("prepared"), progress=False)
    settings = ReplaySettings(partitions=2, block_events=50, max_events_per_second=1000)
    producer = ReplayProducer(MemoryBus(), log, "control-test", settings)
    producer.publish_manifest()
    stop = threading.Event()
    thread = threading.Thread(target=producer.run, args=(stop,), daemon=True)
    thread.start()
    commands = ProducerCommands(producer)
    with start_api(producer_routes(commands)) as api:
        yield producer, commands, api
    producer.resume()
    stop.set()
    thread.join(5)


def test_status_and_strategies(engine, learner_api):
    status, answer = call(learner_api.url + "/status")
    assert status == 200 and answer["ready"] is True
    assert {k: answer[k] for k in engine.control_state()} == engine.control_state()
    status, answer = call(learner_api.url + "/strategies")
    by_name = {s["name"]: s for s in answer["strategies"]}
    assert status == 200 and by_name["fine_tune"]["enabled"] and by_name["spmf"]["started"]
    assert not by_name["sml"]["enabled"] and not by_name["sml"]["started"]


def test_a_swap_over_http_shows_in_status_and_reaches_on_change(engine, learner_api, changes, caplog):
    caplog.set_level(logging.INFO, logger="rtsim.control")
    serving = engine.serving
    other = "spmf" if serving == "fine_tune" else "fine_tune"
    swaps = engine.swaps
    try:
        status, answer = call(learner_api.url + "/serving", "PUT", {"strategy": other})
        assert status == 200 and answer["swapped"] is True
        status, answer = call(learner_api.url + "/status")
        assert answer["serving"] == other and answer["swaps"] == swaps + 1
        event = changes[-1]
        assert event["command"] == "serve" and event["strategy"] == other and event["target"] == "learner"
        assert any(r.name == "rtsim.control" and other in r.getMessage() for r in caplog.records)
        status, answer = call(learner_api.url + "/serving", "PUT", {"strategy": other})
        assert status == 200 and answer["swapped"] is False and engine.swaps == swaps + 1
    finally:
        engine.set_serving(serving)


def test_enable_and_disable_are_queued_for_the_period_boundary(tiny, learner_api):
    # a fresh engine: the module's one must keep its enabled set for the other tests
    cfg, phases, periods = tiny
    strategies = replace(cfg.learner.strategies, enabled=["fine_tune", "spmf"], serving="fine_tune")
    engine = Engine(replace(cfg.learner, strategies=strategies), phases)
    with start_api(learner_routes(LearnerCommands(engine))) as api:
        status, answer = call(api.url + "/strategies/full_retrain", "POST", {"from_serving": True})
        assert status == 202 and answer["action"] == "enable" and answer["from_serving"] is True
        status, answer = call(api.url + "/strategies/spmf", "DELETE")
        assert status == 202 and answer["action"] == "disable"
        assert [(p["action"], p["strategy"]) for p in engine.control_state()["pending"]] == [
            ("enable", "full_retrain"),
            ("disable", "spmf"),
        ]
        engine.close_period(*periods[0])
        state = call(api.url + "/status")[1]
        assert state["enabled"] == ["fine_tune", "full_retrain"] and state["pending"] == []


def _history_items(tiny, user: str, closed: int) -> set[str]:
    periods = tiny[2]
    return {item for _, frame in periods[:closed] for item in frame.loc[frame["user"] == user, "item"]}


def test_recommend_a_known_user_excludes_what_they_have_seen(tiny, engine, learner_api):
    closed = engine.next_period
    users = tiny[2][closed - 1][1]["user"].value_counts()
    light = next(u for u in reversed(users.index) if len(_history_items(tiny, u, closed)) <= 10)
    status, answer = call(learner_api.url + f"/recommend?user={light}&k=7")
    assert status == 200 and answer["fallback"] is None and answer["user"] == light and answer["k"] == 7
    items = answer["items"]
    assert len(items) == 7 == len(set(items)) and set(items) <= set(engine.item_vocab.ids)
    assert not set(items) & _history_items(tiny, light, closed)
    assert answer["strategy"] == engine.serving
    # the tiny world has few items: its busiest user has seen nearly all, and gets the rest
    busy = users.index[0]
    seen = _history_items(tiny, busy, closed)
    answer = call(learner_api.url + f"/recommend?user={busy}&k=1000")[1]
    assert sorted(answer["items"]) == sorted(set(engine.item_vocab.ids) - seen)


def test_recommend_an_unknown_user_gets_the_last_periods_popular_items(tiny, engine, learner_api):
    status, answer = call(learner_api.url + "/recommend?user=nobody-ever&k=5")
    assert status == 200 and answer["fallback"] == "popular_last_period" and len(answer["items"]) == 5
    counts = Counter(tiny[2][engine.next_period - 1][1]["item"])
    chosen = [counts[i] for i in answer["items"]]
    assert chosen == sorted(chosen, reverse=True)
    assert min(chosen) >= max(c for item, c in counts.items() if item not in answer["items"])
    status, answer = call(learner_api.url + "/recommend?user=nobody-ever")
    assert status == 200 and len(answer["items"]) == 10


def test_recommend_before_any_strategy_exists_is_a_conflict(tiny):
    cfg, phases, _ = tiny
    with start_api(learner_routes(LearnerCommands(Engine(cfg.learner, phases)))) as api:
        status, answer = call(api.url + "/recommend?user=u1")
    assert status == 409 and "pretraining" in answer["error"]


@pytest.mark.parametrize(
    "method, path, body, raw, expected",
    [
        ("PUT", "/serving", {"strategy": "nope"}, None, 404),
        ("POST", "/strategies/nope", None, None, 404),
        ("PUT", "/serving", None, b'{"strategy": ', 400),  # malformed JSON
        ("PUT", "/serving", None, b"[1, 2]", 400),  # not an object
        ("PUT", "/serving", None, b'{"strategy": "' + b"x" * MAX_BODY_BYTES + b'"}', 413),
        ("DELETE", "/strategies/fine_tune", None, None, 409),  # serving
        ("POST", "/strategies/spmf", None, None, 409),  # already enabled
        ("PUT", "/serving", {"strategy": "sml"}, None, 409),  # not enabled
        ("DELETE", "/status", None, None, 405),
        ("PATCH", "/serving", {"strategy": "spmf"}, None, 405),
        ("GET", "/nowhere", None, None, 404),
        ("PUT", "/serving", {}, None, 400),  # missing field
        ("PUT", "/serving", {"strategy": 3}, None, 400),
        ("PUT", "/serving", {"strategy": "spmf", "extra": 1}, None, 400),
        ("POST", "/strategies/spmf", {"from_serving": "yes"}, None, 400),
        ("POST", "/strategies/spmf", {"strategy": "sml"}, None, 400),  # given twice
        ("GET", "/recommend?k=5", None, None, 400),  # no user
        ("GET", "/recommend?user=u&k=0", None, None, 400),
        ("GET", "/recommend?user=u&k=ten", None, None, 400),
        ("GET", "/status?verbose=1", None, None, 400),
    ],
)
def test_bad_requests_are_refused_with_json_and_change_nothing(engine, learner_api, method, path, body, raw, expected):
    before = engine.control_state()
    status, answer = call(learner_api.url + path, method, body, raw)
    assert status == expected and isinstance(answer["error"], str) and answer["error"]
    assert engine.control_state() == before


def test_a_non_loopback_bind_needs_a_token_and_a_taken_port_is_named():
    with pytest.raises(ApiConfigError, match="token"):
        start_api([], host="0.0.0.0")
    with start_api([]) as api:
        with pytest.raises(OSError, match=f"{api.port}.*--control-port"):
            start_api([], port=api.port)


def burst(port: int, requests: list[bytes]) -> Counter:
    """Every request from its own client, all released at once: each answer's status line,
    or the error its client got (a reset connection shows as ConnectionResetError)."""
    start = threading.Barrier(len(requests))
    outcomes: Counter = Counter()
    lock = threading.Lock()

    def client(request: bytes) -> None:
        start.wait()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
                sock.sendall(request)
                answer = b""
                while chunk := sock.recv(65536):
                    answer += chunk
            outcome = answer.split(b"\r\n", 1)[0].decode()[9:12] or "no answer"
        except OSError as err:
            outcome = type(err).__name__
        with lock:
            outcomes[outcome] += 1

    threads = [threading.Thread(target=client, args=(request,)) for request in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return outcomes


def _put_serving(strategy: str) -> bytes:
    body = json.dumps({"strategy": strategy}).encode()
    return b"PUT /serving HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )


def test_a_burst_of_500_requests_gets_500_answers_and_no_reset(engine, learner_api):
    """Issue #18: of 200 simultaneous PUT /serving, 16 connections were reset (a listen
    backlog of 5). Answers may refuse (409), but every client gets one."""
    from prometheus_client import CollectorRegistry

    from learner.metrics import serve

    serving = engine.serving
    requests = [_put_serving(serving) if i % 2 else b"GET /status HTTP/1.0\r\n\r\n" for i in range(500)]
    outcomes = burst(learner_api.port, requests)
    assert set(outcomes) <= {"200", "409"} and outcomes["200"] >= 250, outcomes
    assert engine.serving == serving
    server, port = serve(CollectorRegistry())
    try:
        assert burst(port, [b"GET /metrics HTTP/1.0\r\n\r\n"] * 500) == {"200": 500}
    finally:
        server.shutdown()
        server.server_close()


def test_with_a_token_every_request_must_carry_it(engine):
    with start_api(learner_routes(LearnerCommands(engine)), token="s3cret") as api:
        assert call(api.url + "/status")[0] == 401
        assert call(api.url + "/status", token="wrong")[0] == 401
        assert call(api.url + "/nowhere", token="wrong")[0] == 401  # nothing about paths leaks
        before = engine.control_state()
        assert call(api.url + "/serving", "PUT", {"strategy": "spmf"}, token="wrong")[0] == 401
        assert engine.control_state() == before
        assert call(api.url + "/status", token="s3cret")[0] == 200


def test_load_token_from_a_file_or_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("RTSIM_CONTROL_TOKEN", raising=False)
    assert load_token(None) is None
    monkeypatch.setenv("RTSIM_CONTROL_TOKEN", "from-env")
    assert load_token(None) == "from-env"
    path = tmp_path / "token"
    path.write_text("from-file\n")
    assert load_token(str(path)) == "from-file"
    path.write_text("")
    with pytest.raises(ApiConfigError, match="empty"):
        load_token(str(path))


def test_pause_resume_and_speed_change_the_producer(producer):
    replay, _, api = producer
    wait_for(lambda: replay.stats.produced > 0)
    status, answer = call(api.url + "/pause", "POST")
    assert status == 200 and answer["paused"] is True
    time.sleep(0.3)  # a block already under way may still go out
    held = replay.stats.produced
    time.sleep(0.5)
    assert replay.stats.produced == held < len(replay.log.ts)
    status, answer = call(api.url + "/resume", "POST")
    assert status == 200 and answer["paused"] is False
    wait_for(lambda: replay.stats.produced > held)
    status, answer = call(api.url + "/speed", "PUT", {"speed": 7200})
    assert status == 200 and answer["speed"] == 7200 and replay.stats.speed == 7200
    status, answer = call(api.url + "/speed", "PUT", {"speed": "max"})
    assert status == 200 and answer["speed"] == "max" and replay.stats.speed is None
    for bad in ({"speed": 0}, {"speed": "fast"}, {"speed": True}, {}):
        assert call(api.url + "/speed", "PUT", bad)[0] == 400
    assert replay.stats.speed is None
    status, answer = call(api.url + "/status")
    assert status == 200 and answer["run_id"] == "control-test" and answer["n_events"] == len(replay.log.ts)


def ctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "simulator.cli", "ctl", *args], capture_output=True, text=True, timeout=30
    )


def test_rtsim_ctl_against_running_servers(engine, learner_api, producer):
    replay, _, producer_api = producer
    serving = engine.serving
    other = "spmf" if serving == "fine_tune" else "fine_tune"
    try:
        done = ctl("serve", other, "--url", learner_api.url)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["serving"] == other
        done = ctl("--url", learner_api.url, "status")
        assert done.returncode == 0 and json.loads(done.stdout)["serving"] == other
    finally:
        engine.set_serving(serving)
    done = ctl("serve", "nope", "--url", learner_api.url)
    assert done.returncode == 1 and "unknown strategy" in done.stderr
    done = ctl("speed", "7200", "--producer-url", producer_api.url)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["speed"] == 7200 and replay.stats.speed == 7200


def test_rtsim_ctl_reports_an_unreachable_server():
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    done = ctl("status", "--url", f"http://127.0.0.1:{port}")
    assert done.returncode == 2 and "cannot reach" in done.stderr and "--url" in done.stderr


def test_the_control_topic_applies_new_commands_for_this_run_only(engine):
    bus, stop = MemoryBus(), threading.Event()
    serving = engine.serving
    other = "spmf" if serving == "fine_tune" else "fine_tune"
    publish_command(bus, "rtsim", "learner", "run-a", "serve", {"strategy": other})  # before the listener
    listener = ControlTopicListener(bus, "rtsim", "learner", "run-a", LearnerCommands(engine), stop).start()
    try:
        publish_command(bus, "rtsim", "learner", "run-b", "serve", {"strategy": other})
        publish_command(bus, "rtsim", "producer", None, "pause", {})
        bus.producer().send("rtsim.control", b"{not json", partition=0)
        publish_command(bus, "rtsim", "learner", "run-a", "serve", {"strategy": "nope"})
        wait_for(lambda: listener.ignored + listener.rejected == 4)
        assert engine.serving == serving and listener.applied == 0
        assert (listener.ignored, listener.rejected) == (2, 2)
        publish_command(bus, "rtsim", "learner", None, "serve", {"strategy": other})
        wait_for(lambda: listener.applied == 1)
        assert engine.serving == other
    finally:
        stop.set()
        listener.join(5)
        engine.set_serving(serving)


def test_the_control_topic_reaches_the_producer(producer):
    replay, commands, _ = producer
    bus, stop = MemoryBus(), threading.Event()
    listener = ControlTopicListener(bus, "rtsim", "producer", "control-test", commands, stop).start()
    try:
        publish_command(bus, "rtsim", "producer", "control-test", "speed", {"speed": 3600})
        wait_for(lambda: listener.applied == 1)
        assert replay.stats.speed == 3600
    finally:
        stop.set()
        listener.join(5)


def test_commands_validate_their_arguments_directly(engine):
    commands = LearnerCommands(engine)
    with pytest.raises(RequestError) as err:
        commands.apply("reboot", {})
    assert err.value.status == 400 and "allowed" in str(err.value)
    with pytest.raises(RequestError) as err:
        commands.apply("recommend", {"user": "u", "k": 1001})
    assert err.value.status == 400


def test_rtsim_ctl_publishes_on_the_kafka_control_topic(engine, kafka_bootstrap):
    from simulator.bus.kafka import KafkaBus

    bus, stop = KafkaBus(kafka_bootstrap), threading.Event()
    prefix = f"ctl{time.time_ns()}"  # a control topic of this test's own
    serving = engine.serving
    other = "spmf" if serving == "fine_tune" else "fine_tune"
    listener = ControlTopicListener(bus, prefix, "learner", "run-k", LearnerCommands(engine), stop).start()
    try:
        for run_id in ("run-other", "run-k"):
            done = ctl("serve", other, "--bus", f"kafka://{kafka_bootstrap}", "--prefix", prefix, "--run-id", run_id)
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout)["published"]["run_id"] == run_id
        wait_for(lambda: listener.applied == 1, timeout_s=30)
        assert listener.ignored == 1 and engine.serving == other
        done = ctl("status", "--bus", f"kafka://{kafka_bootstrap}")
        assert done.returncode == 2 and "HTTP" in done.stderr
    finally:
        stop.set()
        listener.join(10)
        bus.close()
        engine.set_serving(serving)


def test_nothing_listens_or_connects_before_an_exposed_api_is_refused(tiny, tmp_path, monkeypatch):
    """Issue #18: with --host 0.0.0.0 and no token, the learner's metrics server was already
    listening on every interface when the control API was refused."""
    from simulator import run
    from simulator.config import resolve
    from simulator.rundir import RunDir

    def must_not_happen(*args, **kwargs):
        raise AssertionError("served or connected before the token check")

    monkeypatch.delenv("RTSIM_CONTROL_TOKEN", raising=False)
    monkeypatch.setattr(run, "serve", must_not_happen)
    monkeypatch.setattr(run, "connect", must_not_happen)
    cfg = resolve("tiny", overrides=["serve.host=0.0.0.0"])
    for start in (
        lambda: run.run_embedded(cfg, None, RunDir(tmp_path, "embedded"), report=lambda line: None),
        lambda: run.replay(cfg, None, "alone", report=lambda line: None),
        lambda: run.learn(cfg, str(tmp_path), "learner", report=lambda line: None),
    ):
        with pytest.raises(ApiConfigError, match="without a token.*127.0.0.0/8, ::1, localhost"):
            start()
    assert not list(tmp_path.iterdir())
