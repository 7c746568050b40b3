"""`rtsim monitor up|down|status`: a local Prometheus for every run (simulator.monitor_local)."""

from __future__ import annotations

import argparse
import json
import sys
from urllib.parse import quote

from simulator.kafka_cli import EXIT_NOT_RUNNING
from simulator.monitor_local import DEFAULT_PORT, QUERIES, LocalPrometheus, MonitorError

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


def _stderr(message: str) -> None:
    print(f"rtsim monitor: {message}", file=sys.stderr, flush=True)


def handle_monitor(args: argparse.Namespace) -> int:
    server = LocalPrometheus(args.dir, port=args.port, progress=_stderr)
    try:
        if args.monitor_command == "up":
            url = server.up(interval_s=args.scrape_interval, wait_s=args.wait)
            _stderr(
                f"running; state in {server.state_dir}; stop it with `rtsim monitor down"
                f"{'' if args.dir else f' --port {server.port}'}`"
            )
            print(url)
            for what, query in QUERIES.items():
                print(f"  {what}: {url}/graph?g0.expr={quote(query)}&g0.tab=0")
            print(f"  targets: {url}/targets   alerts: {url}/alerts")
            return 0
        if args.monitor_command == "down":
            if not server.down():
                _stderr(f"no Prometheus running from {server.state_dir}")
            return 0
        status = server.status()
        if args.json:
            print(json.dumps(status, indent=2))
        else:
            for key, value in status.items():
                print(f"{key}: {', '.join(value) if isinstance(value, list) else '-' if value is None else value}")
        return 0 if status["running"] else EXIT_NOT_RUNNING
    except MonitorError as exc:
        _stderr(f"error: {exc}")
        return 1


def add_monitor_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "monitor",
        help="run a local Prometheus for every run (no Docker)",
        description=MONITOR_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help="Prometheus port on 127.0.0.1 (default %(default)s; 0 picks a free one on `up`)",
    )
    common.add_argument(
        "--dir", default=None, metavar="DIR", help="state directory (default: ~/.cache/rtsim/prometheus-state/PORT)"
    )
    commands = parser.add_subparsers(dest="monitor_command", metavar="{up,down,status}")
    commands.required = True
    up = commands.add_parser(
        "up",
        parents=[common],
        help="start Prometheus and wait until it is ready",
        description="Start Prometheus in the background and print its URL and the "
        "queries to open; does nothing if it is already running.",
        epilog="example: rtsim monitor up --scrape-interval 1",
    )
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
    commands.add_parser(
        "down",
        parents=[common],
        help="stop Prometheus",
        description="Stop Prometheus (SIGTERM, SIGKILL after 20 s). Its data is kept.",
    )
    status = commands.add_parser(
        "status",
        parents=[common],
        help="show whether it runs (exit 3 if not)",
        description="URL, pid, the run targets discovered and the state directory.",
    )
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    parser.set_defaults(func=handle_monitor)
    return parser
