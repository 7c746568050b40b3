"""Served-table health: non-finite rows and row norms are counted, reported and guarded."""

from __future__ import annotations

import logging
import math
from dataclasses import replace

import pandas as pd
import torch

from learner.health import NormGuard, table_health
from learner.results import as_row, summary_markdown


def test_table_health_counts_non_finite_rows_and_the_largest_finite_norm():
    users = torch.tensor([[3.0, 4.0], [float("nan"), 0.0]])
    items = torch.tensor([[1.0, 0.0], [float("inf"), 1.0], [0.0, -12.0]])
    health = table_health(users, items)
    assert health.nonfinite_rows == 2
    assert health.max_row_norm == 12.0


def test_a_norm_beyond_float32_squares_is_measured_not_overflowed():
    assert math.isclose(table_health(torch.tensor([[3e30, 4e30]])).max_row_norm, 5e30, rel_tol=1e-6)


def test_guard_warns_on_growth_beyond_the_factor_above_the_floor_and_on_non_finite_rows(caplog):
    guard = NormGuard(growth=2.0, floor=100.0)
    caplog.set_level(logging.WARNING, "rtsim.learner")
    assert not guard.check(0, "sml", table_health(torch.full((2, 4), 0.5)))  # norm 1
    assert not guard.check(1, "sml", table_health(torch.full((2, 4), 7.0)))  # 14x, but only 14: below the floor
    assert not guard.check(2, "sml", table_health(torch.full((2, 4), 13.0)))
    assert guard.check(3, "sml", table_health(torch.full((2, 4), 60.0)))  # 4.6x, to 120: above it
    assert "grew" in caplog.text and "sml" in caplog.text
    assert not guard.check(4, "sml", table_health(torch.full((2, 4), 110.0)))  # 1.8x: within the factor
    assert guard.check(5, "sml", table_health(torch.full((2, 4), float("nan"))))
    assert "not finite" in caplog.text
    restored = NormGuard(2.0, 100.0)
    restored.load_state_dict(guard.state_dict())
    assert restored.last.keys() == {"sml"}


def test_a_diverged_strategy_ranks_last_and_is_flagged(tiny):
    """The issue's `tiny` case: fine_tune at lr 1e38 overflows to NaN; it must not win."""
    from learner.engine import Engine

    cfg, phases, periods = tiny
    fine = replace(
        cfg.learner.strategies.fine_tune, train=replace(cfg.learner.strategies.fine_tune.train, lr=1e38, epochs=10)
    )
    strategies = replace(
        cfg.learner.strategies, enabled=["fine_tune", "full_retrain"], serving="full_retrain", fine_tune=fine
    )
    engine = Engine(replace(cfg.learner, strategies=strategies), phases)
    rows = pd.DataFrame([as_row(r) for t, events in periods for r in engine.close_period(t, events)])
    late = rows[rows["period"] > phases.index("online")]  # fine_tune has retrained by then
    fine_rows, full_rows = late[late["strategy"] == "fine_tune"], late[late["strategy"] == "full_retrain"]
    assert (fine_rows["nonfinite_rows"] > 0).all()
    assert (full_rows["nonfinite_rows"] == 0).all() and (full_rows["max_row_norm"] > 0).all()
    assert (fine_rows["ndcg@20"].to_numpy() < full_rows["ndcg@20"].to_numpy()).all()
    summary = summary_markdown(rows, "t")
    assert "| fine_tune † |" in summary and "| full_retrain |" in summary
    assert "fine_tune served rows that are not finite" in summary
