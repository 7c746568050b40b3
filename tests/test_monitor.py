"""`rtsim monitor up`'s Prometheus watching a paced run through a pause, a swap, a speed
change, a backlog, kill -9 and resume, and speed max: the numbers a user reads tell the truth.

The run (tiny, in-process bus) finds its way into Prometheus by itself: it announces its
metrics endpoints in the service-discovery folder, and the resumed process, on new free
ports, rewrites them. full_retrain is made slow (hundreds of epochs, seconds per retrain)
while periods last about 2 s of wall time, so the learner falls behind: a real backlog.
Without `prometheus` the test skips, except in CI (CI=true), where it fails.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.ci import unavailable
from tests.test_prometheus import PROCESS_ENV, Prometheus, ctl, read_endpoints, stop_process, tail, wait_for

pytestmark = [pytest.mark.prometheus, pytest.mark.slow, pytest.mark.timeout(400)]

SPEED = 14400  # tiny's 7 to 10 hour periods last 1.75 to 2.5 s of wall time
FASTER = 2 * SPEED
RUN_ID = "mon"
SLOW = "full_retrain"  # seconds per retrain: longer than a period, so the learner falls behind
STRATEGIES = [
    "--set",
    f"learner.strategies.enabled=[fine_tune,{SLOW}]",
    "--set",
    "learner.strategies.serving=fine_tune",
    "--set",
    f"learner.strategies.{SLOW}.train.epochs=1250",  # seconds on the compiled MF loop (250 were on torch)
]


def cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "simulator.cli", *args], capture_output=True, text=True, timeout=90, env=env
    )


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict:
    if shutil.which("prometheus") is None:
        unavailable("prometheus is not installed: scripts/install-services.sh (make services)")
    return {**PROCESS_ENV, "RTSIM_TARGETS_DIR": str(tmp_path_factory.mktemp("targets"))}


@pytest.fixture(scope="module")
def monitor(tmp_path_factory, env):
    state = tmp_path_factory.mktemp("monitor")
    up = cli("monitor", "up", "--port", "0", "--dir", str(state), "--scrape-interval", "1", env=env)
    assert up.returncode == 0, up.stdout + up.stderr
    url = up.stdout.splitlines()[0]
    assert "consumer lag (events)" in up.stdout  # the queries to open
    server = Prometheus(url, state / "prometheus.log")
    status = cli("monitor", "status", "--dir", str(state), "--json", env=env)
    assert status.returncode == 0 and json.loads(status.stdout)["url"] == url
    yield server
    assert cli("monitor", "down", "--dir", str(state), env=env).returncode == 0
    assert cli("monitor", "status", "--dir", str(state), env=env).returncode == 3  # not running


class Run:
    def __init__(self, root: Path, env: dict) -> None:
        self.root, self.env = root, env
        self.path = root / "runs" / RUN_ID
        self.proc: subprocess.Popen | None = None
        self.log = root / "run-0.log"

    def start(self, *args: str) -> dict[str, dict[str, str]]:
        """Start (or resume) the run; its endpoints once it serves them."""
        (self.path / "endpoints.json").unlink(missing_ok=True)
        self.log = self.root / f"run-{len(list(self.root.glob('run-*.log')))}.log"
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "simulator.cli",
                    "run",
                    *args,
                    "--keep-serving",
                    "--data-dir",
                    str(self.root / "prepared"),
                    "--no-progress",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        return wait_for(
            "endpoints.json",
            lambda: self._alive() and read_endpoints(self.path / "endpoints.json"),
            timeout_s=120,
            explain=self.explain,
        )

    def _alive(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"rtsim run exited: {self.explain()}", pytrace=False)
        return True

    def closed(self) -> int:
        """The newest period in periods.csv, -1 before the first online one."""
        try:
            lines = (self.path / "periods.csv").read_text().splitlines()[1:]
        except OSError:
            return -1
        return max((int(line.split(",")[0]) for line in lines if line), default=-1)

    def explain(self) -> str:
        return f"last lines of {self.log.name}:\n{tail(self.log)}"


def instance(endpoints: dict, side: str) -> str:
    return urlsplit(endpoints[side]["metrics"]).netloc


def test_a_paced_run_with_pause_speed_change_backlog_and_resume(tmp_path, env, monitor):
    server, run = monitor, Run(tmp_path, env)
    first = run.start(
        "--preset", "tiny", "--speed", str(SPEED), "--runs-dir", str(tmp_path / "runs"), "--run-id", RUN_ID, *STRATEGIES
    )
    producer, learner = first["producer"]["control"], first["learner"]["control"]

    # 1. paused: discovered without any config, the pause shows, and no alert blames the learner
    ctl("--producer-url", producer, "pause")
    on_first = f'run_id="{RUN_ID}", instance="{instance(first, "producer")}"'
    wait_for(
        "the pause in Prometheus (the run's targets discovered)",
        lambda: server.value(f"rtsim_replay_paused{{{on_first}}}") == 1,
        timeout_s=30,
        explain=lambda: json.dumps(server.get("/api/v1/targets").get("data"))[:2000],
    )
    wait_for(
        "run info",
        lambda: server.series(f'rtsim_run_info{{run_id="{RUN_ID}", preset="tiny", bus="memory"}}'),
        timeout_s=10,
    )
    time.sleep(3)
    ctl("--producer-url", producer, "resume")
    wait_for(
        "the pause to end in Prometheus", lambda: server.value(f"rtsim_replay_paused{{{on_first}}}") == 0, timeout_s=10
    )

    # 2. a swap once the first online period closed, then a speed change the period follows
    wait_for("the first online period", lambda: run.closed() >= 2, timeout_s=120, explain=run.explain)
    assert ctl("--url", learner, "serve", SLOW)["swapped"] is True
    ctl("--producer-url", producer, "speed", str(FASTER))

    def wall_at_faster() -> float | None:
        speed = server.value(f"rtsim_replay_speed{{{on_first}}}")
        wall = server.value(f"rtsim_period_wall_seconds{{{on_first}}}")
        return wall if speed == FASTER and wall is not None else None

    wall = wait_for("the period wall time at the new speed", wall_at_faster, timeout_s=10)
    hours = wall * FASTER / 3600  # tiny's periods are whole hours of event time
    assert 5 <= hours <= 11 and hours == pytest.approx(round(hours)), wall

    # 3. kill -9 after a checkpoint past the swap; the metrics said swaps 1 before
    wait_for(
        "a checkpoint after the swap",
        lambda: run.closed() >= 4 and (run.path / "checkpoints" / "latest").exists(),
        timeout_s=120,
        explain=run.explain,
    )
    wait_for(
        "the swap in Prometheus",
        lambda: server.value(f'rtsim_strategy_swaps_total{{run_id="{RUN_ID}"}}') == 1,
        timeout_s=10,
    )
    run.proc.send_signal(signal.SIGKILL)
    run.proc.wait(10)
    checkpoints = sorted(p.name for p in (run.path / "checkpoints").iterdir())

    # 4. resumed on new ports: Prometheus finds it, and "so far in this run" continues
    second = run.start("--resume", str(run.path))
    assert second["learner"]["metrics"] != first["learner"]["metrics"]
    on_second = f'run_id="{RUN_ID}", instance="{instance(second, "learner")}"'
    swaps = wait_for(
        "the resumed learner's swap count",
        lambda: server.series(f"rtsim_strategy_swaps_total{{{on_second}}}"),
        timeout_s=30,
        explain=lambda: json.dumps(server.get("/api/v1/targets").get("data"))[:2000],
    )
    assert float(swaps[0]["value"][1]) == 1, f"the swap count restarted after the resume (checkpoints {checkpoints})"
    assert (server.value(f"rtsim_period_index{{{on_second}}}") or 0) >= 3
    assert (server.value(f'rtsim_retrain_duration_seconds_count{{{on_second}, strategy="fine_tune"}}') or 0) >= 2
    assert server.series(f'rtsim_next_period_ndcg{{{on_second}, k="20"}}'), "NDCG absent until the next close"

    # 5. speed max: no speed and no period wall time (rather than 0x and a 0 s period)
    on_second_producer = f'run_id="{RUN_ID}", instance="{instance(second, "producer")}"'
    wait_for(
        "the resumed producer scraped",
        lambda: server.series(f"rtsim_replay_paused{{{on_second_producer}}}"),
        timeout_s=30,
    )
    ctl("--producer-url", second["producer"]["control"], "speed", "max")
    wait_for(
        "speed and period wall time absent at speed max",
        lambda: (
            not server.series(f"rtsim_replay_speed{{{on_second_producer}}}")
            and not server.series(f"rtsim_period_wall_seconds{{{on_second_producer}}}")
        ),
        timeout_s=10,
    )
    wait_for("the run to finish", lambda: "still serving" in run.log.read_text(), timeout_s=180, explain=run.explain)
    time.sleep(3)  # a few more scrapes and rule evaluations

    # 6. over the whole run: a backlog showed as lag, and no alert fired falsely
    over = f"{int(time.time() - server.started) + 5}s"
    lag = server.value(
        f'max_over_time(run:rtsim_consumer_lag_events:produced_minus_ingested{{run_id="{RUN_ID}"}}[{over}])'
    )
    assert lag is not None and lag > 0, "the consumer lag never rose above 0 during the backlog"
    firing = server.series(f'max_over_time(ALERTS{{alertstate="firing"}}[{over}])')
    unexpected = [
        alert["metric"]
        for alert in firing
        # the slow strategy does retrain slower than a period: that one is true
        if not (alert["metric"]["alertname"] == "RetrainSlowerThanPeriod" and alert["metric"]["strategy"] == SLOW)
    ]
    assert not unexpected, f"alerts fired: {unexpected}"
    assert stop_process(run.proc, signal.SIGINT, 30) == 0, run.explain()
    assert not list(Path(env["RTSIM_TARGETS_DIR"]).glob(f"{RUN_ID}-*.json")), "targets left after a clean exit"
