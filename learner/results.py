"""periods.csv rows and the summary tables (the paper's Table 1 and Table 2 shapes)."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pandas as pd

from learner.engine import StrategyResult
from learner.evaluation import SEGMENTS

KS = (5, 10, 20)
TIMING_COLUMNS = ("retrain_seconds", "eval_seconds")
HEALTH_COLUMNS = ("nonfinite_rows", "max_row_norm", "norm_warning")


def columns(ks: tuple[int, ...] = KS, full_ranking: bool = False) -> list[str]:
    full = [f"full_recall@{k}" for k in ks] + [f"full_ndcg@{k}" for k in ks] if full_ranking else []
    return (["period", "phase", "strategy", "serving", "n_interactions", "n_new_users", "n_new_items", "n_candidates"]
            + [f"recall@{k}" for k in ks] + [f"ndcg@{k}" for k in ks]
            + [f"ndcg@{k}[{s}]" for k in ks for s in SEGMENTS] + full + list(HEALTH_COLUMNS) + list(TIMING_COLUMNS))


def as_row(result: StrategyResult) -> dict:
    m = result.metrics
    row = {
        "period": result.period, "phase": result.phase, "strategy": result.strategy,
        "serving": int(result.serving), "n_interactions": result.n_interactions,
        "n_new_users": result.n_new_users, "n_new_items": result.n_new_items,
        "n_candidates": round(result.n_candidates, 6),
    }
    row.update({f"recall@{k}": v for k, v in m.recall.items()})
    row.update({f"ndcg@{k}": v for k, v in m.ndcg.items()})
    row.update({f"ndcg@{k}[{s}]": by_segment[s] for k, by_segment in m.segment_ndcg.items() for s in SEGMENTS})
    if result.full is not None:
        row.update({f"full_recall@{k}": v for k, v in result.full.recall.items()})
        row.update({f"full_ndcg@{k}": v for k, v in result.full.ndcg.items()})
    row.update(nonfinite_rows=result.health.nonfinite_rows, max_row_norm=result.health.max_row_norm,
               norm_warning=int(result.guard_warning))
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
        ratios = [table.at[reference, f"{metric}@{k}"] / table.at[strategy, f"{metric}@{k}"] - 1
                  for k in ks if table.at[strategy, f"{metric}@{k}"] > 0]
        out[strategy] = float(np.mean(ratios)) if ratios and strategy != reference else None
    return out


def summary_markdown(df: pd.DataFrame, title: str, ks: tuple[int, ...] = KS) -> str:
    test_periods = sorted(df.loc[df["phase"] == "test", "period"].unique())
    lines = [f"# {title}", ""]
    if not test_periods:
        return "\n".join(lines + ["No test period has closed yet.", ""])
    lines += [f"Test periods: {test_periods[0]}-{test_periods[-1]} ({len(test_periods)} periods, "
              f"{int(df.loc[(df['phase'] == 'test'), 'n_interactions'].sum() / max(1, df['strategy'].nunique()))} "
              "interactions). 1 positive vs up to 999 sampled negatives per interaction.", ""]
    broken = nonfinite_periods(df)
    for label, table in (("pooled over test interactions", pooled(df)),
                         ("mean of per-period values", per_period_mean(df))):
        lines += [f"## Table 1: next-period quality, {label}", "", _table1(table, ks, broken), ""]
    for strategy, periods in broken.items():
        lines += [f"† {strategy} served rows that are not finite (NaN or inf) in test periods "
                  f"{', '.join(map(str, periods))}: it diverged. Those periods count with every "
                  "positive ranked last, so its figures are a floor, not a model's quality.", ""]
    lines += ["RI: the paper's relative improvement of SML over each strategy, "
              "mean over K of (SML / strategy - 1).", "",
              "## Table 2: retraining seconds per test period", "", _table2(df, test_periods), "",
              "Retrain seconds cover training work only; evaluation is timed apart (`eval_seconds` in periods.csv).", ""]
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
    header = (["Strategy"] + [f"R@{k}" for k in ks] + (["RI(R)"] if ri_r else [])
              + [f"N@{k}" for k in ks] + (["RI(N)"] if ri_n else []))
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
