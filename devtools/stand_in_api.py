"""Stand-in for the status API and orchestrator: records what workers post, misbehaves on cue."""

import argparse
import asyncio
import collections
import contextlib
import logging
import math
import signal
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from types import TracebackType
from typing import Any, Self

import orjson

from python_worker.adapters.http.headers import authorization
from python_worker.adapters.http.heartbeat_sink import HEARTBEAT_PATH

STATUS_PATH = "/api/jobs/status"
"""Where the stand-in takes status updates (STATUS_UPDATE_URL's path by default)."""
ENDPOINTS = {"status": STATUS_PATH, "heartbeat": HEARTBEAT_PATH}

_MAX_HEAD = 64 * 1024
_MAX_BODY = 16 * 1024 * 1024
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    411: "Length Required",
    413: "Content Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
# The hot path answers every accepted POST with these same bytes.
_ACCEPTED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n"
    b'{"accepted":true}'
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Received:
    """One POST as it arrived: raw body, headers (names lower-cased), and the answer given."""

    path: str
    headers: dict[str, str]
    raw: bytes
    answered: int
    at: float = field(default_factory=time.time)
    connection: int = 0
    """Which client connection it came on (numbered from 1 in the order they were opened)."""

    @cached_property
    def body(self) -> dict[str, Any]:
        parsed = orjson.loads(self.raw)
        if not isinstance(parsed, dict):
            raise ValueError(f"body of {self.path} is not a JSON object")
        return parsed

    @property
    def job_id(self) -> str:
        return str(self.body.get("jobId"))

    @property
    def status(self) -> str:
        return str(self.body.get("status"))

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("idempotency-key")

    def to_json(self) -> dict[str, Any]:
        try:
            body: Any = self.body
        except ValueError:  # not JSON: show what came, for whoever is debugging the client
            body = self.raw.decode("utf-8", "replace")
        return {"path": self.path, "headers": self.headers, "body": body, "at": self.at}


@dataclass
class _Behaviour:
    code: int = 200
    body: bytes = b""
    retry_after: float | None = None
    hang_seconds: float | None = None  # math.inf: until released
    remaining: int | None = None  # None: until changed

    def respond_bytes(self) -> bytes:
        body = self.body or orjson.dumps({"error": _REASONS.get(self.code, "scripted answer")})
        extra = ""
        if self.retry_after is not None:
            extra = f"Retry-After: {_format_seconds(self.retry_after)}\r\n"
        head = (
            f"HTTP/1.1 {self.code} {_REASONS.get(self.code, 'Scripted')}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
        )
        return head.encode("latin-1") + body


