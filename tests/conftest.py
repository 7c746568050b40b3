"""Shared fixtures. Integration fixtures (a real Kafka broker) live in their own modules."""

from __future__ import annotations

import os
import tempfile

import pytest
from hypothesis import HealthCheck, settings

from tests.ci import IN_CI

pytest_plugins = ["tests.kafka_fixture"]

# runs started by tests announce their metrics for Prometheus discovery (simulator/targets.py):
# here, not in the user's folder, where a `rtsim monitor up` would scrape them. Set at import,
# before test modules copy the environment for the processes they start.
os.environ.setdefault("RTSIM_TARGETS_DIR", tempfile.mkdtemp(prefix="rtsim-test-targets-"))

settings.register_profile("ci", max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=25, deadline=None)
settings.load_profile("ci" if IN_CI else "dev")


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """The tiny preset, prepared once per session: (config, phases, periods as raw frames)."""
    from replay_data.prepared import prepare
    from simulator.config import resolve
    from simulator.run import prepared_periods

    cfg = resolve("tiny")
    log, _ = prepare(cfg.data, tmp_path_factory.mktemp("prepared"), progress=False)
    return cfg, log.phases, list(prepared_periods(log))


@pytest.fixture(scope="module")
def engine(tiny):
    """An engine for control tests, one per module: fine_tune serving, spmf shadowing,
    after the first online period closed."""
    from dataclasses import replace

    from learner.engine import Engine

    cfg, phases, periods = tiny
    strategies = replace(cfg.learner.strategies, enabled=["fine_tune", "spmf"], serving="fine_tune")
    engine = Engine(replace(cfg.learner, strategies=strategies), phases)
    for t, events in periods[:3]:
        engine.close_period(t, events)
    return engine


@pytest.fixture
def scored_tables(monkeypatch):
    """Every (user table, item table) pair the engine scores from now on, copied as scored:
    what a leakage test compares with the state before the period."""
    import learner.engine as engine_module

    scored: list = []
    real = engine_module.rank_positives

    def recording(user_emb, item_emb, *args, **kwargs):
        scored.append((user_emb.clone(), item_emb.clone()))
        return real(user_emb, item_emb, *args, **kwargs)

    monkeypatch.setattr(engine_module, "rank_positives", recording)
    return scored
