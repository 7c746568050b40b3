"""periods.csv rows and the summary tables (the paper's Table 1 and Table 2 shapes)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pandas as pd

from learner.engine import StrategyResult
from learner.evaluation import SEGMENTS
from learner.strategies.sml_ablations import ablations

KS = (5, 10, 20)
TIMING_COLUMNS = ("retrain_seconds", "eval_seconds")
HEALTH_COLUMNS = ("nonfinite_rows", "max_row_norm", "norm_warning")


def columns(ks: tuple[int, ...] = KS, full_ranking: bool = False) -> list[str]:
    full = [f"full_recall@{k}" for k in ks] + [f"full_ndcg@{k}" for k in ks] if full_ranking else []
    return (
        ["period", "phase", "strategy", "serving", "n_interactions", "n_new_users", "n_new_items", "n_candidates"]
        + [f"recall@{k}" for k in ks]
        + [f"ndcg@{k}" for k in ks]
        + [f"ndcg@{k}[{s}]" for k in ks for s in SEGMENTS]
        + full
        + list(HEALTH_COLUMNS)
        + list(TIMING_COLUMNS)
    )


def as_row(result: StrategyResult) -> dict:
    m = result.metrics
    row = {
        "period": result.period,
        "phase": result.phase,
        "strategy": result.strategy,
        "serving": int(result.serving),
        "n_interactions": result.n_interactions,
        "n_new_users": result.n_new_users,
        "n_new_items": result.n_new_items,
        "n_candidates": round(result.n_candidates, 6),
    }
    row.update({f"recall@{k}": v for k, v in m.recall.items()})
    row.update({f"ndcg@{k}": v for k, v in m.ndcg.items()})
    row.update({f"ndcg@{k}[{s}]": by_segment[s] for k, by_segment in m.segment_ndcg.items() for s in SEGMENTS})
    if result.full is not None:
        row.update({f"full_recall@{k}": v for k, v in result.full.recall.items()})
        row.update({f"full_ndcg@{k}": v for k, v in result.full.ndcg.items()})
    row.update(
        nonfinite_rows=result.health.nonfinite_rows,
        max_row_norm=result.health.max_row_norm,
        norm_warning=int(result.guard_warning),
    )
    row.update(retrain_seconds=round(result.retrain_seconds, 4), eval_seconds=round(result.eval_seconds, 4))
    return row


class PeriodsCsv:
    """Appends one row per (period, strategy) and flushes, so a crash loses no closed period."""

    def __init__(self, path: Path, ks: tuple[int, ...] = KS, full_ranking: bool = False) -> None:
        self.path = Path(path)
        self.fields = columns(ks, full_ranking)
        if not self.path.exists():
            with open(self.path, "w", newline="") as handle:
                csv.DictWriter(handle, self.fields).writeheader()

    def append(self, results: list[StrategyResult]) -> None:
        self._write([as_row(result) for result in results], "a")

    def rewrite(self, rows: list[dict]) -> None:
        """Replace the file by `rows` (a resumed run: rows written after its checkpoint go)."""
        with open(self.path, "w", newline="") as handle:
            csv.DictWriter(handle, self.fields).writeheader()
        self._write(rows, "a")

    def _write(self, rows: list[dict], mode: str) -> None:
        with open(self.path, mode, newline="") as handle:
            writer = csv.DictWriter(handle, self.fields)
            for row in rows:
                writer.writerow({k: _fmt(v) for k, v in row.items()})


RANKS_DIR = "ranks"


def save_ranks(run_dir: Path, period: int, results: list[StrategyResult]) -> Path | None:
    """`ranks/period-<t>.npz`: each strategy's per-interaction ranks on period t (float32, exact
    for the half-integer ranks below 2^24), for validation and test periods only. Rows follow
    the period's (ts, user, item) order, the same for every strategy and seed, so they pair."""
    arrays = {r.strategy: np.asarray(r.ranks, dtype=np.float32) for r in results if r.ranks is not None}
    if not arrays:
        return None
    folder = Path(run_dir) / RANKS_DIR
    folder.mkdir(exist_ok=True)
    path = folder / f"period-{period:06d}.npz"
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)  # a period closed again after a resume overwrites it with the same ranks
    return path


