"""The sequence models (gru4rec, caser): their windows, their dot-product tables, that no
event of a period reaches them before it is scored, and exact resumption over the bus."""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from learner.checkpoint import CheckpointStore
from learner.engine import ControlError, Engine
from learner.results import as_row
from learner.sequences import PAD, grow_parameter, last_items, relative_items
from learner.strategies import REGISTRY
from learner.strategies.sequential import SequenceStrategy
from replay_data.prepared import prepare
from replay_data.typed_config import ConfigError
from simulator.bus.memory import MemoryBus
from simulator.config import resolve
from simulator.control import LearnerCommands
from simulator.producer import ReplayProducer
from simulator.run import replay_settings
from simulator.stream import StreamLearner
from tests.crash import checkpoint_after_first_online_period

SEQUENCE = ["gru4rec", "caser"]


def _config(cfg, enabled=SEQUENCE, serving=None):
    strategies = replace(cfg.learner.strategies, enabled=list(enabled), serving=serving or enabled[0])
    return replace(cfg.learner, strategies=strategies)


def _run(engine, periods, start=0, stop=None):
    return [as_row(r) for t, events in periods[start:stop] for r in engine.close_period(t, events)]


def test_windows_are_each_users_items_before_the_event_in_history_order():
    users = np.array([0, 1, 0, 0, 1, 0])
    items = np.array([10, 20, 11, 12, 21, 13])
    before = relative_items(users, items, 3, np.arange(-2, 0))  # events 3.. only
    assert before.tolist() == [[10, 11], [PAD, 20], [11, 12]]
    after = relative_items(users, items, 0, np.arange(3))  # Caser's targets: this item and the next two
    assert after.tolist() == [[10, 11, 12], [20, 21, PAD], [11, 12, 13], [12, 13, PAD], [21, PAD, PAD], [13, PAD, PAD]]
    assert last_items(users, items, 3, 3).tolist() == [[11, 12, 13], [PAD, 20, 21], [PAD, PAD, PAD]]


def test_a_grown_parameter_keeps_its_optimiser_state_and_new_rows_start_fresh():
    table = torch.nn.Parameter(torch.ones(2, 3))
    opt = torch.optim.Adam([table], lr=0.1)
    table.sum().backward()
    opt.step()
    moments = opt.state[table]["exp_avg"].clone()
    grow_parameter(table, torch.zeros(1, 3), opt)
    assert table.shape == (3, 3) and torch.equal(opt.state[table]["exp_avg"][:2], moments)
    assert not opt.state[table]["exp_avg"][2].any() and not opt.state[table]["exp_avg_sq"][2].any()
    opt.zero_grad()
    table.sum().backward()
    opt.step()  # the optimiser takes the grown parameter as it is


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("learner.strategies.caser.window=0", r"caser\.window: 0 is not allowed; window must be >= 1"),
        ("learner.strategies.gru4rec.mode=online", r"gru4rec\.mode: 'online' is not allowed"),
        ("learner.strategies.gru4rec.dropout=1.0", r"gru4rec\.dropout: 1\.0 is not allowed"),
        ("learner.strategies.caser.targets=0", r"caser\.targets: 0 is not allowed; targets must be >= 1"),
        ("learner.strategies.gru4rec.loss=bpr", r"gru4rec\.loss: 'bpr' is not allowed"),
    ],
)
def test_bad_settings_are_refused_by_key(override, message):
    with pytest.raises(ConfigError, match=message):
        resolve("tiny", overrides=[override])


def test_full_mode_trains_on_the_history_and_fine_tune_mode_on_the_closed_period(tiny, monkeypatch):
    cfg, phases, periods = tiny
    overrides = ["learner.strategies.enabled=[gru4rec,caser]", "learner.strategies.serving=gru4rec"]
    learner_cfg = resolve("tiny", overrides=[*overrides, "learner.strategies.caser.mode=fine_tune"]).learner
    trained_on = {name: [] for name in SEQUENCE}
    real = SequenceStrategy._train

    def recording(self, users, items, start, rng):
        trained_on[self.name].append(len(users) - start)
        real(self, users, items, start, rng)

    monkeypatch.setattr(SequenceStrategy, "_train", recording)
    online = phases.index("online")
    _run(Engine(learner_cfg, phases), periods, stop=online + 2)
    sizes = [len(events) for _, events in periods[: online + 2]]
    pretrain = sum(sizes[:online])  # both first train on the pretrain periods as they start
    assert trained_on["gru4rec"] == [pretrain, pretrain + sizes[online], sum(sizes)]
    assert trained_on["caser"] == [pretrain, sizes[online], sizes[online + 1]]


