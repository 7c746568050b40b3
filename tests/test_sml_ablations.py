"""Each ablation of SML differs from SML in the one intended way, on SML's settings and streams."""

import numpy as np
import torch

from learner.mf import MF
from learner.strategies.sml import Sml
from learner.strategies.sml_ablations import SmlCnn, SmlFc, SmlFp, SmlN, SmlS, ablations
from simulator.config import resolve
from tests.test_sml import _period, _setup, _theta


def _variant(cls, sml: Sml) -> Sml:
    variant = cls(sml.cfg, sml.shared)
    variant.start(MF.from_rows(sml.base_u, sml.base_i))
    return variant


def test_the_ablations_are_registered_in_the_papers_order():
    assert list(ablations()) == ["sml_cnn", "sml_fc", "sml_n", "sml_s", "sml_fp"]


def test_every_ablation_reads_smls_settings_and_streams():
    strategies = resolve("tiny", overrides=["learner.strategies.sml.rounds=5"]).learner.strategies
    sml, _, _ = _setup()
    for cls in (SmlCnn, SmlFc, SmlN, SmlS, SmlFp):
        variant = cls.from_settings(strategies, sml.shared)
        assert variant.cfg is strategies.sml and variant.stream == "sml"


def test_sml_cnn_and_sml_fc_drop_their_part_of_the_transfer():
    sml, _, _ = _setup()
    names = {cls: {n for n, _ in _variant(cls, sml).theta_u.named_parameters()} for cls in (Sml, SmlCnn, SmlFc)}
    assert {"conv1.weight", "fc1.weight"} <= names[Sml]
    assert not any(n.startswith("conv") for n in names[SmlCnn]) and "fc1.weight" in names[SmlCnn]
    assert not any(n.startswith("fc") for n in names[SmlFc]) and "conv1.weight" in names[SmlFc]


def test_sml_n_trains_the_transfer_on_the_tasks_own_period(monkeypatch):
    sml, users, items = _setup()
    seen = {}
    for strategy in (sml, _variant(SmlN, sml)):
        calls = seen.setdefault(strategy.name, [])
        monkeypatch.setattr(strategy, "_step2", lambda u, i, rng, calls=calls: calls.append(u))
        strategy.retrain(_period(1, "online", users[:150], items[:150]))
        strategy.retrain(_period(2, "online", users[150:], items[150:]))
    assert seen["sml"] and all(np.array_equal(u, users[150:]) for u in seen["sml"])  # D_{t+1}
    assert seen["sml_n"] and all(np.array_equal(u, users[:150]) for u in seen["sml_n"])  # D_t


def test_sml_fp_learns_w_hat_without_the_transfer_but_still_trains_and_serves_through_it():
    sml, users, items = _setup()
    fp = _variant(SmlFp, sml)
    for strategy in (sml, fp):  # a transfer that would poison any gradient passing through it
        with torch.no_grad():
            strategy.theta_u.fc2.bias.fill_(float("nan"))
        strategy._step1(users[:100], items[:100], 1, np.random.default_rng(1))
    assert torch.isnan(sml.w_hat.users.weight).any()
    assert torch.isfinite(fp.w_hat.users.weight).all() and not torch.equal(fp.w_hat.users.weight, fp.base_u)

    fp = _variant(SmlFp, sml)
    fp.retrain(_period(1, "online", users[:150], items[:150]))
    theta = _theta(fp)
    fp.retrain(_period(2, "online", users[150:], items[150:]))
    assert all(not torch.equal(a, b) for a, b in zip(theta, _theta(fp))), "step 2 still trains Θ"
    served = fp.theta_u.apply_table(fp.base_u, fp.w_hat.users.weight, 64)
    assert torch.allclose(fp.serving_embeddings()[0], served), "W_t = f_Θ(W_{t-1}, ŵ_t) is served"


def test_work_is_shared_with_sml_exactly_where_it_is_identical():
    sml, users, items = _setup()
    first = _period(1, "online", users[:150], items[:150])
    key = sml.work_key(first)
    variants = {cls: _variant(cls, sml) for cls in (SmlCnn, SmlFc, SmlN, SmlS, SmlFp)}
    same_first = {cls for cls, v in variants.items() if v.work_key(first) == key}
    assert same_first == {SmlN, SmlS}  # no step 2 runs in the first online period
    for strategy in (sml, *variants.values()):
        strategy.retrain(first)
    second = _period(2, "online", users[150:], items[150:])
    assert {cls for cls, v in variants.items() if v.work_key(second) == sml.work_key(second)} == {SmlS}
