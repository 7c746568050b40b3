"""`rtsim kafka up|down|status`: the local single-node broker from simulator.kafka_local."""

from __future__ import annotations

import argparse

from simulator.kafka_local import DEFAULT_PORT, KAFKA_VERSION, KafkaLocalError, LocalKafka
from simulator.service_cli import ServiceCommand

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


def _start(broker: LocalKafka, args: argparse.Namespace) -> list[str]:
    return [broker.up(wait_s=args.wait)]  # the bootstrap address


KAFKA = ServiceCommand[LocalKafka](
    name="kafka",
    server_name="the broker",
    help="run a local single-node Kafka broker (no Docker)",
    description=KAFKA_HELP,
    default_port=DEFAULT_PORT,
    state_dir_default="~/.cache/rtsim/kafka-state/PORT",
    error=KafkaLocalError,
    server=LocalKafka,
    start=_start,
    up_description="Start the broker in the background and print its bootstrap address "
    "once it answers admin requests; does nothing if it is already running.",
    down_description="Stop the broker cleanly (SIGTERM, SIGKILL after 30 s). Its data is kept.",
    status_description="Show pid, bootstrap address, version and state directory.",
)


def add_kafka_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `kafka up|down|status` on the top-level CLI's subparsers."""
    up = KAFKA.add_parser(subparsers)
    up.add_argument(
        "--wait",
        type=float,
        default=90.0,
        metavar="SECONDS",
        help="how long to wait for the broker to become ready (default %(default)g)",
    )
