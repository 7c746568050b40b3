import copy

import numpy as np
import torch

from learner.mf import MF
from learner.period import Period, SharedState
from learner.strategies.sml import Sml, SmlConfig
from learner.strategies.sml_ablations import SmlS


def _setup(**cfg):
    rng = np.random.default_rng(0)
    shared = SharedState(
        seed=0, device="cpu", n_periods=6, phases=["pretrain", "online", "online", "validation", "test", "test"]
    )
    users, items = rng.integers(0, 30, 300), rng.integers(0, 40, 300)
    shared.history.extend(users, items)
    shared.n_users, shared.n_items = 40, 50
    torch.manual_seed(0)
    base = MF.from_rows(torch.randn(40, 8) * 0.1, torch.randn(50, 8) * 0.1)
    sml = Sml(SmlConfig(rounds=2, **cfg), shared)
    sml.start(base)
    return sml, users, items


def _theta(sml):
    return [p.detach().clone() for p in list(sml.theta_u.parameters()) + list(sml.theta_i.parameters())]


def test_step1_changes_only_w_hat_rows_of_the_period():
    sml, _, _ = _setup()
    users = np.array([1, 2, 3, 3])
    items = np.array([4, 5, 6, 4])
    theta, base_u, w_hat = _theta(sml), sml.base_u.clone(), sml.w_hat.copy()
    sml._step1(users, items, 1, np.random.default_rng(1))
    assert all(torch.equal(a, b) for a, b in zip(theta, _theta(sml))), "step 1 leaves the transfer alone"
    assert torch.equal(base_u, sml.base_u), "W_{t-1} is a constant"
    changed_users = (sml.w_hat.users.weight != w_hat.users.weight).any(1).nonzero().flatten().tolist()
    assert changed_users == [1, 2, 3]
    changed_items = set((sml.w_hat.items.weight != w_hat.items.weight).any(1).nonzero().flatten().tolist())
    assert {4, 5, 6} <= changed_items and len(changed_items) <= 3 + len(users)  # + sampled negatives


def test_step2_changes_only_the_transfer():
    sml, users, items = _setup()
    theta, w_hat, serve = _theta(sml), sml.w_hat.copy(), sml.serve_u.clone()
    sml._step2(users, items, np.random.default_rng(2))
    assert all(not torch.equal(a, b) for a, b in zip(theta, _theta(sml)))
    assert torch.equal(w_hat.users.weight, sml.w_hat.users.weight)
    assert torch.equal(w_hat.items.weight, sml.w_hat.items.weight)
    assert torch.equal(serve, sml.serve_u)


def _period(index, phase, users, items):
    return Period(index=index, phase=phase, users=users, items=items, n_users_before=40, n_items_before=50)


def test_first_online_period_serves_the_base_and_then_the_transferred_model():
    sml, users, items = _setup()
    assert torch.equal(sml.serving_embeddings()[0], sml.base_u)
    sml.retrain(_period(1, "online", users[:100], items[:100]))
    expected = sml.theta_u.apply_table(sml.base_u, sml.w_hat.users.weight, 16)
    assert torch.allclose(sml.serving_embeddings()[0], expected)


def test_sml_s_equals_sml_until_validation_then_freezes_the_transfer():
    sml, users, items = _setup()
    sml_s = SmlS(sml.cfg, sml.shared)
    sml_s.start(MF.from_rows(sml.base_u, sml.base_i))
    for t, phase in ((1, "online"), (2, "online")):
        period = _period(t, phase, users[100 * (t - 1) : 100 * t], items[100 * (t - 1) : 100 * t])
        sml.retrain(period)
        sml_s.retrain(period)
        assert torch.equal(sml.serving_embeddings()[1], sml_s.serving_embeddings()[1])
    theta = _theta(sml_s)
    sml_s.retrain(_period(3, "validation", users[200:], items[200:]))
    assert all(torch.equal(a, b) for a, b in zip(theta, _theta(sml_s)))


def test_continue_variant_keeps_w_hat_across_rounds():
    reseed, users, items = _setup()
    keep, _, _ = _setup(w_hat="continue")
    for s in (reseed, keep):
        s.retrain(_period(1, "online", users[:150], items[:150]))
        s.retrain(_period(2, "online", users[150:], items[150:]))
    assert not torch.allclose(reseed.serving_embeddings()[0], keep.serving_embeddings()[0])


def test_state_round_trip_restores_everything():
    sml, users, items = _setup()
    sml.retrain(_period(1, "online", users[:150], items[:150]))
    state = copy.deepcopy(sml.state_dict())
    clone = Sml(sml.cfg, sml.shared)
    clone.load_state_dict(state)
    for s in (sml, clone):
        s.retrain(_period(2, "online", users[150:], items[150:]))
    assert torch.equal(sml.serving_embeddings()[0], clone.serving_embeddings()[0])
    assert all(torch.equal(a, b) for a, b in zip(_theta(sml), _theta(clone)))


def test_sml_settings_configure_sml_s_too_so_their_work_stays_shared():
    from simulator.config import resolve

    strategies = resolve(
        "tiny", overrides=["learner.strategies.sml.rounds=5", "learner.strategies.sml_s.frozen_step1_epochs=3"]
    ).learner.strategies
    shared = SharedState(seed=0, device="cpu", n_periods=6, phases=["pretrain", "online", "validation"])
    sml, sml_s = Sml.from_settings(strategies, shared), SmlS.from_settings(strategies, shared)
    assert sml.cfg is sml_s.cfg and sml_s.cfg.rounds == 5 and sml_s.own.frozen_step1_epochs == 3
    online, validation = _period(1, "online", None, None), _period(2, "validation", None, None)
    assert sml.work_key(online) == sml_s.work_key(online)
    assert sml.work_key(validation) != sml_s.work_key(validation)
    assert sml_s.step1_epochs(validation) == 3 and sml_s.step1_epochs(online) == sml.cfg.step1.epochs


def test_cold_start_transfer_serves_only_new_ids_from_their_initial_rows_and_pre_period_theta():
    served = {}
    for option in ("initial", "transfer"):
        sml, users, items = _setup(cold_start=option)
        new_u, new_i = torch.randn(3, 8) * 0.1, torch.randn(2, 8) * 0.1
        sml.grow(new_u[:1], new_i[:1])  # before the first retrain SML serves the pretrained model
        assert torch.equal(sml.serving_embeddings()[0][-1], new_u[0])
        sml.retrain(_period(1, "online", users[:150], items[:150]))
        theta = copy.deepcopy((sml.theta_u, sml.theta_i))  # Θ as the next period starts
        sml.grow(new_u[1:], new_i[1:])
        served[option] = sml.serving_embeddings()
    initial, transfer = served["initial"], served["transfer"]
    old_u, old_i = slice(0, 41), slice(0, 51)
    assert torch.equal(initial[0][old_u], transfer[0][old_u]) and torch.equal(initial[1][old_i], transfer[1][old_i])
    assert torch.equal(initial[0][41:], new_u[1:]) and torch.equal(initial[1][51:], new_i[1:])
    # only the id's own initial row and the Θ learned before the period: f_Θ(row, row)
    with torch.no_grad():
        assert torch.allclose(transfer[0][41:], theta[0](new_u[1:], new_u[1:]))
        assert torch.allclose(transfer[1][51:], theta[1](new_i[1:], new_i[1:]))
    assert not torch.allclose(transfer[0][41:], initial[0][41:])
