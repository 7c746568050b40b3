"""Grid sweeps (issue #20, item 2): the sweep file's checks, its expansion into jobs, the
sweep directory and report, and (slow) `rtsim sweep` with two workers on tiny end to end:
resumable, and every job's periods.csv the same as the job run alone."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from learner.stats import t_interval
from simulator.sweep import SweepDir, SweepError, expand, load_spec
from simulator.sweep_report import sweep_markdown
from simulator.worker import job_log, share_of_cores

ROOT = Path(__file__).resolve().parents[1]
TIMING = ["retrain_seconds", "eval_seconds"]


def _spec(tmp_path: Path, text: str, name: str = "grid.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return load_spec(path)


GRID = """\
preset: tiny
set:
  learner.strategies.enabled: [fine_tune]
  learner.strategies.serving: fine_tune
grid:
  learner.strategies.fine_tune.train.epochs: [1, 2]
  learner.strategies.fine_tune.train.lr: [0.01, 0.05]
seeds: 2
"""


def test_the_grid_expands_into_settings_times_seeds_with_one_eval_seed(tmp_path):
    jobs = expand(_spec(tmp_path, GRID))
    assert [j.id for j in jobs] == [f"s{i:02d}-seed-{s}" for i in range(4) for s in (0, 1)]
    assert jobs[2].point == {
        "learner.strategies.fine_tune.train.epochs": 1,
        "learner.strategies.fine_tune.train.lr": 0.05,
    }
    cfg = jobs[3].config()
    assert cfg.learner.seed == 1 and cfg.learner.eval_seed == 0  # every job ranks the same candidates
    assert cfg.learner.strategies.fine_tune.train.lr == 0.05 and cfg.learner.strategies.enabled == ["fine_tune"]
    assert cfg.serve.metrics_port == 0  # jobs run side by side
    listed = expand(_spec(tmp_path, GRID.replace("seeds: 2", "seeds: [7, 3]")))
    assert [(j.id, j.config().learner.seed) for j in listed[:2]] == [("s00-seed-7", 7), ("s00-seed-3", 3)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("preset: tiny\ngrid:\n  learner.strategies.sml.roundz: [1]\n", "unknown key learner.strategies.sml.roundz"),
        ("preset: tiny\ngrid:\n  learner.strategies.sml.rounds: [2, 0]\n", "learner.strategies.sml.rounds: 0"),
        ("preset: tiny\nset:\n  learner.model.dim: -1\n", "learner.model.dim"),
        ("preset: tiny\ngrid:\n  learner.model.dim: 8\n", "grid learner.model.dim must be a non-empty list"),
        ("preset: tiny\ngrid:\n  learner.model.dim: [8, 8]\n", "lists a value twice"),
        ("grid:\n  learner.model.dim: [8]\nset:\n  learner.model.dim: 8\n", "given in both set and grid"),
        ("grid:\n  learner.model: [{dim: 8}]\n  learner.model.dim: [8]\n", "one inside the other"),
        ("grid:\n  learner.seed: [1, 2]\n", "under `seeds:`"),
        ("seeds: 0\n", "seeds is a count >= 1"),
        ("seeds: [1, 1]\n", "seeds is a count >= 1"),
        ("presets: tiny\n", "unknown key 'presets'"),
        ("- 1\n", "a sweep file is a mapping"),
    ],
)
def test_a_bad_sweep_file_fails_up_front_naming_the_key(tmp_path, text, message):
    with pytest.raises(SweepError) as err:
        expand(_spec(tmp_path, text))
    assert message in str(err.value)


def _fake_job(root: SweepDir, job_id: str, levels: dict[str, float]) -> None:
    """A finished job whose strategy `a` scores levels[phase] in every period of that phase."""
    rows = [
        {"period": t, "phase": phase, "strategy": "a", "serving": 1, "n_interactions": 10}
        | {f"{m}@{k}": levels[phase] for m in ("recall", "ndcg") for k in (5, 20)}
        for t, phase in ((5, "validation"), (6, "test"), (7, "test"))
    ]
    folder = root.jobs_root / job_id
    folder.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(folder / "periods.csv", index=False)
    (folder / "summary.md").write_text("done")


def test_the_report_picks_the_best_setting_on_validation_and_reports_it_on_test(tmp_path):
    spec = _spec(tmp_path, "preset: tiny\ngrid:\n  learner.model.dim: [8, 16]\nseeds: 3\n")
    root = SweepDir(tmp_path / "sweep")
    state = root.start(spec, expand(spec))
    # s00 wins on validation, s01 on test: the choice must not look at test
    for seed, noise in zip((0, 1, 2), (0.0, 0.01, -0.02), strict=True):
        _fake_job(root, f"s00-seed-{seed}", {"validation": 0.5, "test": 0.2 + noise})
        _fake_job(root, f"s01-seed-{seed}", {"validation": 0.4, "test": 0.3 + noise})
    text = sweep_markdown(root, state)
    iv = t_interval([0.2, 0.21, 0.18])
    cell = f"{iv.mean:.4f} [{iv.lo:.4f}, {iv.hi:.4f}]"
    assert f"| s00 | a | 3 | {cell} |" in text
    assert f"| a | ndcg@20 | s00 | 0.5000 | {cell} |" in text
    assert "| s01 | learner.model.dim=16 |" in text


def test_a_sweep_directory_refuses_another_sweep_and_keeps_finished_jobs(tmp_path):
    spec = _spec(tmp_path, "preset: tiny\ngrid:\n  learner.model.dim: [8, 16]\n")
    root = SweepDir(tmp_path / "sweep")
    state = root.start(spec, expand(spec))
    state["jobs"][0].update(worker="w1", seconds=3.0)
    root.save(state)
    _fake_job(root, "s00-seed-0", {"validation": 0.5, "test": 0.2})
    again = root.start(spec, expand(spec))
    assert [(j["state"], j["worker"]) for j in again["jobs"]] == [("done", "w1"), ("pending", None)]
    other = _spec(tmp_path, "preset: tiny\ngrid:\n  learner.model.dim: [8, 32]\n")
    with pytest.raises(SweepError, match="holds a different sweep"):
        root.start(other, expand(other))
    with pytest.raises(SweepError, match="not a sweep directory"):
        SweepDir(tmp_path).load()


def _sweep(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "simulator.cli", "sweep", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.slow
def test_rtsim_sweep_on_tiny_with_two_workers_is_resumable_and_deterministic(tmp_path, tiny):
    from replay_data.prepared import prepare
    from simulator.run import run_embedded
    from simulator.rundir import RunDir

    (tmp_path / "grid.yaml").write_text(
        "name: g\npreset: tiny\nset:\n  learner.strategies.enabled: [fine_tune, spmf]\n"
        "  learner.strategies.serving: fine_tune\n  learner.pretrain.epochs: 2\n"
        "grid:\n  learner.strategies.fine_tune.train.epochs: [1, 2]\nseeds: 2\n"
    )
    data = ["--data-dir", str(tmp_path / "prepared")]
    done = _sweep("grid.yaml", "--workers", "2", *data, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "4/4 done, 0 failed" in done.stdout
    root = SweepDir(tmp_path / "runs" / "g")
    frames = {j: pd.read_csv(root.jobs_root / j / "periods.csv") for j in ("s00-seed-0", "s01-seed-1")}
    report = (root.path / "report.md").read_text()
    assert "| s01 | fine_tune | 2 |" in report and "| fine_tune | ndcg@20 |" in report
    # each setting's paired comparison over its two seeds, as `rtsim run --seeds` gives
    assert "### Setting s01: fine_tune against every other strategy" in report
    assert "| fine_tune − spmf |" in report

    # the same job run alone gives the same periods.csv
    job = next(j for j in expand(load_spec(tmp_path / "grid.yaml")) if j.id == "s01-seed-1")
    cfg = job.config()
    log, _ = prepare(cfg.data, tmp_path / "prepared", progress=False)
    alone = run_embedded(cfg, log, RunDir(tmp_path / "alone", "alone").create(cfg), report=lambda _: None)
    pd.testing.assert_frame_equal(alone.drop(columns=TIMING), frames["s01-seed-1"].drop(columns=TIMING))
    assert not np.allclose(frames["s00-seed-0"]["ndcg@20"], frames["s01-seed-1"]["ndcg@20"])

    # an interrupted job (no summary, its newest checkpoint lost) resumes; finished ones are skipped
    interrupted = root.jobs_root / "s00-seed-0"
    (interrupted / "summary.md").unlink()
    newest = sorted((interrupted / "checkpoints").glob("ckpt-*.pt"))[-1]
    newest.unlink()
    again = _sweep("grid.yaml", "--workers", "2", *data, cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "3 jobs finished before; not run again" in again.stdout and "job s00-seed-0 done" in again.stdout
    assert "resuming from" in root.log_file("s00-seed-0").read_text()
    resumed = pd.read_csv(interrupted / "periods.csv")
    pd.testing.assert_frame_equal(resumed.drop(columns=TIMING), frames["s00-seed-0"].drop(columns=TIMING))

    status = _sweep("status", "runs/g", cwd=tmp_path)
    assert status.returncode == 0 and "0 pending, 0 running, 4 done, 0 failed of 4 jobs" in status.stdout


@pytest.mark.parametrize(
    "workers, cores, shares",
    [
        (2, [0, 1], [[0], [1]]),
        (3, [0, 1], [[0], [1], [0]]),
        (2, list(range(16)), [list(range(8)), list(range(8, 16))]),
        (3, [2, 3, 5, 7, 8, 9, 11, 12], [[2, 3], [5, 7], [8, 9, 11, 12]]),
    ],
)
def test_local_workers_split_the_cores_between_them(workers, cores, shares):
    assert [share_of_cores(slot, workers, cores) for slot in range(workers)] == shares


def test_sweep_metrics_count_jobs_per_worker_and_state():
    from prometheus_client import generate_latest

    from simulator.sweep_metrics import SweepMetrics

    metrics = SweepMetrics("g", "tiny")
    jobs = [
        {"state": "done", "worker": "w1"},
        {"state": "done", "worker": "w1"},
        {"state": "running", "worker": "w2"},
        {"state": "pending", "worker": None},
    ]
    metrics.observe(jobs)
    jobs[2]["state"] = "done"  # w2 finished: its running series reads 0, not gone
    metrics.observe(jobs)
    text = generate_latest(metrics.registry).decode()
    for labels, value in (
        ('state="done",worker="w1"', 2.0),
        ('state="done",worker="w2"', 1.0),
        ('state="running",worker="w2"', 0.0),
        ('state="pending",worker="none"', 1.0),
    ):
        assert f'rtsim_sweep_jobs{{run_id="g",{labels}}} {value}' in text, text


@pytest.mark.parametrize("source", ["README.md", "help"])
def test_the_documented_sweep_files_are_valid(tmp_path, source):
    import re

    from simulator.sweep_cli import SWEEP_HELP

    text = (ROOT / "README.md").read_text() if source == "README.md" else SWEEP_HELP
    block = re.search(r"```yaml\n(.*?)```", text, re.S) if source == "README.md" else None
    body = block.group(1) if block else re.search(r"A sweep file.*?:\n\n(.*?)\n\n", text, re.S).group(1)
    jobs = expand(_spec(tmp_path, textwrap.dedent(body)))
    assert len(jobs) == 12


@pytest.mark.parametrize("path", sorted((ROOT / "benchmarks" / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_the_benchmark_sweep_files_are_valid(path):
    spec = load_spec(path)
    jobs = expand(spec)
    assert jobs and all(job.id.startswith("s00-seed-") for job in jobs)


def test_a_failing_job_is_logged_in_full_and_reported_in_one_line(tmp_path):
    root = SweepDir(tmp_path / "sweep")
    with job_log(root, "j1") as (say, failure):
        say("started")
        raise ValueError("bad setting\nsecond line")
    assert failure == ["ValueError: bad setting"]
    log = root.log_file("j1").read_text()
    assert log.startswith("started\n") and "Traceback" in log and "second line" in log
    with job_log(root, "j2") as (say, failure):
        say("fine")
    assert failure == [] and root.log_file("j2").read_text() == "fine\n"
