"""`rtsim monitor up|down|status`: a local Prometheus for every run (simulator.monitor_local)."""

from __future__ import annotations

import argparse
from urllib.parse import quote

from simulator.monitor_local import DEFAULT_PORT, QUERIES, LocalPrometheus, MonitorError
from simulator.service_cli import ServiceCommand

MONITOR_HELP = f"""\
Run a local Prometheus without Docker: Debian's `prometheus` package (installed by
scripts/install-services.sh) with the project's recording and alerting rules, scraping
every rtsim run on this machine. Each run announces its metrics endpoints in a
service-discovery folder ($RTSIM_TARGETS_DIR, default ~/.cache/rtsim/prometheus-targets),
so runs started before or after `up`, on any ports, are found without editing a config.
State (config, rules, data, log, pid) lives in ~/.cache/rtsim/prometheus-state/PORT/.
Grafana stays with the compose stack (docs/full-stack.md).

example:
  rtsim monitor up                    # prints http://127.0.0.1:{DEFAULT_PORT} and queries to open
  rtsim run --speed 7200              # any number of runs, on any ports
  rtsim monitor status
  rtsim monitor down
"""


def _start(server: LocalPrometheus, args: argparse.Namespace) -> list[str]:
    url = server.up(interval_s=args.scrape_interval, wait_s=args.wait)
    queries = [f"  {what}: {url}/graph?g0.expr={quote(query)}&g0.tab=0" for what, query in QUERIES.items()]
    return [url, *queries, f"  targets: {url}/targets   alerts: {url}/alerts"]


MONITOR = ServiceCommand[LocalPrometheus](
    name="monitor",
    server_name="Prometheus",
    help="run a local Prometheus for every run (no Docker)",
    description=MONITOR_HELP,
    default_port=DEFAULT_PORT,
    state_dir_default="~/.cache/rtsim/prometheus-state/PORT",
    error=MonitorError,
    server=LocalPrometheus,
    start=_start,
    up_description="Start Prometheus in the background and print its URL and the "
    "queries to open; does nothing if it is already running.",
    down_description="Stop Prometheus (SIGTERM, SIGKILL after 20 s). Its data is kept.",
    status_description="URL, pid, the run targets discovered and the state directory.",
)


def add_monitor_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `monitor up|down|status` on the top-level CLI's subparsers."""
    up = MONITOR.add_parser(subparsers)
    up.add_argument(
        "--scrape-interval",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="scrape and rule evaluation interval (default %(default)g; demo periods last seconds)",
    )
    up.add_argument(
        "--wait",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long to wait for Prometheus to become ready (default %(default)g)",
    )
