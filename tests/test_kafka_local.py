"""Integration tests of the local Kafka broker manager against a real broker."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import TopicAlreadyExistsError

from simulator.kafka_local import (
    BROKER_LOG,
    HOST,
    JARS_MARKER,
    KAFKA_VERSION,
    PID_FILE,
    KafkaLocalError,
    LocalKafka,
    ensure_jars,
    jars_dir,
)

pytestmark = pytest.mark.kafka


def _script(path: Path, body: str) -> Path:
    """An executable Python script standing in for java or mvn."""
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _create_topic(admin: KafkaAdminClient, name: str) -> None:
    spec = {name: {"num_partitions": 3, "replication_factor": 1, "configs": {"retention.ms": "-1"}}}
    try:
        admin.create_topics(spec, wait_for_metadata=True)
    except TopicAlreadyExistsError:
        pass


def test_produce_consume_round_trip(kafka_bootstrap: str) -> None:
    topic = "rtsim.events.test-round-trip"
    with KafkaAdminClient(bootstrap_servers=kafka_bootstrap) as admin:
        _create_topic(admin, topic)
        _create_topic(admin, topic)  # idempotent: the second call is a no-op
        (described,) = admin.describe_topics([topic])
        assert len(described["partitions"]) == 3
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        assert configs["topic"][topic]["retention.ms"]["value"] == "-1"

    headers = [("rtsim-type", b"events"), ("rtsim-format", b"1")]
    sent: list[tuple[bytes, bytes]] = []
    per_partition = {p: 0 for p in range(3)}
    with KafkaProducer(bootstrap_servers=kafka_bootstrap) as producer:
        futures = []
        for i in range(60):
            key = f"user-{i % 7}".encode()
            value = f'{{"ts": {1_600_000_000 + i}, "user": "u{i % 7}", "item": "i{i}"}}'.encode()
            futures.append(producer.send(topic, key=key, value=value, headers=headers))
            sent.append((key, value))
        producer.flush()
        for future in futures:
            per_partition[future.get(timeout=30).partition] += 1
    assert sum(1 for n in per_partition.values() if n) > 1, "keys should spread over partitions"

    partitions = [TopicPartition(topic, p) for p in range(3)]
    with KafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False) as consumer:
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        end_offsets = consumer.end_offsets(partitions)
        assert {tp.partition: off for tp, off in end_offsets.items()} == per_partition
        received: list[ConsumerRecord] = []
        deadline = time.monotonic() + 30
        while len(received) < len(sent) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                received.extend(records)
    assert sorted((r.key, r.value) for r in received) == sorted(sent)
    assert all(list(r.headers) == headers for r in received)


def test_status_up_down_and_restart_reuses_jars_and_storage(tmp_path: Path) -> None:
    broker = LocalKafka(tmp_path / "state", port=0, die_with_parent=True)
    assert broker.status()["running"] is False
    try:
        bootstrap = broker.up()
        status = broker.status()
        assert status["running"] is True
        assert status["bootstrap"] == bootstrap == f"{HOST}:{broker.port}"
        assert status["version"] == KAFKA_VERSION
        assert status["state_dir"] == str(tmp_path / "state")
        pid = status["pid"]
        assert isinstance(pid, int)
        assert int((tmp_path / "state" / PID_FILE).read_text()) == pid
        assert broker.up() == bootstrap  # already running: same broker, no second JVM
        assert broker.status()["pid"] == pid
        # Another process sees the same broker through the state directory.
        assert LocalKafka(tmp_path / "state").status()["pid"] == pid

        assert broker.down() is True
        assert broker.status()["running"] is False
        assert not (tmp_path / "state" / PID_FILE).exists()
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        assert broker.down() is False

        meta_properties = tmp_path / "state" / "data" / "meta.properties"
        cluster = meta_properties.read_text()
        marker = jars_dir().parent / JARS_MARKER
        marker_mtime = marker.stat().st_mtime_ns
        assert broker.up() == bootstrap
        assert marker.stat().st_mtime_ns == marker_mtime, "jars were fetched again"
        assert meta_properties.read_text() == cluster, "storage was formatted again"
    finally:
        broker.down()


def _rtsim_kafka(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "simulator.cli", "kafka", *args], capture_output=True, text=True, timeout=180
    )


def test_the_kafka_command_starts_reports_and_stops_a_broker(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    try:
        up = _rtsim_kafka("up", "--port", "0", "--dir", state)
        assert up.returncode == 0, up.stderr
        bootstrap = up.stdout.strip()
        assert bootstrap.startswith(f"{HOST}:")
        assert f"state in {state}; stop it with `rtsim kafka down`" in up.stderr

        status = _rtsim_kafka("status", "--dir", state, "--json")
        assert status.returncode == 0
        assert json.loads(status.stdout)["bootstrap"] == bootstrap
        plain = _rtsim_kafka("status", "--dir", state)
        assert plain.returncode == 0 and f"bootstrap: {bootstrap}" in plain.stdout.splitlines()

        assert _rtsim_kafka("down", "--dir", state).returncode == 0
        stopped = _rtsim_kafka("status", "--dir", state)
        assert stopped.returncode == 3  # LSB: not running
        assert "running: False" in stopped.stdout.splitlines()
        again = _rtsim_kafka("down", "--dir", state)
        assert again.returncode == 0 and f"nothing to stop: the broker is not running from {state}" in again.stderr
    finally:
        LocalKafka(state).down()


def test_the_kafka_command_reports_a_failure_with_exit_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _rtsim_kafka("up", "--port", str(port), "--dir", str(tmp_path))
    assert done.returncode == 1
    assert done.stderr.startswith("rtsim kafka: error: ") and "already in use" in done.stderr


def test_up_on_a_taken_port_says_so(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(KafkaLocalError, match=rf"port {port} .* already in use"):
            LocalKafka(tmp_path, port=port).up()


def test_missing_java_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(KafkaLocalError, match=r"Java 17\+ is needed.*Install"):
        LocalKafka(tmp_path, port=0, java=str(tmp_path / "no-such-java")).up()

    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(KafkaLocalError, match=r"Java 17\+ is needed.*JAVA_HOME"):
        LocalKafka(tmp_path, port=0).up()


def test_old_java_is_refused(tmp_path: Path) -> None:
    java8 = _script(
        tmp_path / "java",
        "import sys\nprint('java version \"1.8.0_292\"', file=sys.stderr)\n",
    )
    with pytest.raises(KafkaLocalError, match=r"needs Java 17 or newer.*is Java 8"):
        LocalKafka(tmp_path / "state", port=0, java=str(java8)).up()


def test_jar_fetch_is_cached_and_a_failed_fetch_is_redone(tmp_path: Path) -> None:
    with pytest.raises(KafkaLocalError, match=r"Maven \(mvn\) is needed"):
        ensure_jars(tmp_path, mvn=str(tmp_path / "no-such-mvn"))

    calls = tmp_path / "calls"
    # A stand-in for Maven: the first run half-downloads and fails, later runs succeed.
    mvn = _script(
        tmp_path / "mvn",
        f"""
