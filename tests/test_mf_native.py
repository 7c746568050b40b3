"""The compiled CPU MF loop against the torch path it replaces (which stays for CUDA)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

import learner.mf as mf
from learner.config import TrainSpec
from learner.engine import Engine
from learner.mf import MF, train_mf
from learner.results import as_row

MF_STRATEGIES = ["fine_tune", "full_retrain", "spmf", "frozen"]


def _trained(monkeypatch, runner, n_users: int, n_items: int, l2: float) -> MF:
    monkeypatch.setattr(mf, "epoch_runner", lambda device: runner)
    gen = torch.Generator().manual_seed(0)
    model = MF.from_rows(torch.randn(n_users, 16, generator=gen) * 0.1, torch.randn(n_items, 16, generator=gen) * 0.1)
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, n_users, 3000), rng.integers(0, n_items, 3000)
    # few rows: every batch repeats users and items, and a row can be both positive and negative
    train_mf(model, users, items, lambda u, g: g.integers(0, n_items, len(u)),
             TrainSpec(lr=0.05, batch=100, epochs=3, l2=l2), rng)
    return model


@pytest.mark.parametrize("l2", [0.0, 0.1])
def test_native_epoch_matches_torch_steps(monkeypatch, l2):
    old = _trained(monkeypatch, mf.torch_epoch, 40, 30, l2)
    new = _trained(monkeypatch, mf.native_epoch, 40, 30, l2)
    for a, b in [(old.users, new.users), (old.items, new.items)]:
        assert a.step == b.step == 90  # 3 epochs of 30 batches: the bias correction's count
        for key in ("weight", "exp_avg", "exp_avg_sq"):
            assert torch.allclose(getattr(a, key), getattr(b, key), rtol=1e-4, atol=1e-6), key


def test_native_epoch_leaves_unused_rows_alone(monkeypatch):
    before = _trained(monkeypatch, mf.native_epoch, 40, 30, 0.0).copy()
    model = before.copy()
    mf.native_epoch(model, np.array([3]), np.array([5]), np.array([5]), [(0, 1)], TrainSpec())
    changed = (model.items.weight != before.items.weight).any(1).nonzero().flatten().tolist()
    assert changed == [5] and (model.users.weight != before.users.weight).any(1).nonzero().flatten().tolist() == [3]


def _tiny_run(tiny, monkeypatch, runner):
    monkeypatch.setattr(mf, "epoch_runner", lambda device: runner)
    cfg, phases, periods = tiny
    engine = Engine(replace(cfg.learner, strategies=replace(cfg.learner.strategies, enabled=MF_STRATEGIES)), phases)
    rows = [as_row(r) for t, events in periods for r in engine.close_period(t, events)]
    return engine, rows


def test_torch_and_native_paths_agree_on_the_tiny_preset(tiny, monkeypatch):
    old_engine, old_rows = _tiny_run(tiny, monkeypatch, mf.torch_epoch)
    new_engine, new_rows = _tiny_run(tiny, monkeypatch, mf.native_epoch)
    for name in MF_STRATEGIES:
        for a, b in zip(old_engine.strategies[name].serving_embeddings(), new_engine.strategies[name].serving_embeddings()):
            assert torch.allclose(a, b, atol=1e-4), name
    assert len(old_rows) == len(new_rows)
    for a, b in zip(old_rows, new_rows):
        for key, value in a.items():
            if key.endswith("_seconds"):
                continue
            if isinstance(value, float):
                assert value == pytest.approx(b[key], abs=1e-4, nan_ok=True), (key, a["strategy"])
            else:
                assert value == b[key], key
