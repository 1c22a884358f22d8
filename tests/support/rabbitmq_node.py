"""A private, throw-away RabbitMQ node for integration tests (plus an external-broker stand-in)."""

from __future__ import annotations

import collections
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import string
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

import pika
import pika.exceptions
import pytest

# Debian/Ubuntu ship the real scripts here; /usr/sbin/rabbitmq-server is only a wrapper that
# `su`s to the `rabbitmq` user, cds to /var/lib/rabbitmq and redirects output to
# /var/log/rabbitmq, i.e. it fights everything a private node needs. Calling the inner scripts
# runs the node as the current user (root or not) with exactly the environment we give it.
_DEBIAN_SCRIPTS_DIR = Path("/usr/lib/rabbitmq/bin")
# Debian's wrapper (must not be used: see above).
_DEBIAN_WRAPPER = Path("/usr/sbin/rabbitmq-server")

ENSURE_HINT = "run `sudo scripts/ensure-rabbitmq.sh` (installs rabbitmq-server) or set RABBITMQ_URL"

# Config for a test node: loopback only, no console logging (stdout goes to a file anyway),
# a low disk alarm threshold so a nearly full CI disk doesn't block publishers.
_RABBITMQ_CONF = """\
listeners.tcp.1 = 127.0.0.1:{port}
loopback_users.guest = true
log.console = false
log.file.level = info
disk_free_limit.absolute = 50MB
vm_memory_high_watermark.relative = 0.6
"""

_PR_SET_PDEATHSIG = 1

EXTERNAL_BROKER_REASON = (
    "RABBITMQ_URL is set: this test stops/kills/restarts the broker, which needs the private "
    "node the fixture starts (unset RABBITMQ_URL to run it)"
)

# Decorator for tests that stop/kill/restart the broker. The `controllable_node` fixture skips
# by itself; the marker also makes the reason visible without running any fixture.
requires_private_node = pytest.mark.skipif(
    bool(os.environ.get("RABBITMQ_URL")), reason=EXTERNAL_BROKER_REASON
)


class RabbitMQNotInstalledError(RuntimeError):
    """The rabbitmq-server scripts could not be found on this machine."""


class QueueCounts(NamedTuple):
    """What `rabbitmqctl list_queues` reports for one queue."""

    messages_ready: int
    messages_unacknowledged: int
    consumers: int


def find_scripts_dir() -> Path:
    """Directory holding the real `rabbitmq-server` / `rabbitmqctl` scripts, or raise."""
    override = os.environ.get("RABBITMQ_SCRIPTS_DIR")
    candidates = [Path(override)] if override else []
    candidates.append(_DEBIAN_SCRIPTS_DIR)
    found = shutil.which("rabbitmq-server")
    # Homebrew / generic-unix tarballs put the real scripts on PATH; Debian's wrapper is skipped.
    if found and Path(found).resolve() != _DEBIAN_WRAPPER:
        candidates.append(Path(found).resolve().parent)
    for directory in candidates:
        if (directory / "rabbitmq-server").is_file() and (directory / "rabbitmqctl").is_file():
            return directory
    raise RabbitMQNotInstalledError(
        f"rabbitmq-server not found (looked in {candidates}); {ENSURE_HINT}"
    )


