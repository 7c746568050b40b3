"""A local Prometheus for rtsim runs, without Docker (`rtsim monitor up|down|status`).

Debian's `prometheus` package (scripts/install-services.sh) runs with the project's rules
(copied from dashboards/prometheus/rules/) and scrapes every run that announces itself in
the service-discovery folder (simulator/targets.py). Like LocalKafka, everything `up`,
`down` and `status` share lives in a state directory: config, rules, data, log, pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from urllib.error import URLError
from urllib.request import ProxyHandler, build_opener

import yaml

from simulator.kafka_local import HOST, _process_state, _tail, cache_root, free_port, port_is_free
from simulator.targets import SIDES, targets_dir

DEFAULT_PORT = 9090
RULES = Path(__file__).resolve().parents[1] / "dashboards" / "prometheus" / "rules"
CONFIG, LOG, PID_FILE, META_FILE = "prometheus.yml", "prometheus.log", "prometheus.pid", "prometheus.json"
_HTTP = build_opener(ProxyHandler({}))  # loopback: never through a proxy from the environment

# what to look at first; printed by `up`
QUERIES = {
    "runs scraped": "rtsim_run_info",
    "consumer lag (events)": "run:rtsim_consumer_lag_events:produced_minus_ingested",
    "period wall time at the current speed": "rtsim_period_wall_seconds",
    "last retrain as a share of a period": "run_strategy:rtsim_retrain_last_duration_seconds:period_wall_ratio",
    "replay paused": "rtsim_replay_paused",
    "swaps so far": "rtsim_strategy_swaps_total",
    "alerts": "ALERTS",
}


class MonitorError(RuntimeError):
    """Prometheus could not be started or stopped; the message says what to do."""


def find_prometheus(binary: str | None = None) -> str:
    found = binary or shutil.which("prometheus")
    if found is None:
        raise MonitorError(
            "prometheus is not installed: scripts/install-services.sh installs Debian's "
            "package (apt-get install --no-install-recommends prometheus)"
        )
    return found


def scrape_config(folder: Path, interval_s: float, rule_glob: str) -> dict:
    """The compose stack's jobs and labels, its targets discovered from the runs' files."""
    return {
        "global": {
            "scrape_interval": f"{interval_s:g}s",
            "evaluation_interval": f"{interval_s:g}s",
            "external_labels": {"stack": "rtsim-local"},
        },
        "rule_files": [rule_glob],
        "scrape_configs": [
            {
                "job_name": job,
                "file_sd_configs": [{"files": [str(folder / f"*-{side}.json")], "refresh_interval": "5s"}],
            }
            for side, (job, _service) in SIDES.items()
        ],
    }


class LocalPrometheus:
    def __init__(
        self,
        state_dir: str | os.PathLike[str] | None = None,
        *,
        port: int = DEFAULT_PORT,
        binary: str | None = None,
        progress: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.port = port
        self._state_dir = Path(state_dir).expanduser().resolve() if state_dir else None
        self.binary = binary
        self.progress = progress

    @property
    def state_dir(self) -> Path:
        if self._state_dir is not None:
            return self._state_dir
        if self.port == 0:
            raise MonitorError("port 0 names no Prometheus: give the port that `up` reported, or --dir")
        return cache_root() / "prometheus-state" / str(self.port)

    def _meta(self) -> dict:
        try:
            return json.loads((self.state_dir / META_FILE).read_text())
        except (OSError, ValueError):
            return {}

    def _running_pid(self) -> int | None:
        try:
            pid = int((self.state_dir / PID_FILE).read_text().strip())
        except (OSError, ValueError):
            return None
        if _process_state(pid) in (None, "Z"):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        # ours, not a stranger that reused the pid: our config file is on its command line
        return pid if f"--config.file={self.state_dir / CONFIG}".encode() in cmdline else None

    def status(self) -> dict:
        meta, pid = self._meta(), self._running_pid()
        port = meta.get("port", self.port or None)
        folder = Path(meta.get("targets", targets_dir()))
        return {
            "running": pid is not None,
            "pid": pid,
            "url": f"http://{HOST}:{port}" if pid is not None else None,
            "port": port,
            "targets_dir": str(folder),
            "targets": sorted(p.name for p in folder.glob("*.json")) if folder.is_dir() else [],
            "state_dir": str(self.state_dir),
            "log": str(self.state_dir / LOG),
        }

    def up(self, interval_s: float = 5.0, wait_s: float = 30.0) -> str:
        """Start Prometheus (or find it running); its URL once it is ready."""
        if self.port != 0 or self._state_dir:
            if self._running_pid() is not None:
                return f"http://{HOST}:{self._meta()['port']}"
        binary = find_prometheus(self.binary)
        port = self.port or free_port()
        if not port_is_free(port):
            raise MonitorError(
                f"port {port} on {HOST} is already in use by another process; choose "
                "another (`rtsim monitor up --port N`, 0 picks a free one)"
            )
        self.port = port
        state, folder = self.state_dir, targets_dir()
        folder.mkdir(parents=True, exist_ok=True)
        rules = state / "rules"
        shutil.rmtree(rules, ignore_errors=True)
        shutil.copytree(RULES, rules)  # the rules of the checkout that started it, kept as they were
        (state / CONFIG).write_text(
            yaml.safe_dump(scrape_config(folder, interval_s, str(rules / "*.yml")), sort_keys=False)
        )
        (state / META_FILE).write_text(json.dumps({"port": port, "targets": str(folder)}) + "\n")
        self.progress(f"starting Prometheus on {HOST}:{port}, discovering runs in {folder}")
        with open(state / LOG, "wb") as log:
            proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={state / CONFIG}",
                    f"--storage.tsdb.path={state / 'data'}",
                    f"--web.listen-address={HOST}:{port}",
                    "--log.level=warn",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=state,
                start_new_session=True,
            )  # Ctrl-C in the terminal that ran `up` must not stop it
        (state / PID_FILE).write_text(f"{proc.pid}\n")
        url = f"http://{HOST}:{port}"
        deadline = time.monotonic() + wait_s
        while not self._ready(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                self.down()
                raise MonitorError(
                    f"Prometheus did not become ready on {url} (exit {proc.poll()}); last "
                    f"lines of {state / LOG}:\n{_tail(state / LOG)}"
                )
            time.sleep(0.2)
        return url

    @staticmethod
    def _ready(url: str) -> bool:
        try:
            with _HTTP.open(f"{url}/-/ready", timeout=2) as answer:
                return answer.status == 200
        except (URLError, OSError):
            return False

    def down(self, timeout_s: float = 20.0) -> bool:
        """SIGTERM (Prometheus flushes its head block), SIGKILL after timeout_s; whether one ran."""
        pid = self._running_pid()
        if pid is None:
            (self.state_dir / PID_FILE).unlink(missing_ok=True)
            return False
        self.progress(f"stopping Prometheus (pid {pid})")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            while _process_state(pid) not in (None, "Z") and time.monotonic() < deadline:
                time.sleep(0.1)
            if _process_state(pid) not in (None, "Z"):
                os.kill(pid, signal.SIGKILL)
        (self.state_dir / PID_FILE).unlink(missing_ok=True)
        return True