def load_ranks(run_dir: Path) -> dict[tuple[str, int], np.ndarray]:
    """{(strategy, period): ranks} from a run directory's `ranks/` (empty when it has none)."""
    out = {}
    for path in sorted((Path(run_dir) / RANKS_DIR).glob("period-*.npz")):
        if path.name.endswith(".tmp.npz"):  # left by a crash mid-write; the period is re-closed
            continue
        period = int(path.stem.split("-")[1])
        with np.load(path) as data:
            out.update({(strategy, period): data[strategy] for strategy in data.files})
    return out


def _fmt(value):
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return value


def pooled(df: pd.DataFrame, phases: tuple[str, ...] = ("test",)) -> pd.DataFrame:
    """Per strategy: metrics pooled over the interactions of the given phases."""
    part = df[df["phase"].isin(phases) & (df["n_interactions"] > 0)]
    metric_cols = [c for c in df.columns if c.startswith(("recall@", "ndcg@")) and "[" not in c]
    weights = part["n_interactions"].to_numpy(float)
    out = {}
    for strategy, group in part.groupby("strategy", sort=False):
        w = weights[part.index.get_indexer(group.index)]
        out[strategy] = {c: float(np.average(group[c].to_numpy(float), weights=w)) for c in metric_cols}
    return pd.DataFrame.from_dict(out, orient="index")


def per_period_mean(df: pd.DataFrame, phases: tuple[str, ...] = ("test",)) -> pd.DataFrame:
    part = df[df["phase"].isin(phases) & (df["n_interactions"] > 0)]
    metric_cols = [c for c in df.columns if c.startswith(("recall@", "ndcg@")) and "[" not in c]
    return part.groupby("strategy", sort=False)[metric_cols].mean()


def relative_improvement(table: pd.DataFrame, metric: str, ks: tuple[int, ...], reference: str = "sml") -> dict:
    """The paper's RI: mean over K of (reference / strategy - 1), per metric block."""
    if reference not in table.index:
        return {}
    out = {}
    for strategy in table.index:
        ratios = [
            table.at[reference, f"{metric}@{k}"] / table.at[strategy, f"{metric}@{k}"] - 1
            for k in ks
            if table.at[strategy, f"{metric}@{k}"] > 0
        ]
        out[strategy] = float(np.mean(ratios)) if ratios and strategy != reference else None
    return out


def summary_markdown(df: pd.DataFrame, title: str, ks: tuple[int, ...] = KS) -> str:
    test_periods = sorted(df.loc[df["phase"] == "test", "period"].unique())
    lines = [f"# {title}", ""]
    if not test_periods:
        return "\n".join(lines + ["No test period has closed yet.", ""])
    lines += [
        f"Test periods: {test_periods[0]}-{test_periods[-1]} ({len(test_periods)} periods, "
        f"{int(df.loc[(df['phase'] == 'test'), 'n_interactions'].sum() / max(1, df['strategy'].nunique()))} "
        "interactions). 1 positive vs up to 999 sampled negatives per interaction.",
        "",
    ]
    broken = nonfinite_periods(df)
    for label, table in (
        ("pooled over test interactions", pooled(df)),
        ("mean of per-period values", per_period_mean(df)),
    ):
        lines += [f"## Table 1: next-period quality, {label}", "", _table1(table, ks, broken), ""]
    for strategy, periods in broken.items():
        lines += [
            f"† {strategy} served rows that are not finite (NaN or inf) in test periods "
            f"{', '.join(map(str, periods))}: it diverged. Those periods count with every "
            "positive ranked last, so its figures are a floor, not a model's quality.",
            "",
        ]
    lines += [
        "RI: the paper's relative improvement of SML over each strategy, mean over K of (SML / strategy - 1).",
        "",
        *ablation_lines(pooled(df), max(ks), "pooled over test interactions"),
        "## Table 2: retraining seconds per test period",
        "",
        _table2(df, test_periods),
        "",
        "Retrain seconds cover training work only; evaluation is timed apart (`eval_seconds` in periods.csv).",
        "",
    ]
    return "\n".join(lines)


