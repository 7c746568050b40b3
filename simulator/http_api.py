"""The control HTTP API: a small JSON server in a daemon thread (stdlib only).

One server per process: the learner's routes (`learner_routes`) or the producer's
(`producer_routes`), both mapped onto the command objects of simulator.control, so HTTP
and the control topic accept and refuse exactly the same requests.

Safety: it binds 127.0.0.1 unless told otherwise; an address outside the loopback range
(127.0.0.0/8, ::1, localhost) needs a bearer token. Bodies are capped; every error is a
JSON {"error": ...} and changes nothing. The listen backlog holds a burst of BACKLOG
connections, so a crowd of clients waits instead of being reset.
"""

from __future__ import annotations

import errno
import hmac
import ipaddress
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from learner.engine import ControlError
from simulator.control import RequestError, http_status
from simulator.control_topic import Commands

log = logging.getLogger("rtsim.control.http")

TOKEN_ENV = "RTSIM_CONTROL_TOKEN"
MAX_BODY_BYTES = 64 * 1024
# An unread body (refused request) is discarded up to this much before closing; a client
# sending more gets a connection reset instead of the answer.
_DRAIN_BYTES = 1024 * 1024
BACKLOG = 1024  # pending connections; with the stdlib's 5, clients of a burst were reset or timed out


class ApiConfigError(ValueError):
    """The server cannot start as configured (message says what to change)."""


class ControlPortInUse(OSError):
    """The control port is taken; the message names it and the option to change."""


@dataclass(frozen=True)
class Request:
    params: dict[str, str]  # from the path pattern, e.g. {"name": ...}
    query: dict[str, str]
    body: dict | None  # None: no body sent


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # segments; "{name}" matches one segment
    handler: Callable[[Request], dict]
    status: int = 200  # of a successful answer
    segments: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "segments", _segments(self.path))

    def match(self, segments: tuple[str, ...]) -> dict[str, str] | None:
        if len(segments) != len(self.segments):
            return None
        params = {}
        for pattern, segment in zip(self.segments, segments):
            if pattern.startswith("{"):
                params[pattern[1:-1]] = segment
            elif pattern != segment:
                return None
        return params


def _segments(path: str) -> tuple[str, ...]:
    return tuple(unquote(part) for part in path.strip("/").split("/") if part)


def _args(request: Request, **fixed: object) -> dict:
    """A command's arguments: from the path, the query and the body, none given twice."""
    args: dict = {}
    for source in (fixed, request.query, request.body or {}):
        for key, value in source.items():
            if key in args:
                raise RequestError(f"{key!r} is given twice (path, query or body): give it once")
            args[key] = value
    return args


def _command(commands: Commands, name: str) -> Callable[[Request], dict]:
    return lambda request: commands.apply(name, _args(request))


def _strategy_command(commands: Commands, name: str) -> Callable[[Request], dict]:
    return lambda request: commands.apply(name, _args(request, strategy=request.params["name"]))


def learner_routes(commands: Commands) -> list[Route]:
    def recommend(request: Request) -> dict:
        args = _args(request)
        if "k" in args:
            try:
                args["k"] = int(args["k"])
            except ValueError:
                pass  # the command says what k may be
        return commands.apply("recommend", args)

    return [
        Route("GET", "/status", _command(commands, "status")),
        Route("GET", "/strategies", _command(commands, "strategies")),
        Route("PUT", "/serving", _command(commands, "serve")),
        # enabling and disabling are queued until the period closes: accepted, not done
        Route("POST", "/strategies/{name}", _strategy_command(commands, "enable"), status=202),
        Route("DELETE", "/strategies/{name}", _strategy_command(commands, "disable"), status=202),
        Route("GET", "/recommend", recommend),
    ]


def producer_routes(commands: Commands) -> list[Route]:
    return [
        Route("GET", "/status", _command(commands, "status")),
        Route("POST", "/pause", _command(commands, "pause")),
        Route("POST", "/resume", _command(commands, "resume")),
        Route("PUT", "/speed", _command(commands, "speed")),
    ]


def load_token(token_file: str | None = None) -> str | None:
    """The bearer token: from `token_file` when given, else $RTSIM_CONTROL_TOKEN; None if unset."""
    if token_file:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as err:
            raise ApiConfigError(f"cannot read the control token file {token_file}: {err.strerror}") from None
        if not token:
            raise ApiConfigError(f"the control token file {token_file} is empty")
        return token
    return os.environ.get(TOKEN_ENV, "").strip() or None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name or "" (every interface)
        return False


class ApiServer:
    """A running server; `close()` stops it and frees the port."""

    def __init__(self, server: ThreadingHTTPServer, host: str) -> None:
        self._server = server
        self.host = host
        self.port: int = server.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}"
        self._closed = False
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name=f"rtsim-control-http-{self.port}",
            daemon=True,
        )
        self._thread.start()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> ApiServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_api(
    routes: list[Route],
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    *,
    option: str = "--control-port",
) -> ApiServer:
    """Serve `routes` at http://host:port from a daemon thread (port 0: a free port).

    Any address but loopback needs `token`; with a token set, every request must carry
    `Authorization: Bearer <token>`. `option` is the setting named when the port is taken.
    """
    check_bind(host, token)
    handler = type("Handler", (_Handler,), {"routes": tuple(routes), "token": token or None})
    server_class = _Server6 if ":" in host else _Server
    try:
        server = server_class((host, port), handler)
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise ControlPortInUse(
                errno.EADDRINUSE,
                f"control port {port} on {host} is already in use: choose another with {option} (0 picks a free port)",
            ) from err
        raise
    return ApiServer(server, host)


