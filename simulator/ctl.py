"""`rtsim ctl`: control a running learner or producer over its HTTP API or the control topic.

Exit status: 0 when the server accepted the request (2xx), 1 when it refused it (its
message on stderr), 2 when it could not be reached or the request cannot go that way.
Loads nothing but the standard library unless --bus is given.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import sys
import textwrap
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlencode
from urllib.request import ProxyHandler, Request, build_opener

DEFAULT_URL = "http://127.0.0.1:8765"
DEFAULT_PRODUCER_URL = "http://127.0.0.1:8766"
LEARNER, PRODUCER = "learner", "producer"

CTL_HELP = """\
Control a running run: swap the serving strategy, enable or disable strategies, ask for
recommendations, pause, resume or re-pace the replay. Talks to the learner's control API
(--url, port 8765) and, for pause/resume/speed, to the producer's (--producer-url, port
8766; `rtsim run` serves both); with --bus kafka://HOST:PORT it publishes the command on
<prefix>.control instead. The addresses a process serves are in endpoints.json in its run
directory. Prints the JSON answer; exit 0 accepted, 1 refused, 2 unreachable.

examples:
  rtsim ctl status
  rtsim ctl serve fine_tune
  rtsim ctl enable spmf --from-serving
  rtsim ctl recommend 1234 --k 20
  rtsim ctl speed 7200
  rtsim ctl --bus kafka://127.0.0.1:9092 --run-id demo-20260101T000000-abc123 serve sml