def nonfinite_periods(df: pd.DataFrame, phases: tuple[str, ...] = ("test",)) -> dict[str, list[int]]:
    """{strategy: the periods of `phases` in which its served tables held non-finite rows}."""
    if "nonfinite_rows" not in df.columns:  # a run from before the column existed
        return {}
    part = df[df["phase"].isin(phases) & (df["nonfinite_rows"].fillna(0) > 0)]
    return {strategy: sorted(group["period"].tolist()) for strategy, group in part.groupby("strategy", sort=False)}


def _table1(table: pd.DataFrame, ks: tuple[int, ...], broken: dict[str, list[int]]) -> str:
    ri_r = relative_improvement(table, "recall", ks)
    ri_n = relative_improvement(table, "ndcg", ks)
    header = (
        ["Strategy"]
        + [f"R@{k}" for k in ks]
        + (["RI(R)"] if ri_r else [])
        + [f"N@{k}" for k in ks]
        + (["RI(N)"] if ri_n else [])
    )
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for strategy in table.index:
        cells = [f"{strategy} †" if strategy in broken else strategy]
        cells += [f"{table.at[strategy, f'recall@{k}']:.4f}" for k in ks]
        if ri_r:
            cells.append(_pct(ri_r[strategy]))
        cells += [f"{table.at[strategy, f'ndcg@{k}']:.4f}" for k in ks]
        if ri_n:
            cells.append(_pct(ri_n[strategy]))
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def ablation_lines(table: pd.DataFrame, k: int, label: str) -> list[str]:
    """The paper's ablation table (reference §7.3) as markdown lines: each ablation of SML that
    ran, its NDCG@k and Recall@k, and its relative drop from SML. None unless SML and at least
    one ablation ran."""
    ran = {name: summary for name, summary in ablations().items() if name in table.index}
    if "sml" not in table.index or not ran:
        return []
    rows = [f"| Strategy | N@{k} | drop N@{k} | R@{k} | drop R@{k} |", "|---|---|---|---|---|"]
    for name in ["sml", *ran]:
        cells = [name]
        for metric in ("ndcg", "recall"):
            value, reference = table.at[name, f"{metric}@{k}"], table.at["sml", f"{metric}@{k}"]
            drop = None if name == "sml" or reference <= 0 else 1 - value / reference
            cells += [f"{value:.4f}", _pct(drop)]
        rows.append("| " + " | ".join(cells) + " |")
    return [
        f"## Ablations: SML's variants, {label}",
        "",
        *rows,
        "",
        "Drop: 1 - variant / SML (positive: the variant is worse). "
        + "; ".join(f"{name}: {summary}" for name, summary in ran.items())
        + ".",
        "",
    ]


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _table2(df: pd.DataFrame, test_periods: list[int]) -> str:
    part = df[df["phase"] == "test"].pivot(index="strategy", columns="period", values="retrain_seconds")
    header = ["Strategy"] + [str(p) for p in test_periods] + ["mean"]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for strategy in df["strategy"].drop_duplicates():
        if strategy not in part.index:
            continue
        values = [part.at[strategy, p] for p in test_periods]
        rows.append("| " + " | ".join([strategy] + [f"{v:.2f}" for v in values] + [f"{np.mean(values):.2f}"]) + " |")
    return "\n".join(rows)


# --------------------------------------------------------------- seed sweeps (rtsim run --seeds N)


def comparison_reference(df: pd.DataFrame) -> str:
    """SML when it ran, else the strategy that served the first scored period."""
    strategies = list(df["strategy"].drop_duplicates())
    if "sml" in strategies:
        return "sml"
    served = df[df["serving"] == 1].sort_values("period") if "serving" in df.columns else df.iloc[:0]
    return str(served["strategy"].iloc[0]) if len(served) else strategies[0]