class StandInApi:
    """The status API and orchestrator in one small HTTP/1.1 server on 127.0.0.1.

    Used in-process by the integration tests (a context manager on a free port), by the
    benchmark, and on its own by the docker-compose stack and the local dev stack (`python -m
    devtools.stand_in_api --port 8080`). It records every status update and heartbeat it
    accepts, in arrival order, with their headers; `requests` records every POST whatever the
    answer. Each endpoint ("status", "heartbeat") can be scripted to answer a given code (for
    the next N requests or until changed), or to hang; the whole server can refuse connections
    and later resume on the same port. Out-of-process users read and script it over HTTP under
    `/_stand-in/`.

    It runs on asyncio with a hand-written HTTP/1.1 parser on one thread: keep-alive connections
    cost no thread each, and the benchmark needs thousands of POSTs a second from one core.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        required_token: str | None = None,
        max_records: int | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self._ssl_context = ssl_context  # a server context: HTTPS, for the worker's TLS tests
        self._requested_port = port
        self._port: int | None = None
        self._expected_auth = authorization(required_token).get("Authorization")
        self._cond = threading.Condition()
        self._statuses: collections.deque[Received] = collections.deque(maxlen=max_records)
        self._heartbeats: collections.deque[Received] = collections.deque(maxlen=max_records)
        self._requests: collections.deque[Received] = collections.deque(maxlen=max_records)
        self.status_count = 0
        self.heartbeat_count = 0
        self._behaviours = {name: _Behaviour() for name in ENDPOINTS}
        self._latency = dict.fromkeys(ENDPOINTS, 0.0)
        self._waiting = 0  # requests held back by a latency, answered later
        self.peak_waiting = 0
        """Most requests that were held back by `delay` at the same moment."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._opened = 0
        self._release: asyncio.Event | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Self:
        """Listen (on a free port unless one was given) and serve from a background thread."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="stand-in-api", daemon=True)
        self._thread.start()
        self._call(self._listen())
        return self

    def stop(self) -> None:
        """Close every connection and stop serving."""
        if self._loop is None or self._thread is None:
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("stand-in API is not started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:41234 (no trailing slash)."""
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def status_url(self) -> str:
        return self.url + STATUS_PATH

    # -- what arrived --------------------------------------------------------------------------

    @property
    def statuses(self) -> list[Received]:
        """Accepted status updates, in arrival order."""
        with self._cond:
            return list(self._statuses)

    @property
    def heartbeats(self) -> list[Received]:
        """Accepted heartbeats, in arrival order."""
        with self._cond:
            return list(self._heartbeats)

    @property
    def requests(self) -> list[Received]:
        """Every POST to an API endpoint, whatever it was answered, in arrival order."""
        with self._cond:
            return list(self._requests)

    def requests_to(self, endpoint: str) -> list[Received]:
        path = ENDPOINTS[endpoint]
        return [request for request in self.requests if request.path == path]

    def statuses_for(self, job_id: str) -> list[Received]:
        return [status for status in self.statuses if status.job_id == job_id]

    def final_statuses(self) -> dict[str, Received]:
        """The last final (completed or failed) status accepted per job."""
        return {s.job_id: s for s in self.statuses if s.status in ("completed", "failed")}

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Wait until `predicate()` holds (re-checked at each arrival); False on timeout.

        The predicate runs without the API's lock held: a slow one (`settled(broker)` runs
        rabbitmqctl three times) would otherwise hold up every request the API is answering,
        heartbeats included, until the worker's read timeout.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                seen = len(self._requests)
            if predicate():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            with self._cond:
                # Also re-check now and then: the predicate may depend on more than arrivals.
                if len(self._requests) == seen:
                    self._cond.wait(min(left, 0.1))

    def clear(self) -> None:
        """Forget everything recorded so far."""
        with self._cond:
            self._statuses.clear()
            self._heartbeats.clear()
            self._requests.clear()
            self.status_count = 0
            self.heartbeat_count = 0

    # -- scripting -----------------------------------------------------------------------------

    def answer(
        self,
        code: int,
        *,
        endpoint: str = "status",
        times: int | None = None,
        retry_after: float | None = None,
        body: str | bytes = b"",
    ) -> None:
        """Answer `code` to the next `times` requests to `endpoint` (None: until changed)."""
        raw = body.encode() if isinstance(body, str) else body
        self._script(endpoint, _Behaviour(code, raw, retry_after, None, times))

    def hang(
        self, *, endpoint: str = "status", seconds: float | None = None, times: int | None = None
    ) -> None:
        """Hold requests to `endpoint` for `seconds` (None: until `release`), then answer 200."""
        held = math.inf if seconds is None else seconds
        self._script(endpoint, _Behaviour(hang_seconds=held, remaining=times))

    def delay(self, seconds: float, *, endpoint: str = "status") -> None:
        """Answer every request to `endpoint` `seconds` after it arrived, as a remote API would.

        Unlike `hang`, a delayed request is recorded when answered, answers follow the
        scripted code, and the server stays cheap: one timer per request, no task.
        """
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {list(ENDPOINTS)}")
        with self._cond:
            self._latency[endpoint] = max(0.0, seconds)
            self.peak_waiting = 0

    def release(self) -> None:
        """Answer every held request now (200) and stop hanging."""
        with self._cond:
            for name, behaviour in self._behaviours.items():
                if behaviour.hang_seconds is not None:
                    self._behaviours[name] = _Behaviour()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._release_held)

    def reset(self, endpoint: str | None = None) -> None:
        """Back to answering 200 (one endpoint, or all)."""
        for name in [endpoint] if endpoint else list(ENDPOINTS):
            self._script(name, _Behaviour())

    def refuse(self) -> None:
        """Stop listening and drop open connections: new connections are refused."""
        self._call(self._close_listener())

    def resume(self) -> None:
        """Listen again on the same port after `refuse`."""
        self._call(self._listen())

    def _script(self, endpoint: str, behaviour: _Behaviour) -> None:
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {list(ENDPOINTS)}")
        with self._cond:
            self._behaviours[endpoint] = behaviour

    # -- the server (event loop thread) --------------------------------------------------------

    def _call(self, coroutine: Any) -> Any:
        assert self._loop is not None, "stand-in API is not started"
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    async def _listen(self) -> None:
        if self._server is not None:
            return
        if self._release is None:
            self._release = asyncio.Event()
        loop = asyncio.get_running_loop()
        port = self._port if self._port is not None else self._requested_port
        self._server = await loop.create_server(
            lambda: _Connection(self),
            self.host,
            port,
            reuse_address=True,
            backlog=1024,
            ssl=self._ssl_context,
        )
        self._port = self._server.sockets[0].getsockname()[1]

    async def _close_listener(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for connection in list(self._connections):
            connection.abort()

    async def _shutdown(self) -> None:
        await self._close_listener()
        # Held requests would otherwise be destroyed pending when the loop closes.
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()

    def _release_held(self) -> None:
        if self._release is not None:
            self._release.set()
            self._release = asyncio.Event()

    def _behaviour_for(self, endpoint: str) -> _Behaviour:
        with self._cond:
            behaviour = self._behaviours[endpoint]
            if behaviour.remaining is not None:
                behaviour.remaining -= 1
                if behaviour.remaining <= 0:
                    self._behaviours[endpoint] = _Behaviour()
            return behaviour

    def _record(self, received: Received) -> None:
        with self._cond:
            self._requests.append(received)
            if received.answered < 300:
                if received.path == STATUS_PATH:
                    self._statuses.append(received)
                    self.status_count += 1
                else:
                    self._heartbeats.append(received)
                    self.heartbeat_count += 1
            self._cond.notify_all()

    def _handle(
        self,
        connection: "_Connection",
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
    ) -> None:
        if path in (STATUS_PATH, HEARTBEAT_PATH):
            if method != "POST":
                connection.send(_error(405, "use POST"))
                return
            if self._expected_auth and headers.get("authorization") != self._expected_auth:
                self._record(Received(path, headers, body, 401, connection=connection.number))
                connection.send(_error(401, "missing or wrong bearer token"))
                return
            endpoint = "status" if path == STATUS_PATH else "heartbeat"
            behaviour = self._behaviour_for(endpoint)
            if behaviour.hang_seconds is not None:
                connection.hold(self._held(connection, path, headers, body, behaviour))
                return
            received = Received(path, headers, body, behaviour.code, connection=connection.number)
            answer = _ACCEPTED if behaviour.code == 200 else behaviour.respond_bytes()
            latency = self._latency[endpoint]
            if latency > 0:
                self._count_waiting(+1)
                connection.answer_after(
                    latency, lambda: self._answer_late(connection, received, answer)
                )
                return
            self._record(received)
            connection.send(answer)
            return
        connection.send(self._control(method, path, body))

    async def _held(
        self,
        connection: "_Connection",
        path: str,
        headers: dict[str, str],
        body: bytes,
        behaviour: _Behaviour,
    ) -> None:
        assert self._release is not None and behaviour.hang_seconds is not None
        timeout = None if math.isinf(behaviour.hang_seconds) else behaviour.hang_seconds
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._release.wait(), timeout)
        # A client that gave up (read timeout) did not get this update through: don't count it.
        if connection.closed:
            return
        self._record(Received(path, headers, body, 200, connection=connection.number))
        connection.send(_ACCEPTED)

    def _answer_late(self, connection: "_Connection", received: Received, answer: bytes) -> None:
        self._count_waiting(-1)
        if connection.closed:
            return  # the client gave up (read timeout): this update did not get through
        self._record(received)
        connection.send(answer)

    def _count_waiting(self, change: int) -> None:
        with self._cond:
            self._waiting += change
            self.peak_waiting = max(self.peak_waiting, self._waiting)

    def _control(self, method: str, path: str, body: bytes) -> bytes:
        if method == "GET" and path == "/_stand-in/statuses":
            return _json(200, [s.to_json() for s in self.statuses])
        if method == "GET" and path == "/_stand-in/heartbeats":
            return _json(200, [h.to_json() for h in self.heartbeats])
        if method == "GET" and path == "/_stand-in/requests":
            return _json(200, [{**r.to_json(), "answered": r.answered} for r in self.requests])
        if method == "POST" and path == "/_stand-in/clear":
            self.clear()
            return _json(200, {"cleared": True})
        if method == "POST" and path == "/_stand-in/behaviour":
            try:
                self._apply_scripted(orjson.loads(body or b"{}"))
            except (ValueError, TypeError, KeyError) as exc:
                return _error(400, str(exc))
            return _json(200, {"ok": True})
        return _error(404, f"no such path: {method} {path}")

    def _apply_scripted(self, command: dict[str, Any]) -> None:
        """Apply one `/_stand-in/behaviour` command (see `main` for the JSON shape)."""
        action = command.get("action", "answer")
        endpoint = command.get("endpoint", "status")
        if action == "answer":
            self.answer(
                int(command["status"]),
                endpoint=endpoint,
                times=command.get("times"),
                retry_after=command.get("retryAfter"),
                body=command.get("body", ""),
            )
        elif action == "delay":
            self.delay(float(command["seconds"]), endpoint=endpoint)
        elif action == "hang":
            self.hang(endpoint=endpoint, seconds=command.get("seconds"), times=command.get("times"))
        elif action == "release":
            self.release()
        elif action == "reset":
            self.reset(command.get("endpoint"))
        elif action == "refuse":
            # Over HTTP nobody could resume a server that stopped listening: it needs a duration.
            seconds = float(command["seconds"])
            assert self._loop is not None
            self._loop.call_later(0.05, lambda: asyncio.ensure_future(self._close_listener()))
            self._loop.call_later(0.05 + seconds, lambda: asyncio.ensure_future(self._listen()))
        else:
            raise ValueError(f"unknown action {action!r}")


