"""Seed sweeps (issue #20, item 1): eval_seed fixes the candidates, the sweep's configs, the
combined summary, and (slow) `rtsim run --seeds 2` on the tiny preset end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import learner.engine as engine_module
from learner.engine import Engine
from learner.results import comparison_reference, seeds_summary_markdown
from simulator.config import resolve
from simulator.seeds import sweep_configs

ROOT = Path(__file__).resolve().parents[1]


def _candidates(tiny, monkeypatch, **learner):
    """The evaluation negatives of the first online period under these learner settings."""
    cfg, phases, periods = tiny
    seen = []
    original = engine_module.sample_eval_candidates

    def record(*args, **kwargs):
        out = original(*args, **kwargs)
        seen.append(out.negatives.copy())
        return out

    monkeypatch.setattr(engine_module, "sample_eval_candidates", record)
    strategies = replace(cfg.learner.strategies, enabled=["fine_tune"], serving="fine_tune")
    # 20 negatives: tiny's first online period has fewer than 999 eligible items, so with
    # the default every seed would take all of them
    engine = Engine(
        replace(
            cfg.learner,
            strategies=strategies,
            pretrain=replace(cfg.learner.pretrain, epochs=1),
            eval=replace(cfg.learner.eval, negatives=20),
            **learner,
        ),
        phases,
    )
    for t, events in periods[:3]:
        engine.close_period(t, events)
    assert len(seen) == 1
    return seen[0]


def test_a_fixed_eval_seed_gives_every_seed_the_same_candidates(tiny, monkeypatch):
    base = _candidates(tiny, monkeypatch, seed=0)
    assert np.array_equal(_candidates(tiny, monkeypatch, seed=0, eval_seed=0), base)  # the default is the seed
    assert np.array_equal(_candidates(tiny, monkeypatch, seed=5, eval_seed=0), base)
    assert not np.array_equal(_candidates(tiny, monkeypatch, seed=5), base)  # without it they move with the seed


def test_sweep_configs_step_the_seed_and_fix_the_eval_seed():
    cfg = resolve("tiny", overrides=["learner.seed=7"])
    configs = sweep_configs(cfg, 3)
    assert [s for s, _ in configs] == [7, 8, 9]
    assert [(c.learner.seed, c.learner.eval_seed) for _, c in configs] == [(7, 7), (8, 7), (9, 7)]
    pinned = sweep_configs(resolve("tiny", overrides=["learner.seed=7", "learner.eval_seed=1"]), 2)
    assert [c.learner.eval_seed for _, c in pinned] == [1, 1]
    with pytest.raises(ValueError):
        sweep_configs(cfg, 0)


def _frame(seed_shift: float) -> pd.DataFrame:
    rows = []
    for period, phase in ((5, "validation"), (6, "test"), (7, "test")):
        for strategy, level in (("sml", 0.30), ("fine_tune", 0.20)):
            value = level + seed_shift
            rows.append(
                {
                    "period": period,
                    "phase": phase,
                    "strategy": strategy,
                    "serving": int(strategy == "sml"),
                    "n_interactions": 100,
                    "recall@20": value + 0.1,
                    "ndcg@20": value,
                    "nonfinite_rows": 0,
                    "retrain_seconds": 1.0 if strategy == "sml" else 0.1,
                }
            )
    return pd.DataFrame(rows)


def test_the_sweep_summary_has_intervals_and_paired_comparisons():
    rng = np.random.default_rng(20)
    frames = {0: _frame(0.0), 1: _frame(0.01), 2: _frame(-0.005)}
    ranks = {}
    for seed in frames:
        ranks[seed] = {}
        for period in (6, 7):
            good = rng.integers(0, 10, 100).astype(np.float32)  # sml: mostly in the top 20
            ranks[seed][("sml", period)] = good
            ranks[seed][("fine_tune", period)] = good + rng.integers(0, 30, 100)
    text = seeds_summary_markdown(frames, ranks, "sweep", ks=(20,), eval_seed=0)
    assert "3 seeds (`learner.seed` = 0, 1, 2)" in text and "`learner.eval_seed` = 0" in text
    row = next(line for line in text.splitlines() if line.startswith("| sml |"))
    values = [0.30, 0.31, 0.295]
    assert f"{np.mean(values):.4f} [" in row  # mean and its t interval
    assert "| Strategy | R@20 | RI(R) | N@20 | RI(N) |" in text
    fine_tune = next(line for line in text.splitlines() if line.startswith("| fine_tune |"))
    ri_n = (np.mean(values) / (np.mean(values) - 0.1) - 1) * 100  # SML over fine-tune, on the seed means
    assert fine_tune.rstrip(" |").endswith(f"{ri_n:.1f}%")
    assert "Ablations" not in text  # no variant of SML ran
    comparison = next(line for line in text.splitlines() if line.startswith("| sml − fine_tune"))
    cells = [c.strip() for c in comparison.strip("|").split("|")]
    assert cells[0] == "sml − fine_tune" and cells[1].startswith("+") and cells[3] == "yes"
    assert "two-level replicates" in text and "Table 2" in text


def test_missing_ranks_say_why_no_comparison(tmp_path):
    text = seeds_summary_markdown({0: _frame(0.0), 1: _frame(0.01)}, {0: {}, 1: {}}, "sweep", ks=(20,))
    assert "Not computed: seed 0 has no per-interaction ranks" in text


def test_the_reference_falls_back_to_the_serving_strategy():
    frame = _frame(0.0)
    assert comparison_reference(frame) == "sml"
    frame = frame[frame["strategy"] == "fine_tune"].assign(serving=1)
    assert comparison_reference(pd.concat([frame, frame.assign(strategy="spmf", serving=0)])) == "fine_tune"


@pytest.mark.slow
def test_rtsim_run_seeds_2_on_tiny_end_to_end(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "simulator.cli",
            "run",
            "--preset",
            "tiny",
            "--seeds",
            "2",
            "--set",
            "learner.strategies.enabled=[sml,fine_tune,spmf]",
            "--runs-dir",
            str(tmp_path),
            "--run-id",
            "sweep",
            "--no-progress",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    root = tmp_path / "sweep"
    frames = {s: pd.read_csv(root / f"seed-{s}" / "periods.csv") for s in (0, 1)}
    for s in (0, 1):
        assert (root / f"seed-{s}" / "summary.md").is_file()
        assert sorted(p.name for p in (root / f"seed-{s}" / "ranks").iterdir()) == [
            "period-000005.npz",
            "period-000006.npz",
            "period-000007.npz",
        ]
    # the same interactions and candidates, different random streams
    a, b = (frames[s].set_index(["period", "strategy"]) for s in (0, 1))
    assert a["n_candidates"].equals(b["n_candidates"]) and a["n_interactions"].equals(b["n_interactions"])
    assert not np.allclose(a["ndcg@20"], b["ndcg@20"])
    summary = (root / "summary.md").read_text()
    assert "2 seeds (`learner.seed` = 0, 1)" in summary
    assert "| sml − fine_tune |" in summary and "| sml − spmf |" in summary
    assert "Not computed" not in summary
    report = (root / "report.md").read_text()
    assert (
        "- seeds: 0, 1" in report and "lowest to the highest seed" in report and (root / "plots" / "ndcg.png").is_file()
    )


def test_the_report_of_a_sweep_draws_bands_and_the_sweep_tables(tmp_path):
    from simulator.report import write_report

    root = tmp_path / "sweep"
    for seed, shift in ((3, 0.0), (4, 0.02)):
        (root / f"seed-{seed}").mkdir(parents=True)
        _frame(shift).to_csv(root / f"seed-{seed}" / "periods.csv", index=False)
    written = write_report(root)
    report = (root / "report.md").read_text()
    assert "- seeds: 3, 4" in report and "lowest to the highest seed" in report and "across seeds" in report
    assert "Not computed: seed 3 has no per-interaction ranks" in report  # no ranks/ in this fake sweep
    assert "plots/ndcg.png" in written