@pytest.fixture(scope="module")
def trained(tiny):
    """An engine with both models (and fine_tune), after the first two online periods."""
    cfg, phases, periods = tiny
    engine = Engine(_config(cfg, [*SEQUENCE, "fine_tune"]), phases)
    _run(engine, periods, stop=phases.index("online") + 2)
    return engine


def test_gru4recs_softmax_loss_is_cross_entropy_over_every_known_item(trained, monkeypatch):
    strategy = trained.strategies["gru4rec"]
    assert strategy.cfg.loss == "top1"  # the paper's loss stays the default
    history = trained.shared.history
    windows = torch.as_tensor(last_items(history.users, history.items, 12, strategy.cfg.window))
    targets = torch.as_tensor(history.items[:12], dtype=torch.int64).unsqueeze(1)
    with torch.no_grad():
        encoded = strategy.net.encode(torch.arange(12), windows)
        top1 = strategy.loss(encoded, targets, None)
        monkeypatch.setattr(strategy, "cfg", replace(strategy.cfg, loss="softmax"))
        softmax = strategy.loss(encoded, targets, None)
        every_item = torch.arange(len(trained.item_vocab)).expand(12, -1)
        expected = torch.nn.functional.cross_entropy(strategy.net.score(encoded, every_item), targets[:, 0])
    torch.testing.assert_close(softmax, expected)
    assert not torch.isclose(softmax, top1)


def test_gru4recs_sparse_item_gradients_give_the_dense_adagrad_result(trained):
    """Adagrad moves no row whose gradient is zero, so training the item tables through
    sparse gradients (touching a batch's rows only) ends where dense gradients do."""
    sparse = copy.deepcopy(trained.strategies["gru4rec"])
    dense = copy.deepcopy(sparse)
    dense.net.sparse = False
    history = trained.shared.history
    start = len(history) // 2
    for strategy in (sparse, dense):
        strategy._train(history.users, history.items, start, np.random.default_rng(5))
    assert sparse.net.sparse and sparse.net.item_in.grad.is_sparse and sparse.net.out.grad.is_sparse
    assert not dense.net.item_in.grad.is_sparse
    for (name, got), want in zip(sparse.net.named_parameters(), dense.net.parameters(), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=name)
    assert not torch.equal(sparse.net.item_in, trained.strategies["gru4rec"].net.item_in)  # it did train


@pytest.mark.parametrize("name", SEQUENCE)
def test_the_served_tables_score_what_the_model_scores(trained, name):
    """<user row, item row> is the net's own score of the user's last items before the next period."""
    strategy = trained.strategies[name]
    history = trained.shared.history
    users, items = strategy.serving_embeddings()
    assert users.shape == (len(trained.user_vocab), items.shape[1])
    assert items.shape[0] == len(trained.item_vocab)
    windows = torch.as_tensor(last_items(history.users, history.items, users.shape[0], strategy.cfg.window))
    some = torch.arange(0, users.shape[0], 7)
    with torch.no_grad():
        encoded = strategy.net.encode(some, windows[some])
        every_item = torch.arange(items.shape[0]).expand(len(some), -1)
        expected = strategy.net.score(encoded, every_item)
    torch.testing.assert_close(users[some] @ items.T, expected, rtol=1e-5, atol=1e-5)


def test_no_event_of_a_period_reaches_either_model_before_it_is_scored(tiny, scored_tables):
    """The tables scored on D_t are a function of the state before D_t and of D_t's new ids
    alone: a copy of each strategy taken before the period, grown with the new ids'
    initial rows, serves exactly what was scored, whatever D_t's pairs are. The same
    change to D_{t-1} does change them: the check has teeth."""
    cfg, phases, periods = tiny
    learner_cfg = _config(cfg)
    t = phases.index("online") + 1  # after one retrain
    scored = scored_tables

    def altered(events):  # the same users and items, in other pairs
        return events.assign(item=np.roll(events["item"].to_numpy(), 7))

    def scored_at_t(previous, current):
        engine = Engine(learner_cfg, phases)
        _run(engine, periods[: t - 1] + [(t - 1, previous)])
        before = {}
        for name, strategy in engine.strategies.items():
            before[name] = REGISTRY[name].from_settings(learner_cfg.strategies, engine.shared)
            before[name].load_state_dict(copy.deepcopy(strategy.state_dict()))
        n_users, n_items = len(engine.user_vocab), len(engine.item_vocab)
        scored.clear()
        engine.close_period(t, current)
        for strategy in before.values():
            strategy.grow(
                engine._rows(engine.user_vocab.ids[n_users:], "user"),
                engine._rows(engine.item_vocab.ids[n_items:], "item"),
            )
        for name, (users, items) in zip(SEQUENCE, scored, strict=True):
            served = before[name].serving_embeddings()
            assert torch.equal(users, served[0]) and torch.equal(items, served[1]), name
        return [users[:n_users] for users, _ in scored]

    events = periods[t][1]
    reference = scored_at_t(periods[t - 1][1], events)
    for old, ref in zip(scored_at_t(periods[t - 1][1], altered(events)), reference, strict=True):
        assert torch.equal(old, ref)
    for old, ref in zip(scored_at_t(altered(periods[t - 1][1]), events), reference, strict=True):
        assert not torch.equal(old, ref)