"""


def _speed(text: str) -> float | str:
    if text == "max":
        return text
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give event-time seconds per wall second (> 0) or max")
    return int(value) if value.is_integer() else value


def _k(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number from 1 to 1000")
    return value


def _connection_options(suppress: bool) -> argparse.ArgumentParser:
    """Shared by `ctl` and each subcommand, so options go before or after the subcommand;
    on subcommands they default to "absent", leaving what `ctl` level parsed."""
    default = argparse.SUPPRESS if suppress else None
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--url",
        default=default,
        metavar="URL",
        help=f"learner control API (default $RTSIM_CONTROL_URL or {DEFAULT_URL})",
    )
    group.add_argument(
        "--producer-url",
        default=default,
        metavar="URL",
        help=f"producer control API, for pause/resume/speed (default $RTSIM_PRODUCER_URL or {DEFAULT_PRODUCER_URL})",
    )
    group.add_argument(
        "--token", default=default, help="bearer token of the control API (default $RTSIM_CONTROL_TOKEN)"
    )
    group.add_argument(
        "--timeout",
        type=float,
        default=argparse.SUPPRESS if suppress else 30.0,
        metavar="S",
        help="seconds to wait for an answer (default 30)",
    )
    group.add_argument(
        "--bus",
        default=default,
        metavar="kafka://HOST:PORT",
        help="publish the command on the control topic instead of HTTP (no answer: "
        "status, strategies and recommend need HTTP)",
    )
    group.add_argument(
        "--prefix", default=argparse.SUPPRESS if suppress else "rtsim", help="topic prefix with --bus (default rtsim)"
    )
    group.add_argument(
        "--run-id", default=default, help="with --bus: only the process of this run applies it (default: every run)"
    )
    return parser


def add_ctl_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `ctl` and its subcommands on the top-level CLI's subparsers."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = subparsers.add_parser(
        "ctl",
        help="runtime control: serve, enable, disable, recommend, pause, speed",
        description=CTL_HELP,
        formatter_class=formatter,
        parents=[_connection_options(suppress=False)],
    )
    commands = parser.add_subparsers(dest="ctl_command", metavar="COMMAND")
    commands.required = True
    common = [_connection_options(suppress=True)]

    def add(name: str, help_text: str, description: str, example: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=help_text,
            parents=common,
            formatter_class=formatter,
            description=textwrap.dedent(description),
            epilog=f"example:\n  {example}",
        )

    status = add(
        "status",
        "the learner's control state (the producer's with --producer)",
        "Serving strategy, enabled/disabled/pending strategies, swaps and the next period "
        "to close; with --producer, the replay's progress, speed and pause state.",
        "rtsim ctl status",
    )
    status.add_argument("--producer", action="store_true", help="ask the producer (--producer-url) instead")
    add(
        "strategies",
        "every strategy: enabled, serving, started, pending requests",
        "List every known strategy with whether it is enabled, serving, started, and its "
        "pending enable/disable requests.",
        "rtsim ctl strategies",
    )
    serve = add(
        "serve",
        "serve another strategy from now on",
        "Serve NAME from now on (it must be enabled and started). Takes effect at once.",
        "rtsim ctl serve fine_tune",
    )
    serve.add_argument("name", help="strategy name, e.g. sml, fine_tune")
    enable = add(
        "enable",
        "enable a strategy at the next period boundary",
        "Enable NAME when the current period closes. A strategy disabled earlier resumes "
        "its own state; --from-serving restarts it from the serving model instead.",
        "rtsim ctl enable spmf --from-serving",
    )
    enable.add_argument("name", help="strategy name")
    enable.add_argument(
        "--from-serving", action="store_true", help="start from the serving model, not the strategy's own state"
    )
    disable = add(
        "disable",
        "disable a strategy at the next period boundary",
        "Stop training NAME when the current period closes; its state is kept for a "
        "later enable. The serving strategy cannot be disabled: serve another first.",
        "rtsim ctl disable full_retrain",
    )
    disable.add_argument("name", help="strategy name")
    recommend = add(
        "recommend",
        "top-k items for a user from the serving strategy",
        "The serving strategy's top-k items for USER (raw id), excluding the user's "
        "known items; an unknown user gets the last period's most popular items.",
        "rtsim ctl recommend 1234 --k 20",
    )
    recommend.add_argument("user", help="raw user id, as in the log")
    recommend.add_argument("--k", type=_k, default=10, help="how many items (1..1000, default 10)")
    add("pause", "pause the replay producer", "Stop sending events until `rtsim ctl resume`.", "rtsim ctl pause")
    add("resume", "resume the replay producer", "Continue sending events, paced from now on.", "rtsim ctl resume")
    speed = add(
        "speed",
        "change the replay speed",
        "Replay at X event-time seconds per wall second (3600 = one hour of log per "
        "second), or as fast as possible with max.",
        "rtsim ctl speed 7200",
    )
    speed.add_argument("speed", type=_speed, metavar="X|max", help="event-time seconds per wall second, or max")
    parser.set_defaults(func=handle_ctl)
    return parser


def _request(args: argparse.Namespace) -> tuple[str, str, str, dict | None]:
    """(target, HTTP method, path, body) of the command."""
    name = args.ctl_command
    if name == "status":
        return (PRODUCER if args.producer else LEARNER), "GET", "/status", None
    if name == "strategies":
        return LEARNER, "GET", "/strategies", None
    if name == "serve":
        return LEARNER, "PUT", "/serving", {"strategy": args.name}
    if name == "enable":
        return (
            LEARNER,
            "POST",
            f"/strategies/{quote(args.name, safe='')}",
            ({"from_serving": True} if args.from_serving else None),
        )
    if name == "disable":
        return LEARNER, "DELETE", f"/strategies/{quote(args.name, safe='')}", None
    if name == "recommend":
        return LEARNER, "GET", "/recommend?" + urlencode({"user": args.user, "k": args.k}), None
    if name == "speed":
        return PRODUCER, "PUT", "/speed", {"speed": args.speed}
    return PRODUCER, "POST", f"/{name}", None  # pause, resume


def _topic_command(args: argparse.Namespace) -> tuple[str, dict]:
    """The control-topic form (command, args) of a state-changing subcommand."""
    name = args.ctl_command
    if name in ("serve", "disable"):
        return name, {"strategy": args.name}
    if name == "enable":
        return name, {"strategy": args.name, **({"from_serving": True} if args.from_serving else {})}
    if name == "speed":
        return name, {"speed": args.speed}
    return name, {}


def _fail(message: str, status: int) -> int:
    print(f"rtsim ctl: {message}", file=sys.stderr)
    return status


def _publish(args: argparse.Namespace, target: str) -> int:
    if args.ctl_command in ("status", "strategies", "recommend"):
        return _fail(
            f"`{args.ctl_command}` needs an answer, which the control topic cannot give: "
            "drop --bus and use the HTTP API (--url)",
            2,
        )
    if not args.bus.startswith("kafka://"):
        return _fail(f"--bus {args.bus}: give kafka://HOST:PORT (a memory bus lives inside its own process)", 2)
    from simulator.bus import BusError, open_bus
    from simulator.control_topic import publish_command

    command, command_args = _topic_command(args)
    try:
        bus = open_bus(args.bus)
        try:
            record = publish_command(bus, args.prefix, target, args.run_id, command, command_args)
        finally:
            bus.close()
    except BusError as err:
        return _fail(f"cannot publish to {args.bus}: {err}", 2)
    print(json.dumps({"published": record, "topic": f"{args.prefix}.control"}, indent=2))
    return 0


def handle_ctl(args: argparse.Namespace) -> int:
    target, method, path, body = _request(args)
    if args.bus:
        return _publish(args, target)
    if target == LEARNER:
        base, option = args.url or os.environ.get("RTSIM_CONTROL_URL") or DEFAULT_URL, "--url / $RTSIM_CONTROL_URL"
    else:
        base = args.producer_url or os.environ.get("RTSIM_PRODUCER_URL") or DEFAULT_PRODUCER_URL
        option = "--producer-url / $RTSIM_PRODUCER_URL"
    token = args.token or os.environ.get("RTSIM_CONTROL_TOKEN")
    url = base.rstrip("/") + path
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    # no proxy: the control API is local or on the operator's own network
    opener = build_opener(ProxyHandler({}))
    try:
        with opener.open(Request(url, data=data, method=method, headers=headers), timeout=args.timeout) as answer:
            payload = answer.read()
    except HTTPError as err:
        text = err.read().decode("utf-8", "replace")
        try:
            message = json.loads(text)["error"]
        except (ValueError, KeyError, TypeError):
            message = text.strip() or err.reason
        return _fail(f"error: {message} (HTTP {err.code})", 1)
    except (URLError, OSError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", err)
        return _fail(
            f"cannot reach the {target} control API at {base}: {reason}. Check that the {target} "
            f"(`rtsim run`, or `rtsim {'learn' if target == LEARNER else 'replay'}`) is running and "
            f"serves its control API there (endpoints.json in its run directory lists the address), "
            f"or point {option} at it",
            2,
        )
    try:
        print(json.dumps(json.loads(payload), indent=2))
    except ValueError:
        return _fail(f"{base} answered something that is not JSON: is it an rtsim control API?", 2)
    return 0
