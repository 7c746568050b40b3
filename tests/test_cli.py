"""The real `rtsim` entry point, run as a subprocess: help texts, prepare/datasets/export-sml, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from replay_data.presets import preset_names
from tests.test_prepared import BAD_REASONS, N_ROWS, expected_events, synthetic_ratings, write_ratings

RTSIM_SCRIPT = Path(sys.executable).parent / "rtsim"


@pytest.fixture
def env(tmp_path):
    """No run may touch the user's cache: point XDG_CACHE_HOME into the test's folder."""
    return {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg-cache"), "COLUMNS": "100"}


def rtsim(*args, env, cwd=None, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "simulator.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["run"],
        ["paper"],
        ["prepare"],
        ["datasets"],
        ["export-sml"],
        ["kafka"],
        ["kafka", "up"],
        ["kafka", "down"],
        ["kafka", "status"],
        ["monitor"],
        ["monitor", "up"],
        ["monitor", "down"],
        ["monitor", "status"],
    ],
    ids=lambda c: " ".join(c) or "rtsim",
)
def test_help_exits_zero_with_an_example(command, env):
    done = rtsim(*command, "--help", env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "example" in done.stdout
    assert done.stdout.startswith(f"usage: rtsim {' '.join(command)}".rstrip())
    assert done.stderr == ""


def test_console_script_is_the_same_entry(env):
    done = subprocess.run([str(RTSIM_SCRIPT), "--help"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == rtsim("--help", env=env).stdout
    for command in ("run", "prepare", "datasets", "export-sml", "kafka"):
        assert command in done.stdout


def test_paper_runs_every_shipped_strategy_and_writes_table_1_and_the_ablations(tmp_path, env):
    from learner.strategies import paper_lineup

    done = rtsim(
        "paper", "--preset", "tiny", "--runs-dir", tmp_path, "--run-id", "p", "--no-progress", env=env, timeout=900
    )
    assert done.returncode == 0, done.stderr
    frame = pd.read_csv(tmp_path / "p" / "periods.csv")
    lineup = paper_lineup()
    assert lineup[0] == "sml" and {"fine_tune", "full_retrain", "spmf", "sml_cnn", "sml_fp"} <= set(lineup)
    assert list(frame["strategy"].drop_duplicates()) == lineup
    assert set(frame.loc[frame["serving"] == 1, "strategy"]) == {"sml"}
    for name in ("summary.md", "report.md"):
        text = (tmp_path / "p" / name).read_text()
        assert "| Strategy | R@5 | R@10 | R@20 | RI(R) |" in text and "| sml_fp |" in text
        assert "Ablations: SML's variants" in text
    # SML-N repeats SML's first online period exactly (no step 2 runs yet), so it shares it
    first = frame[frame["period"] == frame["period"].min()].set_index("strategy")
    later = frame[frame["period"] == frame["period"].min() + 1].set_index("strategy")
    assert later.at["sml_n", "ndcg@20"] == later.at["sml", "ndcg@20"]
    assert first.at["sml_n", "retrain_seconds"] == first.at["sml", "retrain_seconds"]
    assert later.at["sml_fp", "ndcg@20"] != later.at["sml", "ndcg@20"]


def test_prepare_then_datasets_then_export(tmp_path, env):
    rows = synthetic_ratings()
    fixture = tmp_path / "ratings.csv"
    write_ratings(fixture, rows)
    data_dir = tmp_path / "prepared"

    done = rtsim("prepare", "movielens", "--input", fixture, "--data-dir", data_dir, "--no-progress", env=env)
    assert done.returncode == 0, done.stderr
    first, _, body = done.stdout.partition("\n")
    assert first.startswith(f"prepared: {data_dir}{os.sep}movielens-")
    report = json.loads(body)
    n_events = len(expected_events(rows))
    assert report["rejected"]["counts"] == BAD_REASONS
    assert report["preprocess"] == [{"step": "repeat_policy", "before": N_ROWS, "after": n_events, "keep": "first"}]
    assert report["counts"]["read"] == N_ROWS and report["counts"]["events"] == n_events
    assert sum(report["counts"]["period_counts"]) == n_events and len(report["counts"]["period_counts"]) == 40
    prepared_path = first.removeprefix("prepared: ")

    again = rtsim("prepare", "movielens", "--input", fixture, "--data-dir", data_dir, "--no-progress", env=env)
    assert again.returncode == 0 and again.stdout.splitlines()[0] == f"cached: {prepared_path}"

    listing = rtsim("datasets", "--data-dir", data_dir, env=env)
    assert listing.returncode == 0, listing.stderr
    (line,) = [ln for ln in listing.stdout.splitlines() if ln.rstrip().endswith(prepared_path)]
    assert line.split()[:2] == ["movielens", f"{n_events:,}"]
    assert " 40 periods " in line
    for name in preset_names():
        assert f"\n  {name} " in listing.stdout
    assert not (tmp_path / "xdg-cache").exists()  # everything went to --data-dir

    out = tmp_path / "sml"
    exported = rtsim("export-sml", prepared_path, out, "--seed", "2", env=env)
    assert exported.returncode == 0, exported.stderr
    summary = json.loads(exported.stdout)
    assert (summary["periods"], summary["interactions"]) == (40, n_events)
    info = np.load(out / "information.npy")
    assert info[0] == n_events
    assert sum(len(np.load(out / "test" / f"{t}.npy")) for t in range(40)) == n_events


def test_datasets_with_an_empty_cache(tmp_path, env):
    done = rtsim("datasets", "--data-dir", tmp_path / "nothing", env=env)
    assert done.returncode == 0
    assert "none yet (rtsim prepare ...)" in done.stdout
    assert "movielens" in done.stdout.split("presets:")[0]  # the readers are listed too


def test_run_with_an_unknown_preset_lists_the_presets(tmp_path, env):
    done = rtsim("run", "--preset", "nosuch", "--runs-dir", tmp_path / "runs", env=env)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("rtsim: error: unknown preset 'nosuch'; known presets: ")
    for name in preset_names():
        assert name in done.stderr
    assert not (tmp_path / "runs").exists()


def test_a_seed_sweep_cannot_resume_and_says_how_to_go_on(tmp_path, env):
    done = rtsim("run", "--preset", "tiny", "--seeds", "2", "--resume", tmp_path / "runs" / "x", env=env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("rtsim: error: --seeds with --resume: repeat the sweep with --run-id")
    assert "Traceback" not in done.stderr


def test_prepare_of_a_file_dataset_without_input_asks_for_it(tmp_path, env):
    done = rtsim("prepare", "yelp", "--data-dir", tmp_path, env=env)
    assert done.returncode == 2
    assert "rtsim: error: dataset 'yelp' reads a file: give --input PATH" in done.stderr
    assert "Traceback" not in done.stderr


def test_prepare_errors_exit_2_with_one_line(tmp_path, env):
    fixture = tmp_path / "ratings.csv"
    write_ratings(fixture, synthetic_ratings())
    cases = [
        (["prepare", "movielens", "--input", tmp_path / "absent.csv"], "absent.csv does not exist"),
        (["prepare", "movielens", "--input", fixture, "--strict"], "ratings.csv:51: bad_timestamp"),
        (["prepare", "movielens", "--input", fixture, "--set", "learner.seed=[1,"], "not valid YAML"),
        (["prepare", "movielens", "--input", fixture, "--set", "data.periodz=3"], "unknown key data.periodz"),
        (["prepare", "nosuchreader", "--input", fixture], "unknown dataset reader 'nosuchreader'"),
    ]
    for args, message in cases:
        done = rtsim(*args, "--data-dir", tmp_path / "cache", env=env)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.startswith("rtsim: error: ") and message in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
    assert not list((tmp_path / "cache").glob("*/manifest.json"))


def _damaged_inputs(folder: Path) -> list[tuple[str, Path, str]]:
    """(reader, file, what the error must say): the archives of issue #18 that ended in a traceback."""
    import gzip
    import io
    import tarfile

    lines = b"".join(
        b'{"review_id": "r%d", "user_id": "u%d", "business_id": "b%d", "stars": 5, '
        b'"date": "2015-01-0%d 10:00:00"}\n' % (i, i, i, 1 + i % 9)
        for i in range(2000)
    )
    whole = gzip.compress(lines)
    truncated = folder / "truncated.json.gz"
    truncated.write_bytes(whole[: len(whole) // 2])
    corrupt = folder / "corrupt.json.gz"
    corrupt.write_bytes(whole[:20] + bytes(200) + whole[220:])
    plain = folder / "plain.json.gz"
    plain.write_bytes(lines)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        member = tarfile.TarInfo("one_week/20170101")
        member.size = len(lines)
        archive.addfile(member, io.BytesIO(lines))
    tar = folder / "truncated.tar.gz"
    tar.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return [
        ("yelp", truncated, "EOFError"),
        ("yelp", corrupt, "error"),
        ("yelp", plain, "BadGzipFile"),
        ("adressa", tar, "truncated or corrupt"),
    ]


def test_damaged_archives_and_a_folder_as_config_end_in_one_line(tmp_path, env):
    for reader, path, kind in _damaged_inputs(tmp_path):
        done = rtsim("prepare", reader, "--input", path, "--data-dir", tmp_path / "cache", "--no-progress", env=env)
        assert done.returncode == 2, (path, done.stderr)
        assert done.stderr.startswith(f"rtsim: error: {path} is truncated or corrupt"), (path, done.stderr)
        assert kind in done.stderr and "again" in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert not list((tmp_path / "cache").glob("*"))
    done = rtsim("run", "--preset", "tiny", "--config", tmp_path, "--runs-dir", tmp_path / "runs", env=env)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert f"cannot read the config file {tmp_path}: Is a directory; give a YAML file" in done.stderr
    assert not (tmp_path / "runs").exists()


def test_an_unwritable_run_directory_is_a_clear_error_and_a_nonzero_exit(tmp_path, env):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the runs folder should be")
    done = rtsim(
        "run",
        "--preset",
        "tiny",
        "--runs-dir",
        blocker,
        "--data-dir",
        tmp_path / "prepared",
        "--no-progress",
        env=env,
        timeout=300,
    )
    assert done.returncode != 0
    assert f"cannot write the run directory {blocker}" in done.stderr and "--runs-dir" in done.stderr
    assert "Traceback" not in done.stderr


def test_resume_without_a_checkpoint_says_to_start_afresh(tmp_path, env):
    run_dir = tmp_path / "runs" / "never-checkpointed"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("preset: tiny\n")
    done = rtsim("run", "--resume", run_dir, "--data-dir", tmp_path / "prepared", "--no-progress", env=env, timeout=300)
    assert done.returncode == 2
    assert "no valid checkpoint" in done.stderr and "without --resume" in done.stderr


def test_prepare_states_the_schedule_rule_and_refuses_a_mostly_rejected_input(tmp_path, env):
    from tests.test_prepared import _adressa_file

    source = tmp_path / "20170101"
    _adressa_file(source, [0])
    done = rtsim("prepare", "adressa", "--input", source, "--data-dir", tmp_path / "cache", env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.partition("\n")[2])
    assert report["schedule"]["from"] == "2016-12-31 23:00:00Z" and report["schedule"]["periods"] == 63
    assert report["counts"]["time_outliers"] == 1 and "rank 1% to rank 99%" in report["schedule"]["rule"]
    with source.open("a") as handle:
        handle.write('{"id": "x", "userId": \n' * 1100)
    args = ("prepare", "adressa", "--input", source, "--data-dir", tmp_path / "cache")
    done = rtsim(*args, env=env)
    assert done.returncode == 2 and "pass --allow-rejects" in done.stderr and done.stderr.count("\n") == 1
    assert rtsim(*args, "--allow-rejects", env=env).returncode == 0


def test_a_refused_run_leaves_no_run_directory(tmp_path, env):
    env = {k: v for k, v in env.items() if k != "RTSIM_CONTROL_TOKEN"}
    done = rtsim(
        "run",
        "--preset",
        "tiny",
        "--host",
        "0.0.0.0",
        "--run-id",
        "refused",
        "--runs-dir",
        tmp_path / "runs",
        "--data-dir",
        tmp_path / "prepared",
        "--no-progress",
        env=env,
        timeout=300,
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "without a token" in done.stderr, done.stderr
    assert not (tmp_path / "runs" / "refused").exists()


def test_resume_finds_the_log_in_the_data_dir_the_run_used(tmp_path, env):
    """Issue #18: `run --resume` forgot --data-dir and prepared the log again elsewhere."""
    runs, data_dir = tmp_path / "runs", tmp_path / "prepared"
    done = rtsim(
        "run",
        "--preset",
        "tiny",
        "--run-id",
        "r",
        "--runs-dir",
        runs,
        "--data-dir",
        data_dir,
        "--no-progress",
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    again = rtsim("run", "--resume", runs / "r", "--no-progress", env=env, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"cached log {data_dir.resolve()}" in again.stdout
    assert not (tmp_path / "xdg-cache" / "rtsim").exists()


def test_a_full_disk_outside_the_checkpoints_is_one_line_too(monkeypatch, capsys):
    import errno

    from simulator import cli

    def disk_full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "runs/x/periods.csv")

    monkeypatch.setattr(cli, "_cmd_datasets", disk_full)
    assert cli.main(["datasets"]) == 2
    assert capsys.readouterr().err == (
        "rtsim: error: cannot write runs/x/periods.csv: No space left on device; "
        "free disk space or choose another --runs-dir / --data-dir\n"
    )


# Issue #16, "Why": each setting was accepted, or failed later with a traceback
BAD_SETTINGS = [
    ("learner.model.dim=-4", "learner.model.dim: -4 is not allowed"),
    ("learner.eval.negatives=-1", "learner.eval.negatives: -1 is not allowed"),
    ("learner.strategies.spmf.reservoir=-10", "learner.strategies.spmf.reservoir: -10 is not allowed"),
    ("serve.metrics_port=99999", "serve.metrics_port: 99999 is not allowed; a port is 0"),
    ("bus.url=kafak://x", "bus.url: 'kafak://x' is not allowed; use memory or kafka://HOST:PORT"),
    ("learner.eval.ks=[]", "learner.eval.ks: [] is not allowed"),
    ("learner.strategies.enabled=[sml,sml]", "learner.strategies.enabled[1]: 'sml' is not allowed"),
    ("data.reader.min_ratng=4", "unknown key data.reader.min_ratng; allowed keys here:"),
]


def test_every_bad_setting_exits_2_with_one_line_before_anything_runs(tmp_path, env):
    for setting, message in BAD_SETTINGS:
        done = rtsim(
            "run",
            "--preset",
            "tiny",
            "--set",
            setting,
            "--runs-dir",
            tmp_path / "runs",
            "--data-dir",
            tmp_path / "cache",
            env=env,
        )
        assert done.returncode == 2, (setting, done.stderr)
        assert done.stderr.startswith(f"rtsim: error: {message}"), (setting, done.stderr)
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    # nothing ran: no run directory, no prepared log
    assert not (tmp_path / "runs").exists() and not (tmp_path / "cache").exists()


def test_a_misspelt_reader_option_and_a_csv_without_columns_are_one_line_errors(tmp_path, env):
    fixture = tmp_path / "ratings.csv"
    write_ratings(fixture, synthetic_ratings())
    cases = [
        (
            ["prepare", "movielens", "--input", fixture, "--set", "data.reader.min_ratng=4"],
            "unknown key data.reader.min_ratng; allowed keys here: chunk_rows, format, max_line_bytes, min_rating "
            "(the movielens reader)",
        ),
        (
            ["prepare", "csv", "--input", fixture],
            "missing key data.reader.user_col; this section needs user_col, item_col, ts_col (the csv reader)",
        ),
    ]
    for args, message in cases:
        done = rtsim(*args, "--data-dir", tmp_path / "cache", env=env)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr == f"rtsim: error: {message}\n", (args, done.stderr)


def test_an_unexpected_exception_is_a_bug_and_keeps_its_traceback(monkeypatch, tmp_path):
    import replay_data.prepared
    from simulator.cli import main

    def broken(root):
        raise ValueError("a bug, not a setting")

    monkeypatch.setattr(replay_data.prepared, "list_prepared", broken)
    with pytest.raises(ValueError, match="a bug, not a setting"):
        main(["datasets", "--data-dir", str(tmp_path)])
