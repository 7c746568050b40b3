"""The report of a grid sweep (`rtsim sweep`): the grid's Table 1 (per setting and strategy,
the mean over seeds and its 95% t interval, learner/stats.py) and the best setting per
strategy and metric, chosen on the validation periods alone and then reported on the test
periods, so the choice never sees the numbers it is judged by.

It reads the periods.csv of every finished job, so it can be written while a sweep runs."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from learner.results import comparison_reference, load_ranks, paired_lines, pooled
from learner.stats import t_interval
from simulator.sweep import SweepDir, setting_id, setting_label


def load_pooled(root: SweepDir, jobs: list[dict]) -> pd.DataFrame:
    """One row per (finished job, strategy, phase in validation/test): the job's metrics pooled
    over that phase's interactions, with columns setting, seed, strategy, phase, metrics..."""
    parts = []
    for job in jobs:
        if not root.finished(job["id"]):
            continue
        frame = pd.read_csv(root.jobs_root / job["id"] / "periods.csv")
        for phase in ("validation", "test"):
            table = pooled(frame, (phase,))
            parts.append(
                table.rename_axis("strategy")
                .reset_index()
                .assign(setting=job["setting"], seed=job["seed"], phase=phase)
            )
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def metric_columns(frame: pd.DataFrame) -> list[str]:
    """recall@K then ndcg@K, each by K."""
    ks = sorted({int(c.split("@")[1]) for c in frame.columns if c.startswith(("recall@", "ndcg@"))})
    return [f"{m}@{k}" for m in ("recall", "ndcg") for k in ks if f"{m}@{k}" in frame.columns]


def _cell(values: pd.Series) -> str:
    iv = t_interval(values.to_numpy(float))
    return f"{iv.mean:.4f}" + ("" if math.isnan(iv.lo) else f" [{iv.lo:.4f}, {iv.hi:.4f}]")


def best_settings(frame: pd.DataFrame, metrics: list[str]) -> list[dict]:
    """Per (strategy, metric): the setting with the highest mean validation value over its
    seeds (ties: the earlier setting), and that setting's test values."""
    out = []
    val, test = frame[frame["phase"] == "validation"], frame[frame["phase"] == "test"]
    for strategy in frame["strategy"].drop_duplicates():
        for metric in metrics:
            means = val[val["strategy"] == strategy].groupby("setting")[metric].mean().dropna()
            if means.empty:
                continue
            best = int(means.idxmax())  # the first maximum in setting order
            chosen = test[(test["strategy"] == strategy) & (test["setting"] == best)][metric]
            out.append(
                {
                    "strategy": strategy,
                    "metric": metric,
                    "setting": best,
                    "validation": float(means[best]),
                    "test": chosen,
                }
            )
    return out


def _paired(root: SweepDir, jobs: list[dict], k: int) -> list[str]:
    """Each setting's reference strategy (SML when it ran) against every other, paired over
    its finished seeds' test interactions, as `rtsim run --seeds` reports them."""
    finished: dict[int, list[dict]] = {}
    for job in jobs:
        if root.finished(job["id"]):
            finished.setdefault(job["setting"], []).append(job)
    lines: list[str] = []
    for setting, done in sorted(finished.items()):
        frame = pd.read_csv(root.jobs_root / done[0]["id"] / "periods.csv")
        periods = sorted(frame.loc[frame["phase"] == "test", "period"].unique())
        reference = comparison_reference(frame)
        others = [s for s in frame["strategy"].drop_duplicates() if s != reference]
        ranks = {job["seed"]: load_ranks(root.jobs_root / job["id"]) for job in done}
        lines += [f"### Setting {setting_id(setting)}: {reference} against every other strategy", ""]
        lines += paired_lines(ranks, periods, reference, others, k)
    return lines


def sweep_markdown(root: SweepDir, state: dict) -> str:
    spec, jobs = state["spec"], state["jobs"]
    settings = {job["setting"]: job["point"] for job in jobs}
    seeds = sorted({job["seed"] for job in jobs})
    done = sum(root.finished(job["id"]) for job in jobs)
    lines = [
        f"# rtsim sweep {spec['name']}",
        "",
        *([spec["description"], ""] if spec.get("description") else []),
        f"Preset {spec.get('preset') or 'demo'}; {len(settings)} settings × {len(seeds)} seeds "
        f"(`learner.seed` = {', '.join(map(str, seeds))}) = {len(jobs)} jobs, {done} finished "
        "(each a run directory in `jobs/<job>/`).",
        "",
        "## Settings",
        "",
        "| setting | values |",
        "|---|---|",
        *(f"| {setting_id(i)} | {setting_label(point)} |" for i, point in sorted(settings.items())),
        "",
    ]
    frame = load_pooled(root, jobs)
    if frame.empty or (frame["phase"] == "test").sum() == 0:
        return "\n".join(lines + ["No job has finished yet.", ""])
    metrics = metric_columns(frame)
    test = frame[frame["phase"] == "test"]
    header = ["setting", "strategy", "seeds"] + [m.replace("recall@", "R@").replace("ndcg@", "N@") for m in metrics]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (setting, strategy), group in test.groupby(["setting", "strategy"], sort=False):
        cells = [setting_id(int(setting)), strategy, str(len(group))] + [_cell(group[m]) for m in metrics]
        rows.append("| " + " | ".join(cells) + " |")
    lines += [
        "## Table 1: next-period quality on the test periods, per setting",
        "",
        *rows,
        "",
        "Each cell: the mean over seeds of the job's value pooled over the test interactions [its 95% Student t "
        "interval over the seed values, n-1 degrees of freedom; none with one seed].",
        "",
    ]
    k = max(int(m.split("@")[1]) for m in metrics)
    lines += [f"## Paired comparisons per setting (N@{k}, R@{k} on the test periods)", "", *_paired(root, jobs, k)]
    lines += [
        "## Best setting per metric, chosen on the validation periods",
        "",
    ]
    chosen = best_settings(frame, metrics)
    if not chosen:
        return "\n".join(lines + ["No validation period has closed: no setting is chosen.", ""])
    lines += [
        "| strategy | metric | best setting | validation mean | test mean [95% interval] |",
        "|---|---|---|---|---|",
    ]
    for best in chosen:
        lines.append(
            f"| {best['strategy']} | {best['metric']} | {setting_id(best['setting'])} | {best['validation']:.4f} | "
            f"{_cell(best['test']) if len(best['test']) else '–'} |"
        )
    lines += [
        "",
        "The setting is the one with the highest mean over seeds on the validation periods (ties: the earlier "
        "setting); only then is it reported on the test periods, which played no part in the choice.",
        "",
    ]
    return "\n".join(lines)


def write_sweep_report(root: SweepDir, state: dict | None = None) -> Path:
    out = root.path / "report.md"
    out.write_text(sweep_markdown(root, state or root.load()))
    return out