def paired_comparisons(
    ranks: dict[int, dict[tuple[str, int], np.ndarray]], periods: list[int], reference: str, others: list[str], k: int
) -> tuple[dict, str | None]:
    """{(other, metric): Interval of reference minus other} over the test interactions of every
    seed (learner/stats.py, paired_bootstrap); or ({}, why not)."""
    from learner import stats

    seeds = sorted(ranks)
    out = {}
    for other in others:
        rows: dict[str, list[np.ndarray]] = {"ndcg": [], "recall": []}
        for seed in seeds:
            parts = {"ndcg": [], "recall": []}
            for period in periods:
                a, b = ranks[seed].get((reference, period)), ranks[seed].get((other, period))
                if a is None or b is None:
                    return {}, (
                        f"seed {seed} has no per-interaction ranks of {reference if a is None else other} "
                        f"for test period {period} (ranks/period-{period:06d}.npz)"
                    )
                if len(a) != len(b):
                    return {}, f"seed {seed}, period {period}: {reference} and {other} ranked different interactions"
                ga, gb = stats.gains(a, k), stats.gains(b, k)
                for metric in parts:
                    parts[metric].append(ga[metric] - gb[metric])
            for metric in rows:
                rows[metric].append(np.concatenate(parts[metric]))
        for metric, per_seed in rows.items():
            if len({len(r) for r in per_seed}) != 1:
                return {}, "the seeds ranked different numbers of test interactions: they cannot be paired"
            out[(other, metric)] = stats.paired_bootstrap(np.stack(per_seed))
    return out, None


def paired_lines(
    ranks: dict[int, dict[tuple[str, int], np.ndarray]], periods: list[int], reference: str, others: list[str], k: int
) -> list[str]:
    """Markdown rows of `paired_comparisons`: reference minus every other, with intervals."""
    from learner import stats

    lines: list[str] = []
    result, why = paired_comparisons(ranks, periods, reference, others, k) if others else ({}, "only one strategy ran")
    if why:
        lines += [f"Not computed: {why}.", ""]
    else:
        rows = [
            f"| Comparison | ΔN@{k} | 95% interval | significant | ΔR@{k} | 95% interval | significant |",
            "|---|---|---|---|---|---|---|",
        ]
        for other in others:
            cells = [f"{reference} − {other}"]
            for metric in ("ndcg", "recall"):
                iv = result[(other, metric)]
                cells += [f"{iv.mean:+.4f}", f"[{iv.lo:+.4f}, {iv.hi:+.4f}]", "yes" if iv.excludes_zero else "no"]
            rows.append("| " + " | ".join(cells) + " |")
        lines += [
            "\n".join(rows),
            "",
            f"Δ: {reference}'s pooled test NDCG@{k} (Recall@{k}) minus the other's, averaged over seeds. "
            f"Interval: 95% percentile interval of {stats.N_BOOT} two-level replicates (bootstrap seed "
            f"{stats.BOOT_SEED}), each the sum of a paired bootstrap over the test interactions (drawn with "
            "replacement; the seed-averaged per-interaction differences) and the seed-to-seed error of the "
            f"mean (s/√N times a Student t draw with N-1 = {len(ranks) - 1} degrees of freedom, s the spread of "
            "the per-seed differences; none with one seed). The rows pair because every strategy and seed "
            "ranked the same candidates for the same interaction. Significant: the interval excludes 0.",
            "",
        ]
    return lines


