"""An asyncio HTTP/1.1 transport for requests' `PreparedRequest`: kept-alive connections."""

import asyncio
import logging
import ssl
from typing import cast
from urllib.parse import urlsplit

import httptools
import requests
from requests.models import PreparedRequest, Response
from requests.structures import CaseInsensitiveDict

log = logging.getLogger(__name__)

Timeout = float | tuple[float | None, float | None] | None

MAX_RESPONSE_BYTES = 1 << 20
"""Largest response (headers and body) taken from the API; a bigger one is a connection error."""

_RECV_BYTES = 65_536

# Hand-written on purpose, below requests. The worker posts two status updates per job to an
# API on another machine, 5-50 ms away: with one blocking request per thread, throughput is
# threads / (2 x latency) whatever the CPU. On one event loop a request in flight costs a
# socket and a future, not a thread. Measured by bench/http_mechanisms.py, 450 requests in
# flight against the stand-in answering after 0, 10 and 50 ms, CPU per POST in the client:
#   450 threads, one blocking request each (the old lanes, as many as needed) 0.12-0.15 ms;
#   this pool on asyncio's loop 0.07-0.08 ms; on uvloop 0.06-0.07 ms;
#   HTTP/1.1 pipelining, 4 connections: 0.03 ms at 0 ms, but servers answer a connection's
#   requests one after another, so at 10 ms it carried 370 POSTs/s and at 50 ms 78.
# asyncio's own loop, not uvloop: uvloop's 10-15 % less CPU per POST came with 1.3-2 MiB more
# resident memory per process, and memory is the bound that binds here (bench/: peak RSS).
# The request head is written here (a few header lines); answers are parsed by httptools
# (llhttp, the parser behind Node.js and uvicorn), not by hand. requests stays the API:
# PreparedRequest in and Response out for `send`, requests' exceptions everywhere; `exchange`
# is the reporter's hot path, bytes in and a parsed `Answer` out. It does what the status API
# needs and no more: no proxies, no streaming, no redirects (the reporter treats a 3xx as an
# error), no request bodies other than bytes.


class KeepAlivePool:
    """Kept-alive connections to the origins it is asked for, at most `max_connections` at once.

    Used from one event loop. A request takes an idle connection to its origin (the most
    recently used first) or opens one; `max_connections` bounds the requests in flight, and
    callers beyond it wait their turn. A connection the server closed while idle is noticed on
    the next request, which is sent again once on a fresh connection (every status POST carries
    an idempotency key, so a duplicate is harmless). Timeouts follow requests: `(connect, read)`
    or one number for both; the read timeout bounds the wait for the whole answer. TLS is
    always verified, against `ssl_context` (the system's trust store by default).
    """

    def __init__(self, max_connections: int = 450, ssl_context: ssl.SSLContext | None = None):
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        # Made when the first https origin is: the system's trust store costs 2.5 MiB of
        # resident memory, which a worker posting over plain http should not carry.
        self._ssl_context = ssl_context
        self._slots = asyncio.Semaphore(max_connections)
        self._buffer = memoryview(bytearray(_RECV_BYTES))  # every connection reads into it
        self._origins: dict[str, _Origin] = {}

    async def send(self, request: PreparedRequest, timeout: Timeout = None) -> Response:
        """Send `request` and read its answer; raises requests' exceptions, like an adapter."""
        url = request.url or ""
        message = self._origin(url).encode(request)
        answer = await self.exchange(url, message, timeout, request=request)
        return answer.response(request)

    async def exchange(
        self,
        url: str,
        message: bytes,
        timeout: Timeout = None,
        *,
        request: PreparedRequest | None = None,
    ) -> "Answer":
        """Send `message` (a whole request, as `request_head` and a body make it) to `url`'s
        origin and parse its answer; the hot path, without building requests' objects."""
        origin = self._origin(url)
        connect_timeout, read_timeout = _split(timeout)
        async with self._slots:
            connection = origin.idle_connection()
            reused = connection is not None
            while True:
                try:
                    if connection is None:
                        connection = await origin.connect(connect_timeout, self._buffer)
                    answer = await connection.exchange(message, read_timeout)
                except _IdleConnectionClosed as exc:
                    if connection is not None:
                        connection.close()
                    connection = None
                    if reused:
                        reused = False  # the server closed the idle keep-alive connection
                        continue
                    raise requests.ConnectionError(exc.__cause__ or exc, request=request) from exc
                except _ConnectTimeout as exc:
                    raise requests.ConnectTimeout(exc.__cause__, request=request) from exc
                except TimeoutError as exc:
                    _close(connection)
                    raise requests.ReadTimeout(exc, request=request) from exc
                except (OSError, httptools.HttpParserError, _BadAnswer) as exc:
                    _close(connection)
                    raise requests.ConnectionError(exc, request=request) from exc
                except BaseException:
                    # Cancelled mid-request: the connection is out of step with its server.
                    _close(connection)
                    raise
                break
            if answer.keep_alive and not connection.closed:
                origin.idle.append(connection)
            else:
                connection.close()
        if log.isEnabledFor(logging.DEBUG):
            # The line names the request, never its headers (they carry the token).
            log.debug("POST %s -> %d", origin.where, answer.status)
        return answer

    def close(self) -> None:
        """Close every idle connection (those in use close when their request ends)."""
        for origin in self._origins.values():
            while origin.idle:
                origin.idle.pop().close()

    def _origin(self, url: str) -> "_Origin":
        origin = self._origins.get(url)
        if origin is None:
            origin = self._origins[url] = _Origin(url, self._ssl_context)
            if origin.tls and origin.ssl_context is None:
                origin.ssl_context = self._ssl_context = ssl.create_default_context()
        return origin