def free_port() -> int:
    """A TCP port that was free a moment ago (the kernel picks it; tiny race accepted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _is_zombie(pid: int) -> bool:
    # An orphan that PID 1 never reaps (common in containers) keeps its /proc entry forever.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


def _die_with_parent() -> None:
    # Runs in the child before exec: if pytest is SIGKILLed the node dies too instead of being
    # orphaned. PDEATHSIG survives the sh -> erl -> erlexec -> beam exec chain.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Broker:
    """A broker reachable over AMQP; all a test needs when it never stops the broker."""

    controllable = False

    def __init__(self, amqp_url: str) -> None:
        self._amqp_url = amqp_url
        params = pika.URLParameters(amqp_url)
        self._host: str = params.host
        self._port: int = params.port

    @property
    def amqp_url(self) -> str:
        return self._amqp_url

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        return self._port

    def connection_parameters(self, **overrides: object) -> pika.URLParameters:
        """pika parameters for this broker, with short timeouts so broken tests fail fast."""
        params = pika.URLParameters(self.amqp_url)
        params.connection_attempts = 1
        params.socket_timeout = 5
        params.blocked_connection_timeout = 30
        for name, value in overrides.items():
            setattr(params, name, value)
        return params

    def connect(self, **overrides: object) -> pika.BlockingConnection:
        return pika.BlockingConnection(self.connection_parameters(**overrides))

    def delete_queue(self, name: str) -> None:
        # Over AMQP, not rabbitmqctl: ~10 ms instead of ~0.5 s of CLI start-up per call.
        # RabbitMQ treats deleting a missing queue/exchange as success.
        with contextlib.closing(self.connect()) as conn:
            conn.channel().queue_delete(name)

    def purge_queue(self, name: str) -> None:
        with contextlib.closing(self.connect()) as conn:
            conn.channel().queue_purge(name)

    def reset(self, queues: tuple[str, ...] = (), exchanges: tuple[str, ...] = ()) -> None:
        """Delete the given queues and exchanges (missing ones are fine) on one connection."""
        with contextlib.closing(self.connect()) as conn:
            channel = conn.channel()
            for queue in queues:
                channel.queue_delete(queue)
            for exchange in exchanges:
                channel.exchange_delete(exchange)

    def queue_counts(self, name: str) -> QueueCounts | None:
        """(ready, unacked, consumers) of one queue, None if it doesn't exist.

        Passive declare works on any broker but cannot see unacked messages, so that field is 0
        here; RabbitMQNode overrides this with the exact rabbitmqctl numbers.
        """
        with contextlib.closing(self.connect()) as conn:
            try:
                ok = conn.channel().queue_declare(name, passive=True).method
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code == 404:
                    return None
                raise
            return QueueCounts(ok.message_count, 0, ok.consumer_count)

    def ensure_running(self, timeout: float = 60) -> None:
        """An external broker is assumed to be up."""

    def close(self) -> None:
        """Nothing to tear down for an external broker."""


class RabbitMQNode(Broker):
    """One private RabbitMQ node: own node name, ports, data/log dirs and Erlang cookie.

    The data dir survives stop/kill/restart (durable queues and persistent messages come back);
    close() stops the node and removes the whole temp dir.
    """

    controllable = True

    def __init__(
        self, base_dir: Path | None = None, name_prefix: str = "pw-test", cookie: str | None = None
    ) -> None:
        """`cookie`: the Erlang cookie to use (nodes of one cluster share one); default random."""
        self.scripts_dir = find_scripts_dir()
        self._cookie = cookie or "".join(secrets.choice(string.ascii_uppercase) for _ in range(20))
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="pw-rabbitmq-"))
        self.nodename = f"{name_prefix}-{secrets.token_hex(4)}@localhost"
        amqp_port = free_port()
        self.dist_port = free_port()
        super().__init__(f"amqp://guest:guest@127.0.0.1:{amqp_port}/{quote('/', safe='')}")
        self.home_dir = self.base_dir / "home"
        self.mnesia_dir = self.base_dir / "mnesia"
        self.log_dir = self.base_dir / "log"
        self.pid_file = self.base_dir / "rabbitmq.pid"
        self.stdout_file = self.log_dir / "stdout.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._write_files()
        self._env = self._build_env()

    # -- setup ---------------------------------------------------------------------------------

    def _write_files(self) -> None:
        for directory in (self.home_dir, self.mnesia_dir, self.log_dir):
            directory.mkdir(parents=True, exist_ok=True)
        # The cookie trick: node and rabbitmqctl both get HOME=<base>/home, so both read this
        # cookie and never touch ~root/.erlang.cookie or /var/lib/rabbitmq/.erlang.cookie.
        # Erlang refuses a cookie file readable by others, hence 0400.
        cookie = self.home_dir / ".erlang.cookie"
        cookie.write_text(self._cookie)
        cookie.chmod(0o400)
        (self.base_dir / "rabbitmq.conf").write_text(_RABBITMQ_CONF.format(port=self.port))
        # No plugins at all (no management UI): it's the biggest start-time saving.
        (self.base_dir / "enabled_plugins").write_text("[].\n")
        # Empty env file so /etc/rabbitmq/rabbitmq-env.conf (NODENAME, ports...) can't leak in.
        (self.base_dir / "rabbitmq-env.conf").write_text("")

    def _build_env(self) -> dict[str, str]:
        # Drop the caller's RABBITMQ_*/ERL_* settings (e.g. RABBITMQ_NODENAME from a dev shell)
        # so this node is defined only by what follows.
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("RABBITMQ_", "ERL_"))
        }
        env.update(
            HOME=str(self.home_dir),
            # Elixir CLI warns (and may mangle output) under a latin1 locale.
            LC_ALL="C.UTF-8",
            LANG="C.UTF-8",
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.mnesia_dir),
            RABBITMQ_LOG_BASE=str(self.log_dir),
            RABBITMQ_CONFIG_FILE=str(self.base_dir / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.base_dir / "advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base_dir / "enabled_plugins"),
            RABBITMQ_CONF_ENV_FILE=str(self.base_dir / "rabbitmq-env.conf"),
            RABBITMQ_PID_FILE=str(self.pid_file),
            # Makes the script `exec erl` instead of running beam as a background child of a
            # signal-proxy shell: our Popen pid *is* the beam, so kill() hits the right process,
            # we reap it (PID 1 in containers often doesn't: orphans stay zombies) and
            # PDEATHSIG survives. ALLOW_INPUT also drops -noinput (an Eshell would read stdin,
            # hit EOF and halt the VM), so we put it back via the start args.
            RABBITMQ_ALLOW_INPUT="true",
            RABBITMQ_SERVER_START_ARGS="-noinput",
        )
        return env

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """OS pid of this node's beam process while it runs, else None."""
        if self._process is not None and self._process.poll() is None:
            return self._process.pid
        return self._pid_from_file()

    def _pid_from_file(self) -> int | None:
        # Covers a beam this object didn't spawn; the cmdline check guards against the pid
        # having been reused by an unrelated process or another test node. The node name isn't
        # on the beam command line (rabbit sets it at runtime) but `-home <our home>` is.
        try:
            pid = int(self.pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        if b"beam" in cmdline[0] and str(self.home_dir).encode() in cmdline:
            return None if _is_zombie(pid) else pid
        return None

    def process_alive(self) -> bool:
        return self.pid is not None

    def is_running(self) -> bool:
        """The beam runs and the AMQP listener accepts connections (app started)."""
        return self.process_alive() and _port_accepts(self.host, self.port)

    def start(self, timeout: float = 60) -> float:
        """Start the node and wait until a pika connection works; returns seconds taken."""
        if self.is_running():
            return 0.0
        if self.process_alive():
            # Beam is up but the app is stopped (stop_app): starting a second beam would clash.
            began = time.monotonic()
            self.start_app()
            self._wait_ready(began + timeout)
            return time.monotonic() - began
        began = time.monotonic()
        self.spawn()
        self._wait_ready(began + timeout)
        return time.monotonic() - began

    def spawn(self) -> None:
        """Launch the node's beam and return at once; `wait_ready` waits for it to boot.

        Lets a caller boot several nodes side by side (a cluster) from the main thread, which
        the die-with-parent guard needs.
        """
        if self.process_alive():
            return
        # A stale pid file after kill() would point at a dead (or reused) pid; rabbit rewrites it
        # anyway, but removing it keeps pid lookups honest while the new node boots.
        self.pid_file.unlink(missing_ok=True)
        in_main_thread = threading.current_thread() is threading.main_thread()
        with self.stdout_file.open("ab") as out:
            self._process = subprocess.Popen(
                [str(self.scripts_dir / "rabbitmq-server")],
                cwd=self.base_dir,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Own session: Ctrl-C in pytest must not SIGINT the node half-way through a test.
                start_new_session=True,
                # PDEATHSIG fires when the *spawning thread* exits, so only from the main thread.
                preexec_fn=_die_with_parent if in_main_thread else None,  # noqa: PLW1509
            )

    def wait_ready(self, timeout: float = 60) -> None:
        """Wait until a spawned (or start_app'ed) node accepts AMQP connections."""
        self._wait_ready(time.monotonic() + timeout)

    def _wait_ready(self, deadline: float) -> None:
        # The AMQP listener is the last thing rabbit starts, so "port accepts + AMQP handshake
        # works" means booted -- and it avoids `rabbitmqctl await_startup` (~0.5 s CLI start-up,
        # and it fails outright before the node has registered with epmd).
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(
                    f"RabbitMQ node {self.nodename} exited with {self._process.returncode} "
                    f"during start:\n{self.log_tail()}"
                )
            if _port_accepts(self.host, self.port):
                try:
                    self.connect().close()
                    return
                except pika.exceptions.AMQPError:
                    pass
            time.sleep(0.1)
        raise TimeoutError(f"RabbitMQ node {self.nodename} not ready in time:\n{self.log_tail()}")

    def stop(self, timeout: float = 60) -> float:
        """Graceful `rabbitmqctl stop` of this node name; waits for the beam to exit."""
        began = time.monotonic()
        pid = self.pid
        if pid is None:
            return 0.0
        result = self.rabbitmqctl("stop", check=False, timeout=timeout)
        if not self._wait_exit(pid, began + timeout):
            # CLI couldn't reach it (e.g. hung): escalate rather than leak a broker.
            os.kill(pid, signal.SIGTERM)
            if not self._wait_exit(pid, time.monotonic() + 10):
                self.kill()
                raise RuntimeError(f"{self.nodename} ignored stop ({result.stderr.strip()})")
        return time.monotonic() - began

    def kill(self) -> None:
        """SIGKILL this node's beam only (simulates a broker crash); data dir stays."""
        pid = self.pid
        if pid is None:
            return
        # Only the beam pid (our Popen child thanks to RABBITMQ_ALLOW_INPUT, or the verified pid
        # file): epmd runs in its own session and serves other nodes too, and the beam's helpers
        # (erl_child_setup, inet_gethost) exit when their parent dies.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        self._wait_exit(pid, time.monotonic() + 30)

    def restart(self, timeout: float = 60) -> float:
        """Graceful stop then start on the same ports and data; returns seconds taken."""
        began = time.monotonic()
        self.stop(timeout)
        self.start(timeout)
        return time.monotonic() - began

    def ensure_running(self, timeout: float = 60) -> None:
        """Bring the node back after a test stopped/killed it or stopped the app."""
        if not self.is_running():
            self.start(timeout)

    def _wait_exit(self, pid: int, deadline: float) -> bool:
        while time.monotonic() < deadline:
            if self._process is not None and self._process.pid == pid:
                # Our child: reap it, otherwise it lingers as a zombie and looks alive.
                if self._process.poll() is not None:
                    return True
            elif _is_zombie(pid):
                return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        """Final teardown: stop the node (kill if it won't stop) and delete its temp dir."""
        try:
            if self.process_alive():
                try:
                    self.stop(timeout=30)
                except (RuntimeError, subprocess.TimeoutExpired):
                    self.kill()
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    # -- rabbitmqctl ---------------------------------------------------------------------------

    def rabbitmqctl(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run rabbitmqctl against this node (same HOME/cookie); raises with stderr on failure."""
        return self.cli("rabbitmqctl", *args, check=check, timeout=timeout)

    def cli(
        self, tool: str, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run one of the node's CLI tools (`rabbitmq-queues`, `rabbitmq-diagnostics`, ...)
        against this node, as `rabbitmqctl` does."""
        result = subprocess.run(
            [str(self.scripts_dir / tool), "-n", self.nodename, *args],
            env=self._env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{tool} {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}"
            )
        return result

    def stop_app(self) -> None:
        """Stop the rabbit app but keep the Erlang VM (listeners close, beam stays)."""
        self.rabbitmqctl("stop_app")

    def start_app(self) -> None:
        self.rabbitmqctl("start_app")

    def close_all_connections(self, reason: str = "closed by test") -> None:
        """Force-close every client connection (clients get CONNECTION_FORCED, 320)."""
        self.rabbitmqctl("close_all_connections", reason)

    def client_connections(self) -> collections.Counter[str]:
        """connection_name -> how many client connections this node serves."""
        return connection_counts(self.rabbitmqctl(*LIST_CONNECTIONS).stdout, self.port)

    def list_queues(self) -> dict[str, QueueCounts]:
        """name -> (messages_ready, messages_unacknowledged, consumers) for vhost '/'."""
        out = self.rabbitmqctl(
            "list_queues",
            "--quiet",
            "--formatter",
            "json",
            "name",
            "messages_ready",
            "messages_unacknowledged",
            "consumers",
        ).stdout
        return {
            row["name"]: QueueCounts(
                int(row["messages_ready"] or 0),
                int(row["messages_unacknowledged"] or 0),
                int(row["consumers"] or 0),
            )
            for row in json.loads(out or "[]")
        }

    def queue_counts(self, name: str) -> QueueCounts | None:
        return self.list_queues().get(name)

    def log_tail(self, lines: int = 40) -> str:
        """Last lines of the node's stdout and main log, for failure messages."""
        chunks = []
        for path in (self.stdout_file, self.log_dir / f"{self.nodename}.log"):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").splitlines()[-lines:]
                chunks.append(f"--- {path}\n" + "\n".join(text))
        return "\n".join(chunks) or "(no logs)"

    def __repr__(self) -> str:
        return f"RabbitMQNode({self.nodename}, amqp={self.port}, dist={self.dist_port})"


LIST_CONNECTIONS = (
    "list_connections",
    "--quiet",
    "--formatter",
    "json",
    "port",
    "client_properties",
)
"""rabbitmqctl arguments listing the client connections of the whole cluster, for
`connection_counts`."""


def connection_counts(listed: str, port: int) -> collections.Counter[str]:
    """connection_name -> how many of the connections `LIST_CONNECTIONS` printed go to `port`
    (one node's AMQP port)."""
    names: collections.Counter[str] = collections.Counter()
    for row in json.loads(listed or "[]"):
        if row["port"] == port:
            names[_connection_name(row["client_properties"])] += 1
    return names


def _connection_name(client_properties: Any) -> str:
    # rabbitmqctl's JSON renders the AMQP table as [name, type, value] triples.
    for entry in client_properties or []:
        if isinstance(entry, list) and len(entry) == 3 and entry[0] == "connection_name":
            return str(entry[2])
    return ""
