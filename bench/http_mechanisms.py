"""Which way to carry many status POSTs at once: threads, one event loop, or pipelining.

`python -m bench.http_mechanisms` starts the stand-in API in its own process and measures,
for each API latency (the stand-in answers every POST that many milliseconds after it
arrived), POSTs/s and the client's CPU per POST of each candidate, each in a fresh process:

- `threads`: N threads, each with one kept-alive socket and one blocking request at a time
  (the request head written directly, the answer parsed by httptools: the old lanes' cost
  floor, with as many lanes as requests in flight);
- `asyncio` / `uvloop`: the worker's `KeepAlivePool`, N requests in flight on one event loop,
  with asyncio's own loop or uvloop's;
- `pipelined`: 4 threads, each pipelining N/4 requests on one connection (HTTP/1.1 answers
  come back in order, and the server works a connection's requests one at a time).

Every candidate builds its requests the same way (a copy of a prepared `requests` request,
as the reporter does) and turns answers into `requests.Response`s, so only the mechanism
differs. The docstring of `adapters.http.transport` cites what this measured.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import httptools
import orjson
import requests

from bench.raw import STATUS_BODY
from bench.stand_in import StandInProcess
from python_worker.adapters.http.transport import Answer, KeepAlivePool, _Origin

_ROOT = Path(__file__).resolve().parents[1]
CANDIDATES = ("threads", "asyncio", "uvloop", "pipelined")


def _template(url: str) -> requests.PreparedRequest:
    return requests.Request(
        "POST", url, data=STATUS_BODY, headers={"Content-Type": "application/json"}
    ).prepare()


def _request(template: requests.PreparedRequest) -> requests.PreparedRequest:
    request = template.copy()
    request.headers["Content-Length"] = str(len(STATUS_BODY))
    request.headers["Idempotency-Key"] = uuid.uuid4().hex
    return request


class Answers:
    """httptools' callbacks for a stream of answers on one connection, in order."""

    def __init__(self) -> None:
        self.current = Answer()
        self.done: list[Answer] = []
        self.parser = httptools.HttpResponseParser(self)
        self.current.parser = self.parser

    def on_status(self, reason: bytes) -> None:
        self.current.on_status(reason)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.current.on_header(name, value)

    def on_headers_complete(self) -> None:
        self.current.on_headers_complete()

    def on_body(self, chunk: bytes) -> None:
        self.current.on_body(chunk)

    def on_message_complete(self) -> None:
        self.current.on_message_complete()
        if self.current.complete:
            self.done.append(self.current)
            self.current = Answer()
            self.current.parser = self.parser


def _run_blocking(url: str, threads: int, depth: int, seconds: float) -> int:
    """`threads` threads, each writing `depth` requests before reading their answers."""
    origin = _Origin(url, None)
    template = _template(url)
    counts = [0] * threads
    stop = threading.Event()

    def loop(index: int) -> None:
        with socket.create_connection((origin.host, origin.port)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            answers = Answers()
            while not stop.is_set():
                batch = b"".join(origin.encode(_request(template)) for _ in range(depth))
                sock.sendall(batch)
                while len(answers.done) < depth:
                    data = sock.recv(65_536)
                    if not data:
                        raise ConnectionError("the stand-in closed the connection")
                    answers.parser.feed_data(data)
                for answer in answers.done:
                    answer.response(template)
                counts[index] += len(answers.done)
                answers.done.clear()

    workers = [threading.Thread(target=loop, args=(n,), daemon=True) for n in range(threads)]
    for worker in workers:
        worker.start()
    time.sleep(seconds)
    stop.set()
    for worker in workers:
        worker.join(10)
    return sum(counts)


def _run_pool(
    url: str, in_flight: int, seconds: float, loop_factory: Callable[[], asyncio.AbstractEventLoop]
) -> int:
    template = _template(url)

    async def main() -> int:
        pool = KeepAlivePool(in_flight)
        deadline = time.monotonic() + seconds
        done = 0

        async def one_lane() -> None:
            nonlocal done
            while time.monotonic() < deadline:
                response = await pool.send(_request(template), timeout=(3.05, 10.0))
                if response.status_code != 200:
                    raise RuntimeError(f"HTTP {response.status_code}")
                done += 1

        await asyncio.gather(*(one_lane() for _ in range(in_flight)))
        pool.close()
        return done

    loop = loop_factory()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def run_one(candidate: str, url: str, in_flight: int, seconds: float) -> dict[str, float]:
    """One candidate in this process: POSTs/s and CPU ms per POST."""
    cpu = time.process_time()
    began = time.perf_counter()
    if candidate == "threads":
        posts = _run_blocking(url, in_flight, 1, seconds)
    elif candidate == "pipelined":
        posts = _run_blocking(url, 4, max(1, in_flight // 4), seconds)
    elif candidate == "asyncio":
        posts = _run_pool(url, in_flight, seconds, asyncio.new_event_loop)
    elif candidate == "uvloop":
        import uvloop  # not a dependency: `pip install uvloop` to compare

        posts = _run_pool(url, in_flight, seconds, uvloop.new_event_loop)
    else:
        raise ValueError(f"unknown candidate {candidate!r}")
    elapsed = time.perf_counter() - began
    cpu = time.process_time() - cpu
    return {"posts_per_s": posts / elapsed, "cpu_ms_per_post": cpu * 1000 / max(posts, 1)}


def _measure(candidate: str, url: str, in_flight: int, seconds: float) -> dict[str, float]:
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.http_mechanisms",
            "one",
            candidate,
            url,
            str(in_flight),
            str(seconds),
        ],
        cwd=_ROOT,
        capture_output=True,
        check=True,
        timeout=seconds + 60,
    )
    result: dict[str, float] = orjson.loads(process.stdout)
    return result


def _available(candidates: Sequence[str]) -> list[str]:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return [candidate for candidate in candidates if candidate != "uvloop"]
    return list(candidates)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.http_mechanisms", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    one = sub.add_parser("one")
    one.add_argument("candidate")
    one.add_argument("url")
    one.add_argument("in_flight", type=int)
    one.add_argument("seconds", type=float)
    parser.add_argument("--latencies", default="0,10,50", help="ms, comma-separated")
    parser.add_argument("--in-flight", type=int, default=450)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    if args.command == "one":
        print(
            orjson.dumps(run_one(args.candidate, args.url, args.in_flight, args.seconds)).decode()
        )
        return
    api = StandInProcess(max_records=1000)
    try:
        print(f"{'latency':>8} {'candidate':<10} {'POSTs/s':>10} {'CPU ms/POST':>12}")
        for latency in [float(ms) for ms in args.latencies.split(",")]:
            requests.post(
                api.url + "/_stand-in/behaviour",
                data=orjson.dumps({"action": "delay", "seconds": latency / 1000}),
                timeout=5,
            )
            for _round in range(args.rounds):
                for candidate in _available(CANDIDATES):
                    api.clear()
                    figures = _measure(candidate, api.status_url, args.in_flight, args.seconds)
                    print(
                        f"{latency:>6.0f}ms {candidate:<10} {figures['posts_per_s']:>10,.0f} "
                        f"{figures['cpu_ms_per_post']:>12.3f}",
                        flush=True,
                    )
    finally:
        api.close()


if __name__ == "__main__":
    main()