def check_bind(host: str, token: str | None) -> None:
    """Refuse a control API outside loopback without a token; callers check before anything listens."""
    if not token and not _is_loopback(host):
        raise ApiConfigError(
            f"the control API would listen on {host or 'every interface'} without a token: anyone who "
            f"reaches it could swap strategies or stop the replay. Set ${TOKEN_ENV} (or a token file), "
            "or bind a loopback address (127.0.0.0/8, ::1, localhost)"
        )


class _Server(ThreadingHTTPServer):
    request_queue_size = BACKLOG


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    routes: tuple[Route, ...] = ()
    token: str | None = None
    server_version = "rtsim-control"
    sys_version = ""
    timeout = 30  # seconds a client may idle mid-request before its thread gives up
    _unread = 0  # bytes of the request body not read yet

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def _handle(self) -> None:
        try:
            self._unread = self._content_length()
            status, answer, headers = self._answer()
        except (RequestError, ControlError) as err:
            status, answer, headers = http_status(err), {"error": str(err)}, {}
        except Exception as err:
            log.exception("control request %s %s failed", self.command, self.path)
            status, answer, headers = 500, {"error": f"internal error: {type(err).__name__}: {err}"}, {}
        self._send(status, answer, headers)

    def _answer(self) -> tuple[int, dict, dict[str, str]]:
        if not self._authorized():
            return (
                401,
                {
                    "error": "missing or wrong bearer token: send 'Authorization: Bearer <token>' "
                    f"(rtsim ctl --token, or ${TOKEN_ENV})"
                },
                {"WWW-Authenticate": 'Bearer realm="rtsim"'},
            )
        url = urlsplit(self.path)
        segments = _segments(url.path)
        matches = [(route, params) for route in self.routes if (params := route.match(segments)) is not None]
        if not matches:
            paths = sorted(f"{route.method} {route.path}" for route in self.routes)
            raise RequestError(f"no such path {url.path!r}; this API serves: {', '.join(paths)}", status=404)
        allowed = ", ".join(route.method for route, _ in matches)
        found = [(route, params) for route, params in matches if route.method == self.command]
        if not found:
            return 405, {"error": f"{self.command} is not allowed on {url.path}; use {allowed}"}, {"Allow": allowed}
        route, params = found[0]
        if self._unread > MAX_BODY_BYTES:
            raise RequestError(f"the body is {self._unread} bytes; at most {MAX_BODY_BYTES} are accepted", status=413)
        request = Request(params, self._query(url.query), self._read_json())
        return route.status, route.handler(request), {}

    def _authorized(self) -> bool:
        if self.token is None:
            return True
        scheme, _, credentials = self.headers.get("Authorization", "").partition(" ")
        # compare_digest: the time taken says nothing about how much of the token matched
        return scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), self.token.encode())

    def _content_length(self) -> int:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise RequestError("send the body with a Content-Length, not chunked", status=411)
        text = self.headers.get("Content-Length", "0")
        try:
            length = int(text)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            raise RequestError(f"bad Content-Length {text!r:.40}")
        return length

    @staticmethod
    def _query(text: str) -> dict[str, str]:
        query: dict[str, str] = {}
        for key, value in parse_qsl(text, keep_blank_values=True):
            if key in query:
                raise RequestError(f"query parameter {key!r} is given more than once")
            query[key] = value
        return query

    def _read_json(self) -> dict | None:
        if self._unread == 0:
            return None
        raw = self.rfile.read(self._unread)
        self._unread = 0
        try:
            body = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as err:
            raise RequestError(f"the body is not UTF-8: {err}") from None
        except ValueError as err:
            raise RequestError(f"malformed JSON body: {err}") from None
        if not isinstance(body, dict):
            raise RequestError(f"the body must be a JSON object, got {type(body).__name__}")
        return body

    def _send(self, status: int, answer: dict, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        if self._unread:
            # closing with unread input would reset the connection before the client reads
            # the answer: discard what was sent (bounded), without holding it
            self.wfile.flush()
            self.close_connection = True
            self._discard(min(self._unread, _DRAIN_BYTES))

    def _discard(self, length: int) -> None:
        try:
            while length > 0:
                chunk = self.rfile.read(min(length, 64 * 1024))
                if not chunk:
                    break
                length -= len(chunk)
        except OSError:
            pass  # the client gave up: nothing left to protect
        self._unread = 0

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors raised by http.server itself (bad request line, unknown method) as JSON too."""
        self.close_connection = True
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "error"
        self._send(code, {"error": message or phrase})

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)
