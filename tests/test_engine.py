"""End-to-end properties of the period engine on the tiny preset."""

from __future__ import annotations

import copy
import io
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from learner.engine import Engine
from learner.results import as_row
from learner.strategies import REGISTRY
from learner.strategies.base import same_state

TIMINGS = ("retrain_seconds", "eval_seconds")
ALL = ["sml", "sml_s", "fine_tune", "full_retrain", "spmf", "frozen"]


def _config(cfg):
    return replace(cfg.learner, strategies=replace(cfg.learner.strategies, enabled=ALL))


def _rows(results):
    out = []
    for r in results:
        row = as_row(r)
        for key in TIMINGS:
            row.pop(key)
        out.append(row)
    return out


def _run(learner_cfg, phases, periods, engine=None, start=0, stop=None):
    engine = engine or Engine(learner_cfg, phases)
    rows = []
    for t, events in periods[start:stop]:
        rows += _rows(engine.close_period(t, events))
    return engine, rows


@pytest.fixture(scope="module")
def reference_run(tiny):
    cfg, phases, periods = tiny
    return _run(_config(cfg), phases, periods)[1]


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            same = (x[key] == y[key]) or (isinstance(x[key], float) and math.isnan(x[key]) and math.isnan(y[key]))
            assert same, (key, x, y)


def test_same_config_and_seed_give_identical_results(tiny, reference_run):
    cfg, phases, periods = tiny
    _same(reference_run, _run(_config(cfg), phases, periods)[1])


def test_every_strategy_scores_identically_in_the_first_online_period(reference_run):
    first = min(r["period"] for r in reference_run)
    rows = [r for r in reference_run if r["period"] == first]
    assert {r["strategy"] for r in rows} == set(ALL)
    metrics = [{k: v for k, v in r.items() if k not in ("strategy", "serving")} for r in rows]
    assert all(m == metrics[0] for m in metrics)
    later = [r for r in reference_run if r["period"] == first + 1]
    assert len({r["ndcg@20"] for r in later}) > 1, "after one retrain the strategies differ"


def _pooled(rows, strategy, metric="ndcg@20"):
    part = [r for r in rows if r["strategy"] == strategy and r["phase"] in ("validation", "test")]
    return sum(r[metric] * r["n_interactions"] for r in part) / sum(r["n_interactions"] for r in part)


def _random_ndcg(rows, k=20):
    """Expected NDCG@k of random scores given each period's mean candidate count."""
    part = [r for r in rows if r["strategy"] == "frozen" and r["phase"] in ("validation", "test")]
    total = 0.0
    for r in part:
        c = r["n_candidates"]
        total += r["n_interactions"] * sum(1 / math.log2(i + 2) for i in range(min(k, int(c)))) / c
    return total / sum(r["n_interactions"] for r in part)


@pytest.mark.parametrize("strategy", ["sml", "sml_s", "fine_tune", "full_retrain", "spmf"])
def test_every_strategy_beats_random_ranking_and_the_untouched_base_model(reference_run, strategy):
    quality = _pooled(reference_run, strategy)
    assert quality > 1.25 * _random_ndcg(reference_run)  # tiny pools: random NDCG@20 is ~0.1
    assert quality > _pooled(reference_run, "frozen")


def test_a_model_never_sees_the_period_it_is_scored_on(tiny, scored_tables):
    """What is scored on D_t is fixed before D_t is read: each strategy's state before the
    period, grown by the new ids' initial rows alone (SML serves them through the transfer
    it learned before D_t), whatever D_t's contents."""
    cfg, phases, periods = tiny
    t = phases.index("online") + 1  # a period after the strategies have retrained once
    scored = scored_tables
    events = periods[t][1]
    altered = events.assign(item=np.roll(events["item"].to_numpy(), 7))  # same ids, other pairs
    learner_cfg = _config(cfg)
    assert learner_cfg.strategies.sml.cold_start == "transfer"  # new SML rows are not initial rows
    for version in (events, altered):
        engine, _ = _run(learner_cfg, phases, periods, stop=t)
        before = {n: copy.deepcopy(s) for n, s in engine.strategies.items()}
        n_users, n_items = len(engine.user_vocab), len(engine.item_vocab)
        scored.clear()
        engine.close_period(t, version)
        new_users = engine._rows(engine.user_vocab.ids[n_users:], "user")  # the new ids' initial rows
        new_items = engine._rows(engine.item_vocab.ids[n_items:], "item")
        assert len(scored) == len(ALL) and len(new_users) and len(new_items)
        for (u, i), strategy in zip(scored, before.values()):
            strategy.grow(new_users, new_items)
            want_u, want_i = strategy.serving_embeddings()
            assert torch.equal(u, want_u) and torch.equal(i, want_i)
        assert not torch.equal(scored[ALL.index("sml")][1][n_items:], new_items)  # the transfer served them


