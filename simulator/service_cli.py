"""What `rtsim kafka` and `rtsim monitor` share: `up|down|status` of a local server that
runs in the background and keeps its state in a directory (simulator.kafka_local,
simulator.monitor_local). Each command supplies its texts and what `up` does and prints."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Protocol, TypeVar

# LSB convention for "status" of a service that is not running.
EXIT_NOT_RUNNING = 3


class LocalServer(Protocol):
    @property
    def port(self) -> int: ...
    @property
    def state_dir(self) -> Path: ...
    def down(self) -> bool: ...
    def status(self) -> dict: ...


S = TypeVar("S", bound=LocalServer)


@dataclass(frozen=True)
class ServiceCommand(Generic[S]):
    name: str  # the subcommand: `rtsim NAME up`
    server_name: str  # in messages and help: "the broker", "Prometheus"
    help: str
    description: str
    default_port: int
    state_dir_default: str  # for --dir's help
    error: type[Exception]  # what the server raises for a failure the user can act on
    # the server class, called as server(state_dir, port=..., progress=...)
    server: Callable[..., S]
    # (server, args) -> lines for stdout once it runs; the first is its address
    start: Callable[[S, argparse.Namespace], list[str]]
    up_description: str
    down_description: str
    status_description: str

    def say(self, message: str) -> None:
        print(f"rtsim {self.name}: {message}", file=sys.stderr, flush=True)

    def handle(self, args: argparse.Namespace) -> int:
        server = self.server(args.dir, port=args.port, progress=self.say)
        try:
            if args.service_command == "up":
                lines = self.start(server, args)
                self.say(
                    f"running; state in {server.state_dir}; stop it with `rtsim {self.name} down"
                    f"{'' if args.dir else f' --port {server.port}'}`"
                )
                print("\n".join(lines))
                return 0
            if args.service_command == "down":
                if not server.down():
                    self.say(f"nothing to stop: {self.server_name} is not running from {server.state_dir}")
                return 0
            status = server.status()
            if args.json:
                print(json.dumps(status, indent=2))
            else:
                for key, value in status.items():
                    shown = ", ".join(value) if isinstance(value, list) else "-" if value is None else value
                    print(f"{key}: {shown}")
            return 0 if status["running"] else EXIT_NOT_RUNNING
        except self.error as exc:
            self.say(f"error: {exc}")
            return 1

    def add_parser(self, subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
        """Register `NAME up|down|status`; returns the `up` parser for the command's own options."""
        parser = subparsers.add_parser(
            self.name,
            help=self.help,
            description=self.description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        common = argparse.ArgumentParser(add_help=False)
        common.add_argument(
            "--port",
            type=int,
            default=self.default_port,
            help=f"port on 127.0.0.1 for {self.server_name} (default %(default)s; 0 picks a free one on `up`)",
        )
        common.add_argument(
            "--dir", default=None, metavar="DIR", help=f"state directory (default: {self.state_dir_default})"
        )
        commands = parser.add_subparsers(dest="service_command", metavar="{up,down,status}")
        commands.required = True
        up = commands.add_parser(
            "up",
            parents=[common],
            help=f"start {self.server_name} and wait until it is ready",
            description=self.up_description,
            epilog=f"example: rtsim {self.name} up --port {self.default_port}",
        )
        commands.add_parser(
            "down",
            parents=[common],
            help=f"stop {self.server_name}",
            description=self.down_description,
            epilog=f"example: rtsim {self.name} down --port {self.default_port}",
        )
        status = commands.add_parser(
            "status",
            parents=[common],
            help=f"show whether {self.server_name} runs (exit {EXIT_NOT_RUNNING} if not)",
            description=f"{self.status_description} Exit code 0 when {self.server_name} runs, "
            f"{EXIT_NOT_RUNNING} when it does not.",
            epilog=f"example: rtsim {self.name} status --json",
        )
        status.add_argument("--json", action="store_true", help="print the status as JSON")
        parser.set_defaults(func=self.handle)
        return up
