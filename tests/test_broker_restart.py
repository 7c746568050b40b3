"""The broker goes away mid-run and comes back on the same port: the run rides it out.

Its own broker (its own state directory and port), so stopping it leaves the session's
broker to the other tests. Nothing may be lost: every online period's n_interactions equals
the prepared log's count for that period.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simulator.kafka_local import HOST, KafkaLocalError, LocalKafka, free_port
from tests.ci import unavailable

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

AWAY_S = 4.0


def _lines(proc: subprocess.Popen) -> list[str]:
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()
    return lines


def _closed_periods(lines: list[str]) -> int:
    return sum(line.startswith("period ") for line in list(lines))


def test_a_run_rides_out_a_broker_restart_on_the_same_port(tmp_path: Path) -> None:
    from replay_data.prepared import prepare
    from simulator.config import resolve

    data_dir = tmp_path / "prepared"
    cfg = resolve("tiny")
    log, _ = prepare(cfg.data, data_dir, progress=False)
    expected = np.diff(log.period_bounds())

    port = free_port()
    broker = LocalKafka(tmp_path / "kafka", port=port, die_with_parent=True)
    try:
        broker.up(wait_s=120)
    except KafkaLocalError as exc:
        unavailable(f"the local Kafka broker could not start: {exc}")
    proc = None
    try:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "simulator.cli",
                "run",
                "--preset",
                "tiny",
                "--bus",
                f"kafka://{HOST}:{port}",
                "--speed",
                "20000",
                "--runs-dir",
                str(tmp_path / "runs"),
                "--run-id",
                "restarted",
                "--data-dir",
                str(data_dir),
                "--no-progress",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines = _lines(proc)
        deadline = time.monotonic() + 180
        while _closed_periods(lines) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _closed_periods(lines) >= 2 and proc.poll() is None, (
            "two periods should close while the run goes on\n" + "".join(lines)[-3000:]
        )
        closed_before = _closed_periods(lines)
        assert broker.down()
        time.sleep(AWAY_S)
        broker.up(wait_s=120)
        assert broker.port == port
        alive_after_restart = proc.poll() is None
        proc.wait(timeout=300)
        out = "".join(lines)
        assert proc.returncode == 0, out[-4000:]
        assert "Traceback" not in out and "rtsim: error" not in out, out[-4000:]
        # The outage fell inside the run: periods closed after the broker came back. Calls
        # that fail meanwhile are retried with a warning line; kafka-python reconnects itself.
        assert alive_after_restart and _closed_periods(lines) > closed_before, out[-4000:]
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        broker.down()

    periods = pd.read_csv(tmp_path / "runs" / "restarted" / "periods.csv")
    one = periods[periods["strategy"] == periods["strategy"].iloc[0]]
    online = one["period"].to_numpy()
    assert list(online) == list(range(cfg.data.phases.pretrain, len(expected))), out[-2000:]
    assert one["n_interactions"].tolist() == expected[online].tolist(), out[-4000:]