import pathlib, sys
calls = pathlib.Path({str(calls)!r})
n = len(calls.read_text()) if calls.exists() else 0
calls.write_text("x" * (n + 1))
lib = pathlib.Path(next(a for a in sys.argv if a.startswith("-DoutputDirectory="))
                   .split("=", 1)[1])
lib.mkdir(parents=True, exist_ok=True)
(lib / "half.jar").write_text("")
if n == 0:
    print("Could not transfer artifact: connection reset")
    sys.exit(1)
(lib / "kafka_2.13-{KAFKA_VERSION}.jar").write_text("")
""",
    )
    with pytest.raises(KafkaLocalError, match=r"(?s)could not fetch.*connection reset"):
        ensure_jars(tmp_path, mvn=str(mvn))
    assert not (jars_dir(tmp_path).parent / JARS_MARKER).exists()

    lib = ensure_jars(tmp_path, mvn=str(mvn))
    assert (lib / f"kafka_2.13-{KAFKA_VERSION}.jar").exists()
    assert ensure_jars(tmp_path, mvn=str(mvn)) == lib
    assert len(calls.read_text()) == 2, "a complete download must not run Maven again"


def test_a_broker_that_cannot_start_reports_its_log(tmp_path: Path) -> None:
    broker = LocalKafka(tmp_path / "state", port=0, die_with_parent=True)
    data = tmp_path / "state" / "data"
    data.mkdir(parents=True)
    # Storage that belongs to another node: the broker refuses it at start.
    (data / "meta.properties").write_text(
        "version=1\ncluster.id=AAAAAAAAAAAAAAAAAAAAAA\nnode.id=2\ndirectory.id=BBBBBBBBBBBBBBBBBBBBBB\n"
    )
    with pytest.raises(KafkaLocalError, match=r"(?s)exited with code .*" + BROKER_LOG):
        broker.up(wait_s=60)
    assert broker.status()["running"] is False