class _Connection(asyncio.Protocol):
    """One keep-alive client connection; requests on it are answered strictly in order."""

    def __init__(self, api: StandInApi) -> None:
        self._api = api
        api._opened += 1
        self.number = api._opened
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._busy = False  # a held request blocks the ones pipelined behind it
        self._close_after = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._api._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._api._connections.discard(self)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._process()

    def send(self, response: bytes) -> None:
        if self._transport is None or self.closed:
            return
        self._transport.write(response)
        if self._close_after:
            self._transport.close()

    def hold(self, answer_later: Any) -> None:
        self._busy = True
        task = asyncio.ensure_future(answer_later)
        task.add_done_callback(self._held_done)

    def _held_done(self, _task: "asyncio.Future[None]") -> None:
        self._busy = False
        self._process()

    def answer_after(self, seconds: float, answer: Callable[[], None]) -> None:
        """Hold this connection's next requests back while `answer` waits `seconds`."""
        self._busy = True
        asyncio.get_running_loop().call_later(seconds, self._late, answer)

    def _late(self, answer: Callable[[], None]) -> None:
        self._busy = False
        answer()
        self._process()

    def _process(self) -> None:
        while not self._busy and not self.closed:
            end_of_head = self._buffer.find(b"\r\n\r\n")
            if end_of_head < 0:
                if len(self._buffer) > _MAX_HEAD:
                    self._fail(413, "request head too large")
                return
            lines = bytes(self._buffer[:end_of_head]).decode("latin-1").split("\r\n")
            try:
                method, target, _version = lines[0].split(" ", 2)
            except ValueError:
                self._fail(400, "malformed request line")
                return
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if "chunked" in headers.get("transfer-encoding", ""):
                self._fail(411, "send a Content-Length")
                return
            length = int(headers.get("content-length", "0") or 0)
            if length > _MAX_BODY:
                self._fail(413, "body too large")
                return
            total = end_of_head + 4 + length
            if len(self._buffer) < total:
                return
            body = bytes(self._buffer[end_of_head + 4 : total])
            del self._buffer[:total]
            self._close_after = headers.get("connection", "").lower() == "close"
            self._api._handle(self, method, target.split("?", 1)[0], headers, body)

    def _fail(self, code: int, message: str) -> None:
        self._close_after = True
        self.send(_error(code, message))


