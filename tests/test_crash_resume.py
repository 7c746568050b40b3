"""kill -9 at seeded random moments, resume, and get the uninterrupted run's periods.csv."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from learner.engine import Engine
from learner.results import as_row

pytestmark = pytest.mark.slow
KILLS = 5


def _deterministic(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=[c for c in frame.columns if c.endswith("_seconds")]).reset_index(drop=True)


@pytest.fixture(scope="module")
def uninterrupted(tiny):
    cfg, phases, periods = tiny
    engine = Engine(cfg.learner, phases)
    return _deterministic(pd.DataFrame([as_row(r) for t, events in periods for r in engine.close_period(t, events)]))


def _start(run_dir: Path, common: list[str]) -> subprocess.Popen:
    resume = (
        ["--resume", str(run_dir)]
        if (run_dir / "checkpoints" / "latest").exists()
        else ["--preset", "tiny", "--runs-dir", str(run_dir.parent), "--run-id", run_dir.name]
    )
    return subprocess.Popen(
        [sys.executable, "-m", "simulator.cli", "run", *resume, *common, "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _lines(proc: subprocess.Popen) -> list[str]:
    """The process's output lines, collected by a thread as they come."""
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()
    return lines


def _closed_period(lines: list[str], period: int, proc: subprocess.Popen, timeout_s: float = 120.0) -> bool:
    """Wait until the run reports a closed period >= `period` (a resumed run may start past it)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if any(line.startswith("period ") and int(line.split()[1]) >= period for line in list(lines)):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("transport", ["memory", pytest.param("kafka", marks=pytest.mark.kafka)])
def test_kill_9_and_resume_reproduces_the_uninterrupted_run(request, tmp_path, uninterrupted, transport):
    common = ["--data-dir", str(tmp_path / "prepared"), "--speed", "10000"]
    if transport == "kafka":
        common += [
            "--bus",
            f"kafka://{request.getfixturevalue('kafka_bootstrap')}",
            "--set",
            f"bus.prefix=t{uuid.uuid4().hex[:8]}",
        ]
    run_dir = tmp_path / "runs" / "crashy"
    rng = np.random.default_rng(20261127)  # the kill moments, reproducible
    # prepare first, so kill moments fall in replaying and learning rather than preparation
    subprocess.run(
        [sys.executable, "-m", "simulator.cli", "prepare", "tiny", "--data-dir", common[1], "--no-progress"],
        check=True,
        capture_output=True,
    )
    # kill points: after period p closes, plus a random delay (consuming, retraining or
    # checkpointing the next one); p drawn without replacement from the 8 periods
    points = sorted(rng.choice(7, size=KILLS, replace=False))
    log, resumes = [], 0
    for kill, period in enumerate(points):
        proc = _start(run_dir, common)
        lines = _lines(proc)
        if not _closed_period(lines, period, proc):
            pytest.fail(f"period {period} never closed before kill {kill + 1}\n" + "".join(lines)[-2000:])
        time.sleep(float(rng.uniform(0.0, 1.5)))
        proc.kill()  # SIGKILL: no cleanup, no flush
        proc.wait()
        resumes += any("resuming from" in line for line in lines)
        log.append(f"--- killed ({kill + 1}) after period {period}\n" + "".join(lines)[-600:])
    proc = _start(run_dir, common)
    out, _ = proc.communicate(timeout=300)
    log.append(out[-3000:])
    assert proc.returncode == 0, "\n".join(log)
    resumes += "resuming from" in out
    assert resumes == KILLS, "every start after a kill resumes from a checkpoint\n" + "\n".join(log)
    resumed = _deterministic(pd.read_csv(run_dir / "periods.csv"))
    pd.testing.assert_frame_equal(resumed, uninterrupted, check_exact=True, check_dtype=False)
