"""Session-scoped Kafka for the tests: one real broker per pytest session.

Load it from tests/conftest.py with `pytest_plugins = ["tests.kafka_fixture"]`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from simulator.kafka_local import HOST, KafkaLocalError, LocalKafka
from tests.ci import unavailable

# A cold CI machine also fetches the jars (about 10 s) before the broker starts.
START_WAIT_S = 120.0


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """The session's running broker: on a free port, its state in a temp directory.

    If it cannot start, tests that need it are skipped with the reason, except in CI
    (CI=true), where they fail: CI must never pass by skipping the Kafka tests.
    """
    broker = LocalKafka(tmp_path_factory.mktemp("kafka"), port=0, die_with_parent=True)
    try:
        broker.up(wait_s=START_WAIT_S)
    except KafkaLocalError as exc:
        unavailable(f"the local Kafka broker could not start: {exc}")
    try:
        yield broker
    finally:
        broker.down()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: LocalKafka) -> str:
    """Bootstrap address of the session's broker, e.g. "127.0.0.1:41234"."""
    return f"{HOST}:{kafka_broker.port}"