def _json(code: int, payload: Any) -> bytes:
    body = orjson.dumps(payload)
    head = (
        f"HTTP/1.1 {code} {_REASONS.get(code, 'Answer')}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def _error(code: int, message: str) -> bytes:
    return _json(code, {"error": message})


def _format_seconds(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


def main(argv: Iterable[str] | None = None) -> None:
    """Serve until SIGINT/SIGTERM.

    Script it with `POST /_stand-in/behaviour`, e.g. `{"endpoint": "status", "action":
    "answer", "status": 500, "times": 3}`, `{"action": "answer", "status": 429, "retryAfter":
    2}`, `{"action": "delay", "seconds": 0.01}`, `{"action": "hang", "seconds": 5}`,
    `{"action": "release"}`, `{"action": "reset"}`,
    `{"action": "refuse", "seconds": 10}`. Read `GET /_stand-in/statuses`, `/heartbeats`,
    `/requests`; forget them with `POST /_stand-in/clear`.
    """
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--host", default="0.0.0.0")  # in a container, for the other services
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--token", default=None, help="require this bearer token")
    parser.add_argument("--max-records", type=int, default=100_000)
    args = parser.parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    api = StandInApi(args.host, args.port, required_token=args.token, max_records=args.max_records)
    with api:
        log.info("stand-in API listening on %s:%d", args.host, api.port)
        while not stopping.wait(1.0):
            pass
    log.info("stand-in API stopped")


if __name__ == "__main__":
    main()
