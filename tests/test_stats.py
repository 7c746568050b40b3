"""learner/stats.py: the intervals of a seed sweep, including issue #20's check that a sweep's
interval contains the mean of a larger independent sample. Every random draw has a fixed seed,
so these tests cannot flake: their outcome is decided once, for these numbers."""

from __future__ import annotations

import numpy as np
import pytest

from learner import stats

CHECK_SEED = 20  # issue #20: the fixed seed of the statistical checks


def test_t_interval_matches_the_textbook_formula():
    iv = stats.t_interval([1.0, 2.0, 3.0])
    # mean 2, s = 1, t(0.975, 2) = 4.302653
    assert iv.mean == pytest.approx(2.0)
    assert iv.hi - iv.mean == pytest.approx(4.302653 / np.sqrt(3), rel=1e-6)
    assert iv.lo == pytest.approx(2 * iv.mean - iv.hi)


def test_one_seed_has_a_mean_and_no_interval():
    iv = stats.t_interval([0.25])
    assert iv.mean == 0.25 and np.isnan(iv.lo) and np.isnan(iv.hi) and not iv.excludes_zero


def test_a_seed_sweeps_interval_contains_the_mean_of_a_larger_independent_sample():
    """The issue's check on simulated sweeps: per-seed pooled NDCG = the strategy's mean over
    random streams + seed noise. A 5-seed sweep's interval contains the mean of 20,000 other
    seeds; over 2,000 independent sweeps it does so about 95% of the time."""
    rng = np.random.default_rng(CHECK_SEED)
    mu, sd = 0.31, 0.012
    sweep = rng.normal(mu, sd, 5)
    larger = rng.normal(mu, sd, 20_000)
    assert stats.t_interval(sweep).contains(larger.mean())
    covered = [stats.t_interval(rng.normal(mu, sd, 5)).contains(larger.mean()) for _ in range(2000)]
    assert 0.935 <= np.mean(covered) <= 0.965  # 95% +- 3 binomial standard errors (0.0049)


def _simulated_gains(rng, n_seeds, n_interactions, effect=0.02, seed_sd=0.004):
    """Per-interaction NDCG-like gains of two strategies on shared interactions: each
    interaction has a difficulty shared by both (the pairing), each seed shifts a strategy."""
    difficulty = rng.beta(2, 5, n_interactions)
    a = (
        difficulty[None, :]
        + effect
        + rng.normal(0, seed_sd, (n_seeds, 1))
        + rng.normal(0, 0.05, (n_seeds, n_interactions))
    )
    b = difficulty[None, :] + rng.normal(0, seed_sd, (n_seeds, 1)) + rng.normal(0, 0.05, (n_seeds, n_interactions))
    return a - b


def test_paired_bootstrap_contains_the_difference_of_a_larger_independent_sample():
    """Two-level bootstrap over seeds and interactions: a 5-seed sweep on 2,000 interactions
    contains the mean difference of 200 other seeds on 20,000 other interactions, and the
    difference is significant."""
    rng = np.random.default_rng(CHECK_SEED)
    iv = stats.paired_bootstrap(_simulated_gains(rng, 5, 2000), n_boot=1000)
    larger = _simulated_gains(rng, 200, 20_000).mean()
    assert iv.contains(larger)
    assert iv.excludes_zero and iv.lo > 0


@pytest.mark.parametrize("n_seeds", [3, 10])
def test_paired_bootstrap_coverage_is_near_nominal(n_seeds):
    """Over 200 simulated sweeps whose seed spread dominates, the interval holds the true
    difference about 95% of the time, with 3 seeds as with 10."""
    rng = np.random.default_rng(CHECK_SEED + n_seeds)
    truth = 0.02  # the simulated effect: the mean over the seed and interaction populations
    covered = [
        stats.paired_bootstrap(_simulated_gains(rng, n_seeds, 400, seed_sd=0.01), n_boot=400, seed=i).contains(truth)
        for i in range(200)
    ]
    assert 0.90 <= np.mean(covered) <= 0.995


def test_paired_bootstrap_with_one_seed_is_the_interaction_bootstrap():
    rng = np.random.default_rng(CHECK_SEED)
    diffs = rng.normal(0, 0.1, (1, 3000))
    diffs -= diffs.mean()  # no effect at all
    iv = stats.paired_bootstrap(diffs)
    assert iv.mean == pytest.approx(0.0, abs=1e-12)
    se = diffs.std() / np.sqrt(3000)
    assert iv.hi - iv.lo == pytest.approx(2 * 1.96 * se, rel=0.1)  # the normal-theory width
    assert not iv.excludes_zero


def test_paired_bootstrap_is_deterministic_and_zero_for_identical_strategies():
    rng = np.random.default_rng(CHECK_SEED)
    diffs = rng.normal(0.01, 0.1, (3, 500))
    assert stats.paired_bootstrap(diffs) == stats.paired_bootstrap(diffs)
    same = stats.paired_bootstrap(np.zeros((3, 500)))
    assert (same.mean, same.lo, same.hi) == (0.0, 0.0, 0.0) and not same.excludes_zero


def test_gains_match_the_metrics_definition():
    g = stats.gains(np.array([0.0, 1.5, 19.5, 20.0]), 20)
    assert g["recall"].tolist() == [1.0, 1.0, 1.0, 0.0]
    assert g["ndcg"] == pytest.approx([1.0, 1 / np.log2(3.5), 1 / np.log2(21.5), 0.0])
