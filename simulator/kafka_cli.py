"""`rtsim kafka up|down|status`: the local single-node broker from simulator.kafka_local."""

from __future__ import annotations

import argparse
import json
import sys

from simulator.kafka_local import DEFAULT_PORT, KAFKA_VERSION, KafkaLocalError, LocalKafka

# LSB convention for "status" of a service that is not running.
EXIT_NOT_RUNNING = 3

KAFKA_HELP = f"""\
Run a local single-node Apache Kafka {KAFKA_VERSION} broker (KRaft) without Docker.

Needs Java 17+, and Maven once: the broker jars are fetched from Maven Central into the
user cache directory ($XDG_CACHE_HOME or ~/.cache)/rtsim/kafka-{KAFKA_VERSION}/ on first use.
Each broker keeps its config, data, log (broker.log) and pid file in a state directory,
by default ~/.cache/rtsim/kafka-state/PORT/. It listens on 127.0.0.1 only.

example:
  rtsim kafka up --port 9092          # prints 127.0.0.1:9092 once the broker is ready
  rtsim run --bus kafka://127.0.0.1:9092
  rtsim kafka status
  rtsim kafka down
"""


def _stderr(message: str) -> None:
    print(f"rtsim kafka: {message}", file=sys.stderr, flush=True)


def _broker(args: argparse.Namespace) -> LocalKafka:
    return LocalKafka(args.dir, port=args.port, progress=_stderr)


def handle_kafka(args: argparse.Namespace) -> int:
    broker = _broker(args)
    try:
        if args.kafka_command == "up":
            bootstrap = broker.up(wait_s=args.wait)
            _stderr(
                f"running; state in {broker.state_dir}; stop it with `rtsim kafka down"
                f"{'' if args.dir else f' --port {broker.port}'}`"
            )
            print(bootstrap)
            return 0
        if args.kafka_command == "down":
            if not broker.down():
                _stderr(f"no broker running from {broker.state_dir}")
            return 0
        status = broker.status()
        if args.json:
            print(json.dumps(status, indent=2))
        else:
            for key, value in status.items():
                print(f"{key}: {'-' if value is None else value}")
        return 0 if status["running"] else EXIT_NOT_RUNNING
    except KafkaLocalError as exc:
        _stderr(f"error: {exc}")
        return 1


def add_kafka_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Register `kafka up|down|status` on the top-level CLI's subparsers."""
    parser = subparsers.add_parser(
        "kafka",
        help="run a local single-node Kafka broker (no Docker)",
        description=KAFKA_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help="broker port on 127.0.0.1 (default %(default)s; 0 picks a free one on `up`)",
    )
    common.add_argument(
        "--dir",
        default=None,
        metavar="DIR",
        help="state directory (default: ~/.cache/rtsim/kafka-state/PORT)",
    )
    commands = parser.add_subparsers(dest="kafka_command", metavar="{up,down,status}")
    commands.required = True
    up = commands.add_parser(
        "up",
        parents=[common],
        help="start the broker and wait until it is ready",
        description="Start the broker in the background and print its bootstrap address "
        "once it answers admin requests; does nothing if it is already running.",
        epilog="example: rtsim kafka up --port 9092",
    )
    up.add_argument(
        "--wait",
        type=float,
        default=90.0,
        metavar="SECONDS",
        help="how long to wait for the broker to become ready (default %(default)g)",
    )
    commands.add_parser(
        "down",
        parents=[common],
        help="stop the broker",
        description="Stop the broker cleanly (SIGTERM, SIGKILL after 30 s). Its data is kept.",
        epilog="example: rtsim kafka down --port 9092",
    )
    status = commands.add_parser(
        "status",
        parents=[common],
        help="show whether the broker runs (exit 3 if not)",
        description="Show pid, bootstrap address, version and state directory. Exit code 0 "
        "when the broker runs, 3 when it does not.",
        epilog="example: rtsim kafka status --json",
    )
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    parser.set_defaults(func=handle_kafka)
    return parser
