"""Statistics of a seed sweep (`rtsim run --seeds N`): intervals across seeds and paired
comparisons between strategies.

- `t_interval`: a Student t interval for the mean of per-seed values (Table 1 across seeds).
  Each seed's value is one draw of "this strategy on this stream with a random stream of
  initialisations, shuffles and training negatives"; the interval covers the mean over such
  streams. It needs two seeds; it is NaN with one.
- `paired_bootstrap`: the difference between two strategies' mean per-interaction gains,
  with a percentile interval from a two-level bootstrap that resamples seeds and, jointly
  for every resampled seed, interactions. Rows pair because every strategy and seed ranks
  the same candidates for the same interaction (`learner.eval_seed`). With one seed it is
  the ordinary paired bootstrap over interactions. With few seeds the seed level is
  resampled from few values, so its share of the spread is underestimated (by (N-1)/N in
  variance, and more in the tails): read intervals from 2-3 seeds as indicative.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as _stats

LEVEL = 0.95
N_BOOT = 2000
BOOT_SEED = 20240601  # the bootstrap's own stream: a summary is the same every time it is written


@dataclass(frozen=True)
class Interval:
    mean: float
    lo: float
    hi: float

    @property
    def excludes_zero(self) -> bool:
        return bool(self.lo > 0 or self.hi < 0)

    def contains(self, value: float) -> bool:
        return bool(self.lo <= value <= self.hi)


def t_interval(values, level: float = LEVEL) -> Interval:
    """Mean of `values` (one per seed) and its Student t interval (NaN bounds for n < 2)."""
    x = np.asarray(values, dtype=float)
    mean = float(x.mean()) if x.size else float("nan")
    if x.size < 2:
        return Interval(mean, float("nan"), float("nan"))
    half = float(_stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))
    return Interval(mean, mean - half, mean + half)


def paired_bootstrap(diffs, level: float = LEVEL, n_boot: int = N_BOOT, seed: int = BOOT_SEED,
                     batch: int = 50) -> Interval:
    """`diffs[s, i]`: strategy A's gain minus B's on interaction i under seed s (one row per
    seed, the same interactions in every row). Returns the mean difference and the
    percentile interval of its two-level bootstrap: each replicate draws N seeds and n
    interactions with replacement and averages the drawn cells (the interaction draw is
    shared by the drawn seeds, as the interactions are)."""
    d = np.atleast_2d(np.asarray(diffs, dtype=np.float64))
    n_seeds, n = d.shape
    mean = float(d.mean()) if d.size else float("nan")
    if n == 0:
        return Interval(mean, float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    replicates = np.empty(n_boot)
    for lo in range(0, n_boot, batch):
        b = min(batch, n_boot - lo)
        counts = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(b)])  # (b, n)
        per_seed = counts @ d.T / n  # (b, n_seeds): each seed's mean over the drawn interactions
        if n_seeds > 1:
            picks = rng.integers(0, n_seeds, (b, n_seeds))
            replicates[lo:lo + b] = np.take_along_axis(per_seed, picks, axis=1).mean(axis=1)
        else:
            replicates[lo:lo + b] = per_seed[:, 0]
    tail = (1 - level) / 2
    lo_q, hi_q = np.quantile(replicates, [tail, 1 - tail])
    return Interval(mean, float(lo_q), float(hi_q))


def gains(ranks: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per-interaction NDCG@k and hit@k (Recall@k) gains from ranks (learner/evaluation.py)."""
    r = np.asarray(ranks, dtype=np.float64)
    hit = r < k
    return {"ndcg": np.where(hit, 1.0 / np.log2(r + 2.0), 0.0), "recall": hit.astype(np.float64)}
