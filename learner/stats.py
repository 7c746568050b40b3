"""Statistics of a seed sweep (`rtsim run --seeds N`): intervals across seeds and paired
comparisons between strategies.

- `t_interval`: a Student t interval for the mean of per-seed values (Table 1 across seeds).
  Each seed's value is one draw of "this strategy on this stream with a random stream of
  initialisations, shuffles and training negatives"; the interval covers the mean over such
  streams. It needs two seeds; it is NaN with one.
- `paired_bootstrap`: the difference between two strategies' mean per-interaction gains,
  with a two-level interval: a paired bootstrap over interactions plus the seed-to-seed
  error of the mean (a t draw). Rows pair because every strategy and seed ranks the same
  candidates for the same interaction (`learner.eval_seed`). With one seed it is the
  ordinary paired bootstrap over interactions.
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


def paired_bootstrap(
    diffs, level: float = LEVEL, n_boot: int = N_BOOT, seed: int = BOOT_SEED, batch: int = 50
) -> Interval:
    """`diffs[s, i]`: strategy A's gain minus B's on interaction i under seed s (one row per
    seed, the same interactions in every row). Returns the mean difference and a percentile
    interval from replicates with two independent parts:

    - interactions: a paired bootstrap of the interactions (n drawn with replacement) of the
      seed-averaged differences, centred on its mean;
    - seeds (N >= 2): the mean's seed-to-seed error, s_d / sqrt(N) times a Student t draw with
      N - 1 degrees of freedom, where s_d is the standard deviation of the N per-seed mean
      differences (the interactions are shared, so their spread is the seeds' alone).

    Resampling N seeds with replacement instead would shrink the seed variance by (N-1)/N
    and its tails to N values: with 2-3 seeds, intervals far too narrow. With one seed
    this is the ordinary paired bootstrap over interactions."""
    d = np.atleast_2d(np.asarray(diffs, dtype=np.float64))
    n_seeds, n = d.shape
    mean = float(d.mean()) if d.size else float("nan")
    if n == 0:
        return Interval(mean, float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    per_interaction = d.mean(axis=0)
    replicates = np.empty(n_boot)
    for lo in range(0, n_boot, batch):
        b = min(batch, n_boot - lo)
        counts = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(b)])  # (b, n)
        replicates[lo : lo + b] = counts @ per_interaction / n
    replicates += mean - per_interaction.mean()  # (the same number; kept exact for one seed)
    if n_seeds > 1:
        spread = float(d.mean(axis=1).std(ddof=1))
        replicates += rng.standard_t(n_seeds - 1, n_boot) * spread / np.sqrt(n_seeds)
    tail = (1 - level) / 2
    lo_q, hi_q = np.quantile(replicates, [tail, 1 - tail])
    return Interval(mean, float(lo_q), float(hi_q))


def gains(ranks: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per-interaction NDCG@k and hit@k (Recall@k) gains from ranks (learner/evaluation.py)."""
    r = np.asarray(ranks, dtype=np.float64)
    hit = r < k
    return {"ndcg": np.where(hit, 1.0 / np.log2(r + 2.0), 0.0), "recall": hit.astype(np.float64)}
