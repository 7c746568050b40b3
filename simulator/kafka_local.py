"""A local single-node Apache Kafka 4.x broker (KRaft, broker+controller) without Docker.

The broker jars come from Maven Central through the machine's `mvn`, once, into the user's
cache directory. Each broker lives in a state directory holding its config, data, log and
pid file, so `up`, `down` and `status` can run from different processes.

    kafka = LocalKafka(port=9092)
    bootstrap = kafka.up()      # "127.0.0.1:9092" once the broker answers admin calls
    kafka.status()              # {"running": True, "pid": ..., "bootstrap": ..., ...}
    kafka.down()
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

# One pinned broker version. log4j must match the one Kafka itself builds with (2.24.3 for
# 4.1.x), because the SLF4J binding is added by hand (see resources/kafka-pom.xml).
KAFKA_VERSION = "4.1.1"
LOG4J_VERSION = "2.24.3"
MIN_JAVA_MAJOR = 17
HOST = "127.0.0.1"
DEFAULT_PORT = 9092

# Upstream's kafka-server-start.sh options, with a smaller heap for 2-core machines, and
# the C1 JIT only: measured here, it starts the broker about a third faster and halves its
# CPU time under a kafka-python producer, whose own speed is the limit either way.
BROKER_JVM_OPTS = (
    "-Xms256m",
    "-Xmx1g",
    "-XX:TieredStopAtLevel=1",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:MaxInlineLevel=15",
    "-Djava.awt.headless=true",
)
STORAGE_TOOL_JVM_OPTS = ("-Xmx256m", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true")
# Package data (pyproject: simulator = ["resources/*"]); found by path so that it also
# works while simulator is a namespace package.
RESOURCES = Path(__file__).resolve().parent / "resources"
MAVEN_TIMEOUT_S = 900
LOG_TAIL_LINES = 40

SERVER_PROPERTIES = "server.properties"
LOG4J_PROPERTIES = "log4j2.properties"
BROKER_LOG = "broker.log"
PID_FILE = "broker.pid"
META_FILE = "broker.json"
JARS_MARKER = "jars.complete"


class KafkaLocalError(RuntimeError):
    """The local broker could not be fetched, started or stopped; the message says what to do."""


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    # Absolute: the broker runs with its state directory as working directory.
    return Path(base).expanduser().resolve() / "rtsim"


def default_state_dir(port: int) -> Path:
    return cache_root() / "kafka-state" / str(port)


def _render(template: str, **values: str | int) -> str:
    text = (RESOURCES / template).read_text("utf-8")
    for key, value in values.items():
        text = text.replace(f"@{key}@", str(value))
    leftover = re.search(r"@[A-Z_]+@", text)
    if leftover:
        raise AssertionError(f"template {template}: {leftover.group()} not filled in")
    return text


def _properties_value(value: str) -> str:
    # java.util.Properties treats a backslash as an escape.
    return value.replace("\\", "\\\\")


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text("utf-8", errors="replace")
    except OSError:
        return "(no log written)"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


# --- Java and Maven -------------------------------------------------------------------------


def find_java(java: str | None = None) -> str:
    """Resolve the java executable: an explicit path, then $JAVA_HOME/bin/java, then PATH."""
    if java is None:
        java_home = os.environ.get("JAVA_HOME")
        candidate = Path(java_home) / "bin" / "java" if java_home else None
        java = str(candidate) if candidate and candidate.is_file() else "java"
    found = shutil.which(java)
    if found is None:
        raise KafkaLocalError(
            f"Java {MIN_JAVA_MAJOR}+ is needed to run the local Kafka broker, but no java "
            f"executable was found ({java!r}, searched $JAVA_HOME and PATH). Install a Java "
            f"{MIN_JAVA_MAJOR} or newer runtime (Debian/Ubuntu: apt-get install "
            f"openjdk-{MIN_JAVA_MAJOR}-jre-headless) and put it on PATH or set JAVA_HOME."
        )
    return found


def java_major_version(java: str) -> int:
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KafkaLocalError(f"could not run {java} -version: {exc}") from exc
    # e.g. 'openjdk version "17.0.15" 2025-04-15' or, before Java 9, 'java version "1.8.0_292"'
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if out.returncode != 0 or match is None:
        raise KafkaLocalError(
            f"could not tell the Java version of {java} (exit {out.returncode}): "
            f"{(out.stderr or out.stdout).strip()[:500]}"
        )
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def check_java(java: str | None = None) -> str:
    """Return a usable java executable or raise KafkaLocalError saying how to get one."""
    path = find_java(java)
    major = java_major_version(path)
    if major < MIN_JAVA_MAJOR:
        raise KafkaLocalError(
            f"Kafka {KAFKA_VERSION} needs Java {MIN_JAVA_MAJOR} or newer, but {path} is "
            f"Java {major}. Install Java {MIN_JAVA_MAJOR}+ (Debian/Ubuntu: apt-get install "
            f"openjdk-{MIN_JAVA_MAJOR}-jre-headless) and put it first on PATH or set JAVA_HOME."
        )
    return path


def jars_dir(cache_dir: Path | None = None) -> Path:
    return (cache_dir or cache_root()) / f"kafka-{KAFKA_VERSION}" / "lib"


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    # A CLI `up` and a test session may both find a cold cache at the same moment.
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_jars(
    cache_dir: Path | None = None,
    mvn: str | None = None,
    progress: Callable[[str], None] = lambda message: None,
) -> Path:
    """Fetch the broker jars once and return their directory.

    The marker file is written only after Maven succeeded, so an interrupted download is
    redone from scratch on the next call instead of starting a broker with missing jars.
    """
    lib = jars_dir(cache_dir)
    home = lib.parent
    marker = home / JARS_MARKER
    if marker.is_file():
        return lib
    with _locked(home / "jars.lock"):
        if marker.is_file():  # another process finished the download while we waited
            return lib
        mvn_path = shutil.which(mvn or "mvn")
        if mvn_path is None:
            raise KafkaLocalError(
                f"Maven (mvn) is needed once to download the Kafka {KAFKA_VERSION} jars into "
                f"{lib}, but it was not found on PATH. Install it (Debian/Ubuntu: apt-get "
                f"install maven) and run the command again."
            )
        if lib.exists():
            shutil.rmtree(lib)
        pom = home / "pom.xml"
        pom.write_text(
            _render("kafka-pom.xml", KAFKA_VERSION=KAFKA_VERSION, LOG4J_VERSION=LOG4J_VERSION),
            "utf-8",
        )
        maven_log = home / "maven.log"
        progress(f"fetching the Kafka {KAFKA_VERSION} jars with Maven into {lib} (once)")
        command = [
            mvn_path,
            "-B",
            "-q",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={lib}",
        ]
        with open(maven_log, "w") as log:
            try:
                result = subprocess.run(
                    command,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=home,
                    timeout=MAVEN_TIMEOUT_S,
                )
            except subprocess.TimeoutExpired as exc:
                raise KafkaLocalError(
                    f"Maven did not finish fetching the Kafka jars within {MAVEN_TIMEOUT_S} s; "
                    f"check access to Maven Central and retry. Log: {maven_log}"
                ) from exc
        jars = sorted(lib.glob("*.jar")) if lib.is_dir() else []
        if result.returncode != 0 or not any(j.name.startswith("kafka_2.13-") for j in jars):
            raise KafkaLocalError(
                f"Maven could not fetch the Kafka {KAFKA_VERSION} jars (exit "
                f"{result.returncode}); check access to Maven Central (or a mirror in "
                f"~/.m2/settings.xml) and retry. Last lines of {maven_log}:\n{_tail(maven_log)}"
            )
        marker.write_text(f"{len(jars)} jars\n", "utf-8")
    return lib


# --- ports and processes --------------------------------------------------------------------


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Like the JVM's listener: a socket lingering in TIME_WAIT does not block the port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0):
            return True
    except OSError:
        return False


def _process_state(pid: int) -> str | None:
    """'Z' for a zombie, another letter for a live process, None when /proc cannot tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _die_with_parent_hook() -> Callable[[], None] | None:
    """A preexec_fn that has the kernel SIGKILL the child when this process dies (Linux).

    A broker started for a test session must not outlive it, even when the test process is
    killed without running its teardown. The libc lookup happens here, in the parent: the
    forked child must not import or allocate while other threads may hold locks.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig = 1
    return lambda: prctl(pr_set_pdeathsig, signal.SIGKILL)


def _cluster_id() -> str:
    # Kafka's Uuid.toString(): unpadded base64url of 16 random bytes; Kafka never issues
    # one that starts with "-" because it would read as a command-line flag.
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


# --- the broker -----------------------------------------------------------------------------


class LocalKafka:
    """One local broker, identified by its state directory.

    state_dir defaults to <cache>/rtsim/kafka-state/<port>. `up` may run in one process and
    `down`/`status` in another: everything they share is in the state directory.
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str] | None = None,
        *,
        port: int = DEFAULT_PORT,
        java: str | None = None,
        mvn: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        die_with_parent: bool = False,
        progress: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.port = port
        self._state_dir = Path(state_dir).expanduser().resolve() if state_dir else None
        self.java = java
        self.mvn = mvn
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.die_with_parent = die_with_parent
        self.progress = progress
        # Kept when this process started the broker, so that `down` can reap it.
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def state_dir(self) -> Path:
        if self._state_dir is not None:
            return self._state_dir
        if self.port == 0:
            raise KafkaLocalError(
                "port 0 names no broker: give the port that `up` reported, or its state directory (--dir)"
            )
        return default_state_dir(self.port)

    # -- state files --

    def _read_pid(self) -> int | None:
        try:
            return int((self.state_dir / PID_FILE).read_text().strip())
        except (OSError, ValueError):
            return None

    def _read_meta(self) -> dict[str, object]:
        try:
            meta: dict[str, object] = json.loads((self.state_dir / META_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return meta

    def _is_ours(self, pid: int) -> bool:
        """Is pid alive and our broker, not a stranger that reused the number?"""
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # alive, but owned by another user: the cmdline check decides
        state = _process_state(pid)
        if state is None:  # no /proc (macOS): trust the pid file
            return True
        if state == "Z":
            return False
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        config = str(self.state_dir / SERVER_PROPERTIES).encode()
        return b"kafka.Kafka" in cmdline and config in cmdline

    def _running_pid(self) -> int | None:
        pid = self._read_pid()
        return pid if pid is not None and self._is_ours(pid) else None

    # -- public API --

    def status(self) -> dict[str, object]:
        """running, pid, bootstrap (None when stopped), port, version, state_dir, log."""
        meta = self._read_meta()
        pid = self._running_pid()
        port = meta.get("port", self.port or None)
        return {
            "running": pid is not None,
            "pid": pid,
            "bootstrap": f"{HOST}:{port}" if pid is not None else None,
            "port": port,
            "controller_port": meta.get("controller_port"),
            "version": meta.get("version", KAFKA_VERSION),
            "state_dir": str(self.state_dir),
            "log": str(self.state_dir / BROKER_LOG),
        }

    def up(self, port: int | None = None, controller_port: int | None = None, wait_s: float = 90.0) -> str:
        """Start the broker (or find it running) and return its bootstrap address.

        port overrides the one given to the constructor; 0 picks a free port, and so does
        controller_port=None. Returns once the broker answers an admin request.
        """
        if port is not None:
            self.port = port
        running = self._running_pid() if self.port != 0 or self._state_dir else None
        if running is not None:
            meta_port = self._read_meta().get("port")
            if self.port in (0, meta_port):
                return f"{HOST}:{meta_port}"
            raise KafkaLocalError(
                f"a broker from {self.state_dir} is already running on port {meta_port} "
                f"(pid {running}); run `rtsim kafka down` for it first to move it to port "
                f"{self.port}."
            )

        # Ports first: the cheapest check, and the likeliest mistake.
        port = self.port or free_port()
        if controller_port is None:
            controller_port = free_port()
            while controller_port == port:
                controller_port = free_port()
        for name, number in (("port", port), ("controller port", controller_port)):
            if not port_is_free(number):
                raise KafkaLocalError(
                    f"{name} {number} on {HOST} is already in use by another process; stop "
                    f"it, or choose another port (`rtsim kafka up --port N`, 0 picks a free "
                    f"one)."
                )
        java = check_java(self.java)
        lib = ensure_jars(self.cache_dir, self.mvn, self.progress)
        self.port = port

        state = self.state_dir
        data = state / "data"
        data.mkdir(parents=True, exist_ok=True)
        (state / SERVER_PROPERTIES).write_text(
            _render(
                "kafka-server.properties",
                PORT=self.port,
                CONTROLLER_PORT=controller_port,
                DATA_DIR=_properties_value(str(data)),
            ),
            "utf-8",
        )
        (state / LOG4J_PROPERTIES).write_text(_render("kafka-log4j2.properties"), "utf-8")
        meta = {"port": self.port, "controller_port": controller_port, "version": KAFKA_VERSION}
        (state / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", "utf-8")

        classpath = ["-cp", str(lib / "*")]
        logging_opts = [f"-Dlog4j2.configurationFile={state / LOG4J_PROPERTIES}"]
        if not (data / "meta.properties").is_file():
            self._format_storage(java, [*STORAGE_TOOL_JVM_OPTS, *logging_opts, *classpath])

        self.progress(f"starting Kafka {KAFKA_VERSION} on {HOST}:{self.port}")
        log_path = state / BROKER_LOG
        with open(log_path, "wb") as log:
            self._proc = subprocess.Popen(
                [java, *BROKER_JVM_OPTS, *logging_opts, *classpath, "kafka.Kafka", str(state / SERVER_PROPERTIES)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=state,
                # Its own session: Ctrl-C in the terminal that ran `up` must not stop it.
                start_new_session=True,
                preexec_fn=_die_with_parent_hook() if self.die_with_parent else None,
            )
        (state / PID_FILE).write_text(f"{self._proc.pid}\n", "utf-8")

        bootstrap = f"{HOST}:{self.port}"
        try:
            self._wait_ready(bootstrap, wait_s)
        except BaseException:
            # Not ready (or Ctrl-C while waiting): leave no half-started broker behind.
            self.down()
            raise
        return bootstrap

    def down(self, timeout_s: float = 30.0) -> bool:
        """Stop the broker: SIGTERM (a controlled shutdown), SIGKILL after timeout_s.

        Returns whether a running broker was stopped.
        """
        pid = self._running_pid()
        if pid is None:
            (self.state_dir / PID_FILE).unlink(missing_ok=True)
            return False
        self.progress(f"stopping Kafka (pid {pid})")
        with contextlib.suppress(ProcessLookupError):  # it may exit on its own meanwhile
            os.kill(pid, signal.SIGTERM)
            if not self._wait_exit(pid, timeout_s):
                os.kill(pid, signal.SIGKILL)
                self._wait_exit(pid, 10.0)
        (self.state_dir / PID_FILE).unlink(missing_ok=True)
        self._proc = None
        return True

    # -- helpers --

    def _format_storage(self, java: str, jvm_args: list[str]) -> None:
        self.progress("formatting KRaft storage")
        result = subprocess.run(
            [
                java,
                *jvm_args,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                _cluster_id(),
                "-c",
                str(self.state_dir / SERVER_PROPERTIES),
            ],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=120,
        )
        if result.returncode != 0:
            raise KafkaLocalError(
                f"formatting Kafka storage in {self.state_dir / 'data'} failed (exit "
                f"{result.returncode}); remove that directory to start from scratch. "
                f"Output:\n{(result.stdout + result.stderr).strip()[-4000:]}"
            )

    def _wait_exit(self, pid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self._is_ours(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def _wait_ready(self, bootstrap: str, wait_s: float) -> None:
        """Wait until the process listens and answers an admin request, or fail with its log."""
        from kafka import KafkaAdminClient  # only needed here; keeps the CLI's import cheap
        from kafka.errors import KafkaError

        assert self._proc is not None
        log_path = self.state_dir / BROKER_LOG
        deadline = time.monotonic() + wait_s
        while True:
            code = self._proc.poll()
            if code is not None:
                raise KafkaLocalError(
                    f"the Kafka broker exited with code {code} while starting. Last lines of "
                    f"{log_path}:\n{_tail(log_path)}"
                )
            if _accepts_connections(self.port):
                try:
                    admin = KafkaAdminClient(
                        bootstrap_servers=bootstrap,
                        client_id="rtsim-kafka-probe",
                        bootstrap_timeout_ms=3000,
                        request_timeout_ms=5000,
                    )
                    try:
                        if admin.describe_cluster().get("brokers"):
                            return
                    finally:
                        admin.close()
                except KafkaError:
                    pass  # listening, but not serving requests yet
            if time.monotonic() > deadline:
                raise KafkaLocalError(
                    f"the Kafka broker did not become ready on {bootstrap} within {wait_s:g} s "
                    f"and was stopped; raise the wait (`--wait`) on a slow machine. Last "
                    f"lines of {log_path}:\n{_tail(log_path)}"
                )
            time.sleep(0.25)
