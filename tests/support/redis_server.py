"""A private Redis server for tests: its own port and directory; started, stopped, killed."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import redis.exceptions

from python_worker.adapters.redis.config import RedisConfig
from python_worker.adapters.redis.connection import (
    DEAD_LETTER_STREAM,
    GROUP,
    JOB_STREAMS,
    create_topology,
    entries_of,
    entry_id,
)
from tests.support.rabbitmq_node import free_port

NOT_INSTALLED = (
    "redis-server is not installed; run `sudo scripts/ensure-redis.sh` (Debian's redis-server)"
)


class RedisNotInstalledError(RuntimeError):
    """Raised when there is no redis-server binary to start."""


@dataclass(frozen=True)
class TlsFiles:
    """The server's certificate and key, and the CA that signed them (PEM files)."""

    cert: Path
    key: Path
    ca: Path


class RedisServer:
    """One `redis-server` process on a free port, its data in a temp dir of its own.

    `appendfsync_always` turns the append-only file on with an fsync before every reply, the
    setting under which a kill -9 of Redis loses nothing it acknowledged; otherwise there is no
    persistence at all (a restart starts empty). `password` sets `requirepass`; `tls` serves
    TLS only (no plain port).
    """

    def __init__(
        self,
        *,
        appendfsync_always: bool = False,
        password: str | None = None,
        tls: TlsFiles | None = None,
        name_prefix: str = "pw-redis",
    ) -> None:
        if shutil.which("redis-server") is None:
            raise RedisNotInstalledError(NOT_INSTALLED)
        self.appendfsync_always = appendfsync_always
        self.password = password
        self.tls = tls
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix=f"{name_prefix}-"))
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        persistence = "aof always" if self.appendfsync_always else "no persistence"
        return f"RedisServer(port={self.port}, {persistence})"

    # -- where it is -------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def url(self) -> str:
        """The URL the worker is given (REDIS_URL), without the password."""
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{self.host}:{self.port}/0"

    def config(self, **changes: Any) -> RedisConfig:
        settings: dict[str, Any] = {"url": self.url, "password": self.password}
        if self.tls is not None:
            settings["ca_file"] = self.tls.ca
        settings.update(changes)
        return RedisConfig(**settings)

    def client(self) -> redis.Redis:
        return self.config().client(socket_timeout=10)

    # -- its life ----------------------------------------------------------------------------

    def start(self, timeout: float = 20) -> RedisServer:
        if self.running():
            return self
        (self.directory / "redis.conf").write_text(self._conf())
        log = (self.directory / "redis.out").open("ab")
        self._process = subprocess.Popen(
            ["redis-server", str(self.directory / "redis.conf")],
            cwd=self.directory,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited at start:\n{self.log()[-2000:]}")
            with contextlib.suppress(redis.exceptions.RedisError, OSError):
                client = self.client()
                try:
                    if client.ping():
                        return self
                finally:
                    client.close()
            time.sleep(0.05)
        raise TimeoutError(f"redis-server on {self.port} did not answer:\n{self.log()[-2000:]}")

    def stop(self) -> None:
        """A clean shutdown (SIGTERM: Redis flushes its append-only file first)."""
        if self.running():
            assert self._process is not None
            self._process.send_signal(signal.SIGTERM)
            self._process.wait(30)

    def kill(self) -> None:
        """kill -9: what a crash or a power cut does to Redis."""
        if self.running():
            assert self._process is not None
            self._process.kill()
            self._process.wait(30)

    def restart(self, *, kill: bool = False) -> None:
        """Stop (or kill) and start again on the same port and directory."""
        if kill:
            self.kill()
        else:
            self.stop()
        self.start()

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)

    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _conf(self) -> str:
        lines = [
            "bind 127.0.0.1",
            f"dir {self.directory}",
            "logfile redis.log",
            'save ""',
            "daemonize no",
            "protected-mode no",
        ]
        if self.tls is None:
            lines.append(f"port {self.port}")
        else:
            lines += [
                "port 0",
                f"tls-port {self.port}",
                f"tls-cert-file {self.tls.cert}",
                f"tls-key-file {self.tls.key}",
                f"tls-ca-cert-file {self.tls.ca}",
                "tls-auth-clients no",
            ]
        if self.appendfsync_always:
            lines += ["appendonly yes", "appendfsync always"]
        else:
            lines.append("appendonly no")
        if self.password is not None:
            lines.append(f"requirepass {self.password}")
        return "\n".join(lines) + "\n"

    # -- what it holds -----------------------------------------------------------------------

    def flush(self) -> None:
        """Forget every stream: a clean slate for the next test."""
        client = self.client()
        try:
            client.flushall()
        finally:
            client.close()

    def create_topology(self) -> None:
        client = self.client()
        try:
            create_topology(client)
        finally:
            client.close()

    def stream_counts(self) -> dict[str, tuple[int, int]]:
        """Per job stream: (entries not yet delivered to the group, entries pending in it)."""
        client = self.client()
        try:
            return {stream: _counts(client, stream) for stream in JOB_STREAMS}
        finally:
            client.close()

    def remaining(self) -> int:
        """Job entries not acknowledged yet: waiting for a worker, or pending at one."""
        return sum(waiting + pending for waiting, pending in self.stream_counts().values())

    def dead_letters(self) -> list[dict[bytes, bytes]]:
        """Every entry of job.dead-letter (fields), oldest first; left where they are."""
        client = self.client()
        try:
            return [fields for _id, fields in entries_of(client.xrange(DEAD_LETTER_STREAM))]
        finally:
            client.close()

    def pending_by_consumer(self, stream: str) -> dict[str, int]:
        client = self.client()
        try:
            summary = client.xpending(stream, GROUP)
        except redis.exceptions.ResponseError:
            return {}
        finally:
            client.close()
        return {entry_id(c["name"]): int(c["pending"]) for c in summary.get("consumers") or []}

    def acl_user(self, name: str, password: str, *rules: str) -> None:
        client = self.client()
        try:
            client.acl_setuser(name, enabled=True, passwords=[f"+{password}"], reset=True)
            client.execute_command("ACL", "SETUSER", name, *rules)
        finally:
            client.close()


def _counts(client: redis.Redis, stream: str) -> tuple[int, int]:
    try:
        groups = {entry_id(g["name"]): g for g in client.xinfo_groups(stream)}
    except redis.exceptions.ResponseError:
        return 0, 0  # no such stream yet
    group = groups.get(GROUP)
    if group is None:
        return int(client.xlen(stream)), 0
    last = entry_id(group["last-delivered-id"])
    undelivered = len(client.xrange(stream, min=f"({last}", max="+"))
    return undelivered, int(group["pending"])