def seeds_summary_markdown(
    frames: dict[int, pd.DataFrame],
    ranks: dict[int, dict[tuple[str, int], np.ndarray]],
    title: str,
    ks: tuple[int, ...] = KS,
    eval_seed: int | None = None,
) -> str:
    """summary.md of a seed sweep: Table 1 as the mean over seeds with a 95% t interval, the
    paired comparisons of the reference strategy (SML) against every other, and Table 2 as
    the mean over seeds."""
    from learner import stats

    seeds = sorted(frames)
    first = frames[seeds[0]]
    test_periods = sorted(first.loc[first["phase"] == "test", "period"].unique())
    lines = [f"# {title}", ""]
    if not test_periods:
        return "\n".join(lines + ["No test period has closed yet.", ""])
    n_test = int(first.loc[first["phase"] == "test", "n_interactions"].sum() / max(1, first["strategy"].nunique()))
    lines += [
        f"{len(seeds)} seeds (`learner.seed` = {', '.join(map(str, seeds))}), one run each in `seed-<s>/`; "
        f"every run ranks the same evaluation candidates (`learner.eval_seed` = "
        f"{eval_seed if eval_seed is not None else 'as each run'}). Test periods: {test_periods[0]}-{test_periods[-1]} "
        f"({len(test_periods)} periods, {n_test} interactions). 1 positive vs up to 999 sampled negatives "
        "per interaction.",
        "",
    ]
    pooled_by_seed = {seed: pooled(frames[seed]) for seed in seeds}
    strategies = list(pooled_by_seed[seeds[0]].index)
    broken = {}
    for seed in seeds:
        for strategy, _periods in nonfinite_periods(frames[seed]).items():
            broken.setdefault(strategy, set()).add(seed)
    # the mean over seeds of each pooled value: what the cells, RI and the ablation table show
    means = pd.concat(pooled_by_seed.values()).groupby(level=0, sort=False).mean().loc[strategies]
    ri = {metric: relative_improvement(means, metric, ks) for metric in ("recall", "ndcg")}
    header = ["Strategy"]
    for metric, short in (("recall", "R"), ("ndcg", "N")):
        header += [f"{short}@{k}" for k in ks] + ([f"RI({short})"] if ri[metric] else [])
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for strategy in strategies:
        cells = [f"{strategy} †" if strategy in broken else strategy]
        for metric in ("recall", "ndcg"):
            for k in ks:
                values = [
                    pooled_by_seed[s].at[strategy, f"{metric}@{k}"]
                    for s in seeds
                    if strategy in pooled_by_seed[s].index
                ]
                iv = stats.t_interval(values)
                cells.append(f"{iv.mean:.4f}" + ("" if np.isnan(iv.lo) else f" [{iv.lo:.4f}, {iv.hi:.4f}]"))
            if ri[metric]:
                cells.append(_pct(ri[metric][strategy]))
        rows.append("| " + " | ".join(cells) + " |")
    lines += [
        "## Table 1: next-period quality, pooled over test interactions, across seeds",
        "",
        "\n".join(rows),
        "",
        "Each cell: the mean over seeds of the seed's pooled value [its 95% Student t interval over the "
        f"{len(seeds)} seed values, n-1 = {len(seeds) - 1} degrees of freedom]. The interval covers the mean over "
        "random streams (initialisation, shuffles, training negatives) on these candidates; it needs 2 seeds. "
        "RI: the paper's relative improvement of SML over each strategy, mean over K of (SML / strategy - 1), "
        "on the means over seeds.",
        "",
    ]
    for strategy, bad in broken.items():
        lines += [
            f"† {strategy} served non-finite rows in test periods under seed(s) "
            f"{', '.join(map(str, sorted(bad)))}: it diverged there.",
            "",
        ]
    lines += ablation_lines(means, max(ks), "pooled over test interactions, mean over seeds")
    k = max(ks)
    reference = comparison_reference(first)
    others = [s for s in strategies if s != reference]
    lines += [f"## Paired comparisons: {reference} against every other strategy", ""]
    lines += paired_lines(ranks, test_periods, reference, others, k)
    seconds = pd.concat([frames[s].assign(seed=s) for s in seeds])
    lines += [
        "## Table 2: retraining seconds per test period, mean over seeds",
        "",
        _table2(
            seconds.groupby(["strategy", "period"], sort=False, as_index=False).agg(
                retrain_seconds=("retrain_seconds", "mean"), phase=("phase", "first")
            ),
            test_periods,
        ),
        "",
    ]
    return "\n".join(lines)
