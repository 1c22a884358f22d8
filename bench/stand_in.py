"""The stand-in API in its own process, driven over stdin/stdout, plus a pipelined load generator.

`python -m bench.stand_in serve --max-records N` and `python -m bench.stand_in load --port P
--seconds S` are the child processes; the driver uses `StandInProcess` and `stand_in_capacity`.
Plain subprocesses rather than multiprocessing: a spawned child would re-import the driver's
`__main__`, and a forked one would inherit its sockets.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from devtools.stand_in_api import STATUS_PATH, StandInApi
from tests.support.http_wire import read_message

_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True, slots=True)
class Arrival:
    """One accepted status update, as little of it as the analysis needs."""

    job_id: str
    status: str
    at: float  # wall clock in the stand-in process when it was accepted
    timestamp: str  # the worker's own `timestamp` field (ISO 8601, milliseconds)


def _child(*args: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(_ROOT))
    return subprocess.Popen(
        [sys.executable, "-m", "bench.stand_in", *args],
        cwd=_ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )


def _serve(max_records: int, commands: IO[bytes], answers: IO[bytes]) -> None:
    api = StandInApi(max_records=max_records).start()

    def answer(value: Any) -> None:
        answers.write(orjson.dumps(value) + b"\n")
        answers.flush()

    answer(api.port)
    for line in commands:
        command = line.strip().decode()
        if command == "count":
            answer(api.status_count)
        elif command == "clear":
            api.clear()
            answer(True)
        elif command.startswith("delay "):
            # Status POSTs only: heartbeats stay undelayed. Also resets `peak_waiting`.
            api.delay(float(command.split()[1]), endpoint="status")
            answer(True)
        elif command == "peak_waiting":
            answer(api.peak_waiting)
        elif command == "dump":
            rows = []
            for received in api.statuses:
                body = orjson.loads(received.raw)
                stamp = str(body.get("timestamp"))
                rows.append([str(body.get("jobId")), str(body.get("status")), received.at, stamp])
            answer(rows)
        elif command == "stop":
            break
    api.stop()
    answer(True)


class StandInProcess:
    """A `StandInApi` in a child process: it never competes for the driver's GIL.

    Counts and records come back over the child's stdout, not over HTTP, so polling them costs
    the server's event loop nothing.
    """

    def __init__(self, max_records: int) -> None:
        self._process = _child("serve", "--max-records", str(max_records))
        self._lock = threading.Lock()
        self.port: int = self._ask(None)

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def status_url(self) -> str:
        return self.url + STATUS_PATH

    def _ask(self, command: str | None) -> Any:
        assert self._process.stdin is not None and self._process.stdout is not None
        with self._lock:
            if command is not None:
                self._process.stdin.write(command.encode() + b"\n")
                self._process.stdin.flush()
            line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"stand-in API process exited ({self._process.poll()})")
        return orjson.loads(line)

    def status_count(self) -> int:
        return int(self._ask("count"))

    def clear(self) -> None:
        self._ask("clear")

    def delay(self, seconds: float) -> None:
        """Answer every status POST `seconds` after it arrived (0: at once); heartbeats as ever.

        Also starts `peak_waiting` afresh.
        """
        self._ask(f"delay {seconds!r}")

    def peak_waiting(self) -> int:
        """Most status POSTs held back by `delay` at the same moment since it was last set."""
        return int(self._ask("peak_waiting"))

    def arrivals(self) -> list[Arrival]:
        """Every accepted status update since the last `clear`, in arrival order."""
        return [Arrival(*row) for row in self._ask("dump")]

    def close(self) -> None:
        if self._process.poll() is None:
            try:
                self._ask("stop")
                self._process.wait(10)
            except (OSError, RuntimeError, subprocess.TimeoutExpired):
                self._process.kill()
                self._process.wait(5)


# ------------------------------------------------------------------ load generator


def _request_bytes(port: int, body: bytes) -> bytes:
    head = (
        f"POST {STATUS_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def _answer_size(sock: socket.socket, request: bytes) -> int:
    """Size of the answer to one POST (head + body), read off a first request."""
    sock.sendall(request)
    answer = read_message(sock)
    if answer is None:
        raise ConnectionError("the stand-in closed the connection instead of answering")
    head, body = answer
    return len(head) + 4 + len(body)


def _pipelined_posts(port: int, body: bytes, seconds: float, depth: int) -> tuple[int, float]:
    # Raw socket and pipelining: the client spends next to nothing per request, so what is
    # measured is the server. Every accepted POST gets the same fixed-size answer.
    request = _request_bytes(port, body)
    batch = request * depth
    sent = 0
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        expected = _answer_size(sock, request) * depth
        began = time.perf_counter()
        deadline = began + seconds
        while time.perf_counter() < deadline:
            sock.sendall(batch)
            received = 0
            while received < expected:
                chunk = sock.recv(1 << 16)
                if not chunk:
                    raise ConnectionError("stand-in API closed the connection")
                received += len(chunk)
            sent += depth
        elapsed = time.perf_counter() - began
    return sent, elapsed


def stand_in_capacity(port: int, body: bytes, seconds: float, depth: int = 32) -> float:
    """POSTs/s the stand-in answers when a separate process pipelines keep-alive requests."""
    process = _child(
        "load",
        "--port",
        str(port),
        "--seconds",
        str(seconds),
        "--depth",
        str(depth),
        "--body",
        body.decode(),
    )
    try:
        out, _ = process.communicate(timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)
        raise RuntimeError("load generator did not report in time") from None
    if process.returncode != 0:
        raise RuntimeError(f"load generator failed (exit {process.returncode})")
    sent, elapsed = orjson.loads(out)
    return float(sent / elapsed)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stand_in")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the stand-in; commands on stdin")
    serve.add_argument("--max-records", type=int, default=100_000)
    load = commands.add_parser("load", help="pipelined POSTs; prints [sent, seconds]")
    load.add_argument("--port", type=int, required=True)
    load.add_argument("--seconds", type=float, default=3.0)
    load.add_argument("--depth", type=int, default=32)
    load.add_argument("--body", default="{}")
    args = parser.parse_args(argv)
    if args.command == "serve":
        _serve(args.max_records, sys.stdin.buffer, sys.stdout.buffer)
    else:
        sent, elapsed = _pipelined_posts(args.port, args.body.encode(), args.seconds, args.depth)
        print(orjson.dumps([sent, elapsed]).decode(), flush=True)


if __name__ == "__main__":
    main()