class _IdleConnectionClosed(ConnectionError):
    """Raised when a connection ends before the first byte of an answer."""


class _ConnectTimeout(Exception):
    """Raised when no connection could be made within the connect timeout."""


class _BadAnswer(Exception):
    """Raised when the server's answer is cut short or too large."""


class _Origin:
    """One URL's scheme, host and port, the request line's path, and its idle connections."""

    def __init__(self, url: str, ssl_context: ssl.SSLContext | None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise requests.exceptions.InvalidSchema(f"no transport for {parts.scheme!r} URLs")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.tls else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        default_port = parts.port is None or parts.port == (443 if self.tls else 80)
        self.where = host if default_port else f"{host}:{self.port}"
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.ssl_context = ssl_context
        self.idle: list[_Connection] = []

    def idle_connection(self) -> "_Connection | None":
        while self.idle:
            connection = self.idle.pop()
            if not connection.closed:
                return connection
        return None

    def head(self, request: PreparedRequest) -> bytes:
        """The request line and header lines, without the blank line that ends them."""
        lines = [f"{request.method} {self.path} HTTP/1.1\r\nHost: {self.where}\r\n"]
        for name, value in request.headers.items():
            if "\r" in value or "\n" in value:
                # requests checks headers it prepares; this catches values set afterwards.
                raise requests.exceptions.InvalidHeader(f"header {name!r} contains a line break")
            lines.append(f"{name}: {value}\r\n")
        try:
            return "".join(lines).encode("latin-1")
        except UnicodeEncodeError as exc:
            raise requests.exceptions.InvalidHeader(
                f"a header of the request is not Latin-1 text: {exc}"
            ) from None

    def encode(self, request: PreparedRequest) -> bytes:
        """The request as bytes on the wire: request line, headers, body."""
        head = self.head(request) + b"\r\n"
        body = request.body
        if body is None:
            return head
        if isinstance(body, str):
            body = body.encode()
        if not isinstance(body, bytes):
            raise TypeError("this transport sends bytes or str bodies only")
        return head + body

    async def connect(self, timeout: float | None, buffer: memoryview) -> "_Connection":
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _transport, connection = await loop.create_connection(
                    lambda: _Connection(loop, buffer),
                    self.host,
                    self.port,
                    ssl=self.ssl_context if self.tls else None,
                    server_hostname=self.host if self.tls else None,
                )
        except TimeoutError as exc:
            raise _ConnectTimeout() from exc
        return connection


class _Connection(asyncio.BufferedProtocol):
    """One connection; one request at a time, its answer fed to httptools as it arrives.

    A buffered protocol: the loop reads into the pool's one buffer, which httptools consumes
    at once. A plain Protocol gets a new `bytes` per read, allocated at asyncio's 256 KiB read
    size and then shrunk, for answers of a few hundred bytes.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, buffer: memoryview) -> None:
        self._loop = loop
        self._buffer = buffer
        self._transport: asyncio.Transport | None = None
        self.closed = False
        self._answer = Answer()
        self._received = 0
        self._done: asyncio.Future[Answer] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio and uvloop both set TCP_NODELAY on their TCP transports (uvloop's are not
        # asyncio.Transport subclasses, hence the cast).
        self._transport = cast(asyncio.Transport, transport)

    async def exchange(self, message: bytes, read_timeout: float | None) -> "Answer":
        """Send one request and wait for its whole answer."""
        assert self._transport is not None
        if self.closed:
            raise _IdleConnectionClosed("the server closed the connection")
        self._answer = Answer()
        self._received = 0
        done: asyncio.Future[Answer] = self._loop.create_future()
        self._done = done
        self._transport.write(message)
        timer = None
        if read_timeout is not None:
            timer = self._loop.call_later(read_timeout, _expire, done, read_timeout)
        try:
            answer = await done
        finally:
            if timer is not None:
                timer.cancel()
            self._done = None
            self._answer.parser = None  # the parser and the answer refer to each other
        return answer

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        self._received_data(self._buffer[:nbytes])

    def _received_data(self, data: memoryview) -> None:
        done = self._done
        if done is None or done.done():
            self.close()  # bytes nobody asked for: this connection is out of step
            return
        self._received += len(data)
        if self._received > MAX_RESPONSE_BYTES:
            self._fail(done, _BadAnswer(f"answer larger than {MAX_RESPONSE_BYTES} bytes"))
            return
        answer = self._answer
        try:
            answer.feed(data)
        except httptools.HttpParserError as exc:
            self._fail(done, exc)
            return
        if answer.complete:
            done.set_result(answer)

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost decides what the answer was

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        done = self._done
        if done is None or done.done():
            return
        if self._received == 0:
            error = _IdleConnectionClosed("the server closed the connection")
            error.__cause__ = exc
            done.set_exception(error)
            return
        try:
            done.set_result(self._answer.ended_by_close())
        except _BadAnswer as error:
            done.set_exception(error)

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    def _fail(self, done: "asyncio.Future[Answer]", error: Exception) -> None:
        done.set_exception(error)
        self.close()


def _expire(done: "asyncio.Future[Answer]", seconds: float) -> None:
    if not done.done():
        done.set_exception(TimeoutError(f"no answer within {seconds} s"))


def _close(connection: _Connection | None) -> None:
    if connection is not None:
        connection.close()


class Answer:
    """One answer as httptools' callbacks collect it: status, headers, body."""

    __slots__ = (
        "body",
        "complete",
        "headers",
        "headers_done",
        "keep_alive",
        "parser",
        "reason",
        "status",
    )

    def __init__(self) -> None:
        self.parser: httptools.HttpResponseParser | None = None
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[str, str]] = []
        self.body: list[bytes] = []
        self.headers_done = False
        self.complete = False
        self.keep_alive = True

    def feed(self, data: memoryview) -> None:
        if self.parser is None:
            self.parser = httptools.HttpResponseParser(self)
        self.parser.feed_data(data)

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        self.headers_done = True
        self.status = int(self.parser.get_status_code())
        # llhttp answers this only while the message is being parsed, not after it.
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, chunk: bytes) -> None:
        self.body.append(chunk)

    def on_message_complete(self) -> None:
        if 100 <= self.status < 200:
            # An interim answer (100 Continue, 103 Early Hints): the real one follows.
            self.reason, self.headers, self.body, self.headers_done = b"", [], [], False
            return
        self.complete = True

    def header(self, name: str) -> str | None:
        """The first header of that name (any case), or None."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)

    def text(self) -> str:
        return b"".join(self.body).decode("utf-8", "replace")

    def ended_by_close(self) -> "Answer":
        """The server closed the connection: a complete answer only if its body runs to EOF."""
        names = {name.lower() for name, _ in self.headers}
        if not self.headers_done or "content-length" in names or "transfer-encoding" in names:
            raise _BadAnswer("the server closed the connection in the middle of its answer")
        self.complete = True
        self.keep_alive = False
        return self

    def response(self, request: PreparedRequest) -> Response:
        response = Response()
        response.status_code = self.status
        response.reason = self.reason.decode("latin-1")
        response.headers = CaseInsensitiveDict(self.headers)
        response._content = b"".join(self.body)
        response.url = request.url or ""
        response.request = request
        response.encoding = "utf-8"
        return response


def request_head(request: PreparedRequest) -> bytes:
    """`request`'s request line and headers as sent, without the blank line that ends them:
    a caller posting many like it adds its own last headers and body to these bytes."""
    return _Origin(request.url or "", None).head(request)


def _split(timeout: Timeout) -> tuple[float | None, float | None]:
    if isinstance(timeout, tuple):
        return timeout[0], timeout[1]
    return timeout, timeout
