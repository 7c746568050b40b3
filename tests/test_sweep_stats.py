"""Statistical checks of the sweep intervals (issue #20, item 5), on synthetic numbers through
learner/stats.py: running the hundreds of seeds these checks need would take hours, so the
per-seed values are drawn from known distributions instead. Every draw comes from a fixed,
stated seed, so the tests give the same answer every time and cannot flake."""

from __future__ import annotations

import numpy as np

from learner.stats import paired_bootstrap, t_interval

SEED = 20261206  # the one random stream of this module


def _seed_values(rng: np.random.Generator, n: int) -> np.ndarray:
    """Per-seed pooled NDCG@20 of one setting: mean 0.25, seed-to-seed sd 0.005, and a mild
    right skew (0.5), as bounded metrics have. With a skew of 1 (gamma shape 4) the t
    interval's coverage at 5 seeds drops to about 92.5%: it assumes normal seed values."""
    return 0.23 + rng.gamma(16.0, 0.00125, n)


def test_a_five_seed_interval_contains_the_mean_of_a_larger_independent_sample():
    rng = np.random.default_rng(SEED)
    sweep = t_interval(_seed_values(rng, 5))
    larger = _seed_values(rng, 500).mean()  # independent: drawn after the sweep's seeds
    assert sweep.contains(larger), (sweep, larger)


def test_t_intervals_over_few_seeds_cover_the_true_mean_95_percent_of_the_time():
    rng = np.random.default_rng(SEED + 1)
    for n_seeds in (2, 3, 5, 10):
        hits = sum(t_interval(_seed_values(rng, n_seeds)).contains(0.25) for _ in range(2000))
        # 2000 trials: the binomial sd of the coverage is 0.5 percentage points
        assert 0.93 <= hits / 2000 <= 0.97, (n_seeds, hits / 2000)


def test_the_two_level_paired_interval_covers_the_true_difference():
    """d[s, i] = mu + seed effect + interaction effect + noise: the interval must cover mu
    over both random seeds and random interactions, at about its nominal 95%."""
    rng = np.random.default_rng(SEED + 2)
    mu, trials, hits = 0.02, 200, 0
    for _ in range(trials):
        seeds = rng.normal(0, 0.01, (4, 1))
        interactions = rng.normal(0, 0.2, (1, 300))
        diffs = mu + seeds + interactions + rng.normal(0, 0.1, (4, 300))
        hits += paired_bootstrap(diffs, n_boot=1000).contains(mu)
    # 200 trials: the binomial sd is 1.5 percentage points
    assert 0.91 <= hits / trials <= 0.99, hits / trials
