"""Seed sweeps (`rtsim run --seeds N`): the same configuration run N times with
learner.seed = base, base+1, ... and the evaluation candidates fixed by learner.eval_seed,
each into RUN_DIR/seed-<s>/ (a normal run directory), then a combined RUN_DIR/summary.md and
report (learner/results.py, seeds_summary_markdown; learner/stats.py)."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pandas as pd

from simulator.config import RunConfig
from simulator.rundir import RunDir

SEED_DIR = re.compile(r"seed-(-?\d+)")


def sweep_configs(cfg: RunConfig, n: int) -> list[tuple[int, RunConfig]]:
    """(seed, config) per run: seeds base..base+n-1, eval_seed fixed at the base config's
    (its learner.eval_seed, else its learner.seed), so every run ranks the same candidates."""
    if n < 1:
        raise ValueError(f"--seeds must be >= 1, got {n}")
    base = cfg.learner.seed
    eval_seed = base if cfg.learner.eval_seed is None else cfg.learner.eval_seed
    return [
        (base + i, replace(cfg, learner=replace(cfg.learner, seed=base + i, eval_seed=eval_seed))) for i in range(n)
    ]


def seed_dirs(path: Path) -> dict[int, Path]:
    """{seed: RUN_DIR/seed-<s>} for the seed runs with a periods.csv, by seed."""
    found = {}
    for child in Path(path).iterdir() if Path(path).is_dir() else []:
        match = SEED_DIR.fullmatch(child.name)
        if match and (child / "periods.csv").is_file():
            found[int(match.group(1))] = child
    return dict(sorted(found.items()))


def is_sweep(path: Path) -> bool:
    return not (Path(path) / "periods.csv").exists() and bool(seed_dirs(path))


def run_seeds(cfg: RunConfig, log, root: RunDir, n: int, report=print, keep_serving: bool = False) -> Path:
    """Run the sweep sequentially. A seed whose directory already holds a summary.md (a finished
    run) is not run again, so an interrupted sweep continues by repeating the command with
    --run-id."""
    from simulator.run import run_embedded

    configs = sweep_configs(cfg, n)
    root.create(configs[0][1])  # the sweep's config.yaml: the base seed, with eval_seed fixed
    for i, (seed, seed_cfg) in enumerate(configs):
        run_dir = RunDir(root.path, f"{root.run_id}-seed-{seed}", folder=f"seed-{seed}")
        if run_dir.summary_md.exists():
            report(f"seed {seed}: finished before ({run_dir.path}); not run again")
            continue
        run_dir.create(seed_cfg)
        report(f"seed {seed} ({i + 1} of {n}): {run_dir.path}")
        run_embedded(seed_cfg, log, run_dir, report=report, keep_serving=keep_serving and i == n - 1)
    write_sweep_summary(root.path, configs[0][1].learner.eval_seed)
    from simulator.report import write_report

    written = write_report(root.path)
    report(f"sweep report: {root.path / 'report.md'} ({len(written) - 2} plots)")
    return root.path


def load_sweep(path: Path) -> tuple[dict[int, pd.DataFrame], dict[int, dict]]:
    """Each seed's periods.csv and per-interaction ranks."""
    from learner.results import load_ranks

    dirs = seed_dirs(path)
    return (
        {seed: pd.read_csv(d / "periods.csv") for seed, d in dirs.items()},
        {seed: load_ranks(d) for seed, d in dirs.items()},
    )


def sweep_summary(
    path: Path, eval_seed: int | None = None, title: str | None = None, ks: tuple[int, ...] | None = None
) -> str:
    from learner.results import KS, seeds_summary_markdown

    frames, ranks = load_sweep(path)
    if eval_seed is None:
        eval_seed = _eval_seed(Path(path) / "config.yaml")
    if ks is None and frames:
        columns = next(iter(frames.values())).columns
        ks = tuple(sorted(int(c[5:]) for c in columns if re.fullmatch(r"ndcg@\d+", c))) or KS
    return seeds_summary_markdown(
        frames, ranks, title or f"rtsim seed sweep {Path(path).resolve().name}", ks or KS, eval_seed
    )


def write_sweep_summary(path: Path, eval_seed: int | None = None) -> Path:
    out = Path(path) / "summary.md"
    out.write_text(sweep_summary(path, eval_seed))
    return out


def _eval_seed(config_path: Path) -> int | None:
    import yaml

    try:
        learner = (yaml.safe_load(config_path.read_text()) or {}).get("learner") or {}
    except (OSError, yaml.YAMLError):
        return None
    return learner.get("eval_seed", learner.get("seed"))