def test_control_recommends_from_a_sequence_model_and_refuses_to_seed_from_it(trained):
    commands = LearnerCommands(trained)
    trained.set_serving("caser")
    try:
        user = trained.user_vocab.ids[0]
        answer = commands.apply("recommend", {"user": user, "k": 5})
        assert len(answer["items"]) == 5 and answer["fallback"] is None and answer["strategy"] == "caser"
        with pytest.raises(ControlError, match="caser serves a sequence model.*without from_serving"):
            trained.request_enable("spmf", from_serving=True)
    finally:
        trained.set_serving("gru4rec")


def test_enabled_disabled_and_reenabled_at_runtime_with_full_ranking(tiny):
    """Enabled mid-run, a sequence model starts from the serving MF at the next boundary
    and is scored from then on (full ranking too); disabled, it keeps its state; enabled
    again, it catches up with the ids registered meanwhile."""
    cfg, phases, periods = tiny
    learner_cfg = replace(_config(cfg, ["fine_tune"]), eval=replace(cfg.learner.eval, full_ranking=True))
    engine = Engine(learner_cfg, phases)
    online = phases.index("online")
    assert online + 6 == len(periods), "the steps below walk the tiny preset's online periods"

    def scored(t):
        return [r for r in _run(engine, periods, start=t, stop=t + 1) if r["strategy"] == "gru4rec"]

    _run(engine, periods, stop=online + 1)
    engine.request_enable("gru4rec")
    assert not scored(online + 1)  # enabled as this period closes
    (row,) = scored(online + 2)
    assert 0 < row["full_ndcg@10"] <= 1 and row["nonfinite_rows"] == 0
    engine.request_disable("gru4rec")
    assert scored(online + 3)  # disabled as this period closes
    kept = [t.clone() for t in engine.strategies["gru4rec"].serving_embeddings()]
    assert not scored(online + 4)
    assert all(map(torch.equal, engine.strategies["gru4rec"].serving_embeddings(), kept))
    engine.request_enable("gru4rec")
    assert not scored(online + 5)
    users, items = engine.strategies["gru4rec"].serving_embeddings()
    assert (len(users), len(items)) == (len(engine.user_vocab), len(engine.item_vocab))
    assert torch.equal(users[: len(kept[0])], kept[0]) and len(users) > len(kept[0])


def test_a_run_with_sequence_models_resumes_bitwise_over_the_memory_bus(tmp_path, tiny):
    """sml, gru4rec, caser and fine_tune on two partitions: crashed after an online period
    and resumed from the checkpoint, the rows equal those of the engine fed directly."""
    cfg, phases, periods = tiny
    enabled = ["sml", "gru4rec", "caser", "fine_tune"]
    direct = _run(Engine(_config(cfg, enabled), phases), periods)
    run_cfg = resolve("tiny", overrides=[f"learner.strategies.enabled=[{','.join(enabled)}]", "replay.partitions=2"])
    log, _ = prepare(run_cfg.data, tmp_path / "prepared", progress=False)
    bus, settings = MemoryBus(), replay_settings(run_cfg, "tiny")
    producer = ReplayProducer(bus, log, "seq", settings)
    manifest = producer.publish_manifest()
    producer.run()
    state = checkpoint_after_first_online_period(
        bus, run_cfg.learner, manifest, settings.prefix, CheckpointStore(tmp_path / "checkpoints")
    )
    second = StreamLearner(
        bus,
        Engine(run_cfg.learner, phases),
        manifest,
        prefix=settings.prefix,
        checkpoints=CheckpointStore(tmp_path / "resumed"),
    )
    second.restore(state)
    second.run()
    resumed = pd.DataFrame(second.rows).drop(columns=["retrain_seconds", "eval_seconds"])
    expected = pd.DataFrame(direct).drop(columns=["retrain_seconds", "eval_seconds"])
    assert set(resumed["strategy"]) == set(enabled)
    assert not resumed["ndcg@10"].map(math.isnan).all()
    pd.testing.assert_frame_equal(resumed, expected, check_exact=True, check_dtype=False)