def test_restored_strategies_resume_identically(tiny, reference_run):
    cfg, phases, periods = tiny
    cut = phases.index("online") + 2
    engine, rows = _run(_config(cfg), phases, periods, stop=cut)
    for name, strategy in list(engine.strategies.items()):
        buffer = io.BytesIO()
        torch.save(strategy.state_dict(), buffer)
        buffer.seek(0)
        clone = REGISTRY[name](strategy.cfg, engine.shared)
        clone.load_state_dict(torch.load(buffer, weights_only=False))
        for a, b in zip(strategy.serving_embeddings(), clone.serving_embeddings()):
            assert torch.equal(a, b)
        engine.strategies[name] = clone
    _, rest = _run(_config(cfg), phases, periods, engine=engine, start=cut)
    _same(reference_run, rows + rest)


def test_periods_must_close_in_order(tiny):
    cfg, phases, periods = tiny
    engine = Engine(_config(cfg), phases)
    with pytest.raises(ValueError, match="expected period 0"):
        engine.close_period(1, periods[1][1])


def test_empty_period_is_processed_and_reported(tiny):
    cfg, phases, periods = tiny
    engine, _ = _run(_config(cfg), phases, periods, stop=3)
    empty = pd.DataFrame({"ts": np.zeros(0, np.int64), "user": [], "item": []})
    results = engine.close_period(3, empty)
    assert len(results) == len(ALL) and all(r.n_interactions == 0 for r in results)
    assert all(math.isnan(r.metrics.ndcg[20]) for r in results)


def _counting_retrains(monkeypatch):
    """Patch every strategy's retrain to count its calls; returns the counter."""
    calls: dict[str, int] = {}
    for cls in {c for c in REGISTRY.values() if "retrain" in vars(c)}:  # subclasses go through these
        real = cls.retrain

        def counted(self, period, real=real):
            calls[self.name] = calls.get(self.name, 0) + 1
            real(self, period)

        monkeypatch.setattr(cls, "retrain", counted)
    return calls


def test_sml_s_shares_sml_work_until_validation_and_changes_no_number(tiny, reference_run, monkeypatch):
    cfg, phases, periods = tiny
    calls = _counting_retrains(monkeypatch)
    shared_engine, shared_rows = _run(_config(cfg), phases, periods)
    shared_calls = dict(calls)
    calls.clear()
    unshared = replace(_config(cfg), strategies=replace(_config(cfg).strategies, share_repeated_work=False))
    alone_engine, alone_rows = _run(unshared, phases, periods)
    _same(reference_run, shared_rows)
    _same(shared_rows, alone_rows)
    for name in ALL:
        assert same_state(shared_engine.strategies[name].state_dict(), alone_engine.strategies[name].state_dict())
    online = phases.count("online")
    frozen_phases = phases.count("validation") + phases.count("test")
    assert calls["sml_s"] == online + frozen_phases, "without sharing SML-S retrains every period"
    assert shared_calls["sml_s"] == frozen_phases, "with it, only once frozen"
    assert shared_calls["sml"] == calls["sml"] == online + frozen_phases


def test_shared_retrain_reports_the_work_it_repeats(tiny):
    cfg, phases, periods = tiny
    engine, _ = _run(_config(cfg), phases, periods, stop=phases.index("online") + 1)
    t = phases.index("online") + 1
    by_name = {r.strategy: r for r in engine.close_period(t, periods[t][1])}
    assert by_name["sml_s"].retrain_seconds == by_name["sml"].retrain_seconds > 0


def test_sharing_needs_equal_states_and_equal_work(tiny):
    cfg, phases, periods = tiny
    t = phases.index("online") + 2
    engine, _ = _run(_config(cfg), phases, periods, stop=t)
    active = dict(engine.strategies)
    online = replace(engine._register(t, periods[t][1])[0], phase="online")
    assert Engine._twins(active, online) == {"sml_s": "sml"}
    assert Engine._twins(active, replace(online, phase="validation")) == {}, "SML-S frozen: other work"
    sml_s = active["sml_s"]
    sml_s.w_hat.users.weight[0, 0] += 1.0  # states part, e.g. after a pause or a restart from serving
    assert Engine._twins(active, online) == {}


@pytest.mark.parametrize(
    "a, b, equal",
    [
        (torch.zeros(3), torch.zeros(3), True),
        (torch.zeros(3), torch.zeros(3, dtype=torch.float64), False),
        (torch.zeros(3), torch.zeros(4), False),
        (torch.tensor([float("nan")]), torch.tensor([float("nan")]), False),
        (np.arange(3), np.arange(3), True),
        (np.arange(3), np.arange(3).astype(np.int32), False),
        ({"a": (torch.ones(2), [1, 2])}, {"a": (torch.ones(2), [1, 2])}, True),
        ({"a": (torch.ones(2), [1, 2])}, {"a": [torch.ones(2), [1, 2]]}, False),
        ({"a": 1}, {"a": 1, "b": 2}, False),
        (None, None, True),
        (np.arange(3), torch.arange(3), False),
    ],
)
def test_same_state_is_exact(a, b, equal):
    assert same_state(a, b) is equal
