"""The learner's model of control: swaps, enabling with warm hand-over, disabling, bad requests."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from learner.engine import ControlError, Engine, UnknownStrategy
from simulator.control import http_status


def _engine(tiny, enabled=("fine_tune", "sml"), serving="fine_tune"):
    cfg, phases, periods = tiny
    learner_cfg = replace(
        cfg.learner, strategies=replace(cfg.learner.strategies, enabled=list(enabled), serving=serving)
    )
    return Engine(learner_cfg, phases), periods


def _close(engine, periods, upto):
    out = []
    while engine.next_period < upto:
        t, events = periods[engine.next_period]
        out.append(engine.close_period(t, events))
    return out


def test_a_swap_takes_effect_at_once_and_is_recorded(tiny):
    engine, periods = _engine(tiny)
    first = _close(engine, periods, 3)[-1]
    assert {r.strategy: r.serving for r in first} == {"fine_tune": True, "sml": False}
    assert engine.set_serving("sml") is True and engine.set_serving("sml") is False
    assert engine.control_state()["serving"] == "sml" and engine.swaps == 1
    (after,) = _close(engine, periods, 4)
    assert {r.strategy: r.serving for r in after} == {"fine_tune": False, "sml": True}


def test_enabling_a_new_strategy_starts_it_from_the_serving_model_at_the_boundary(tiny):
    engine, periods = _engine(tiny)
    _close(engine, periods, 3)
    engine.request_enable("spmf")
    assert "spmf" not in engine.strategies and engine.control_state()["pending"]
    with pytest.raises(ControlError):
        engine.set_serving("spmf")  # not running yet
    _close(engine, periods, 4)
    serving_users, serving_items = engine.strategies["fine_tune"].serving_embeddings()
    users, items = engine.strategies["spmf"].serving_embeddings()
    assert torch.equal(users, serving_users) and torch.equal(items, serving_items)
    (results,) = _close(engine, periods, 5)
    assert [r.strategy for r in results] == ["fine_tune", "sml", "spmf"]


def test_disable_keeps_state_and_reenable_resumes_it(tiny):
    engine, periods = _engine(tiny)
    _close(engine, periods, 3)
    engine.request_disable("sml")
    _close(engine, periods, 4)
    assert engine.control_state()["enabled"] == ["fine_tune"] and engine.control_state()["disabled"] == ["sml"]
    kept = engine.strategies["sml"].serving_embeddings()[1].clone()
    (results,) = _close(engine, periods, 5)
    assert [r.strategy for r in results] == ["fine_tune"]
    engine.request_enable("sml")
    _close(engine, periods, 6)
    resumed = engine.strategies["sml"].serving_embeddings()[1]
    assert torch.equal(resumed[: len(kept)], kept), "its own state, not the serving model's"
    assert resumed.shape[0] == len(engine.item_vocab), "caught up with ids registered while off"
    (results,) = _close(engine, periods, 7)
    assert [r.strategy for r in results] == ["fine_tune", "sml"]


@pytest.mark.parametrize(
    "request_, status",
    [
        (lambda e: e.set_serving("nope"), 404),
        (lambda e: e.request_enable("nope"), 404),
        (lambda e: e.request_disable("fine_tune"), 409),  # serving
        (lambda e: e.request_disable("spmf"), 409),  # not enabled
        (lambda e: e.request_enable("sml"), 409),  # already enabled
        (lambda e: e.set_serving("spmf"), 409),  # not enabled
    ],
)
def test_impossible_requests_are_refused_and_change_nothing(tiny, request_, status):
    engine, periods = _engine(tiny)
    _close(engine, periods, 3)
    before = engine.control_state()
    with pytest.raises(ControlError) as err:
        request_(engine)
    assert isinstance(err.value, UnknownStrategy) == (status == 404)
    assert http_status(err.value) == status and str(err.value)
    assert engine.control_state() == before
