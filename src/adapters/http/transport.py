"""A requests transport adapter on kept-alive sockets, for the status hot path."""

import logging
import socket
import ssl
import threading
from collections.abc import Mapping
from urllib.parse import urlsplit

import httptools
import requests
from requests.adapters import BaseAdapter
from requests.models import PreparedRequest, Response
from requests.structures import CaseInsensitiveDict

log = logging.getLogger(__name__)

Timeout = float | tuple[float, float] | tuple[float, None] | None

MAX_RESPONSE_BYTES = 1 << 20
"""Largest response (headers and body) taken from the API; a bigger one is a connection error."""

_RECV_BYTES = 65_536

# Hand-written on purpose, below requests: the worker posts two status updates per job, and
# the per-request CPU of the usual transports is most of the worker's own work. Measured on
# one keep-alive connection to the stand-in API (bench/): urllib3's pool under requests
# ≈ 290 µs, http.client ≈ 130 µs (its header handling and the email parser for the answer),
# this adapter ≈ 40 µs. The request head is written here (a few header lines); the answer is
# parsed by httptools (llhttp, the parser behind Node.js and uvicorn), not by hand.
# requests stays the API — PreparedRequest in, Response out, mounted like any adapter. It does
# what the status API needs and no more: no proxies, no streaming, no redirects (the reporter
# treats a 3xx as an error), no request bodies other than bytes.


class KeepAliveAdapter(BaseAdapter):
    """One persistent connection per thread and URL; TLS always verified (`verify` is ignored).

    A connection the server closed while idle is noticed on the next request, which is sent
    again once on a fresh connection (every status POST carries an idempotency key, so a
    duplicate is harmless). Timeouts follow requests: `(connect, read)` or one number for both.
    """

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__()
        self._ssl_context = ssl_context or ssl.create_default_context()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[_Connection] = []

    def send(
        self,
        request: PreparedRequest,
        stream: bool = False,
        timeout: Timeout = None,
        verify: bool | str = True,
        cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
        proxies: Mapping[str, str] | None = None,
    ) -> Response:
        connection = self._connection(request.url or "")
        message = connection.encode(request)
        reused = connection.is_open
        while True:
            try:
                if not connection.is_open:
                    connection.open(*_split(timeout))
                answer = connection.exchange(message)
            except _IdleConnectionClosed as exc:
                connection.close()
                if reused:
                    reused = False  # the server closed the idle keep-alive connection: once more
                    continue
                raise requests.ConnectionError(exc.__cause__ or exc, request=request) from exc
            except _ConnectTimeout as exc:
                connection.close()
                raise requests.ConnectTimeout(exc.__cause__, request=request) from exc
            except TimeoutError as exc:
                connection.close()
                raise requests.ReadTimeout(exc, request=request) from exc
            except (OSError, httptools.HttpParserError, _BadAnswer) as exc:
                connection.close()
                raise requests.ConnectionError(exc, request=request) from exc
            if not answer.keep_alive:
                connection.close()
            if log.isEnabledFor(logging.DEBUG):
                # The line names the request, never its headers (they carry the token).
                log.debug("%s %s -> %d", request.method, connection.where, answer.status)
            return answer.response(request)

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()

    def _connection(self, url: str) -> "_Connection":
        cache: dict[str, _Connection] | None = getattr(self._local, "connections", None)
        if cache is None:
            cache = self._local.connections = {}
        connection = cache.get(url)
        if connection is None:
            connection = cache[url] = _Connection(url, self._ssl_context)
            with self._lock:
                self._connections.append(connection)
        return connection


class _IdleConnectionClosed(ConnectionError):
    """Raised when a connection ends before the first byte of an answer."""


class _ConnectTimeout(Exception):
    """Raised when no connection could be made within the connect timeout."""


class _BadAnswer(Exception):
    """Raised when the server's answer is cut short or too large."""


class _Connection:
    """One socket to one URL's host, used by one thread at a time."""

    def __init__(self, url: str, ssl_context: ssl.SSLContext) -> None:
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
        self._ssl_context = ssl_context
        self._sock: socket.socket | None = None

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    def encode(self, request: PreparedRequest) -> bytes:
        """The request as bytes on the wire: request line, headers, body."""
        lines = [f"{request.method} {self.path} HTTP/1.1\r\nHost: {self.where}\r\n"]
        for name, value in request.headers.items():
            if "\r" in value or "\n" in value:
                # requests checks headers it prepares; this catches values set afterwards.
                raise requests.exceptions.InvalidHeader(f"header {name!r} contains a line break")
            lines.append(f"{name}: {value}\r\n")
        lines.append("\r\n")
        try:
            head = "".join(lines).encode("latin-1")
        except UnicodeEncodeError as exc:
            raise requests.exceptions.InvalidHeader(
                f"a header of the request is not Latin-1 text: {exc}"
            ) from None
        body = request.body
        if body is None:
            return head
        if isinstance(body, str):
            body = body.encode()
        if not isinstance(body, bytes):
            raise TypeError("this transport sends bytes or str bodies only")
        return head + body

    def open(self, connect_timeout: float | None, read_timeout: float | None) -> None:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=connect_timeout)
        except TimeoutError as exc:
            raise _ConnectTimeout() from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls:
                sock = self._ssl_context.wrap_socket(sock, server_hostname=self.host)
            sock.settimeout(read_timeout)
        except BaseException:
            sock.close()
            raise
        self._sock = sock

    def exchange(self, message: bytes) -> "_Answer":
        """Send one request and read its whole answer."""
        sock = self._sock
        assert sock is not None
        answer = _Answer()
        parser = httptools.HttpResponseParser(answer)
        answer.parser = parser
        try:
            sock.sendall(message)
            data = sock.recv(_RECV_BYTES)
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise _IdleConnectionClosed() from exc
        if not data:
            raise _IdleConnectionClosed("the server closed the connection")
        received = 0
        while True:
            received += len(data)
            if received > MAX_RESPONSE_BYTES:
                raise _BadAnswer(f"answer larger than {MAX_RESPONSE_BYTES} bytes")
            parser.feed_data(data)
            if answer.complete:
                return answer
            data = sock.recv(_RECV_BYTES)
            if not data:
                return answer.ended_by_close()

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()


class _Answer:
    """httptools' callbacks collect one answer here."""

    __slots__ = ("body", "complete", "headers", "headers_done", "keep_alive", "parser", "reason")

    def __init__(self) -> None:
        self.parser: httptools.HttpResponseParser | None = None
        self.reason = b""
        self.headers: list[tuple[str, str]] = []
        self.body: list[bytes] = []
        self.headers_done = False
        self.complete = False
        self.keep_alive = True

    @property
    def status(self) -> int:
        assert self.parser is not None
        return int(self.parser.get_status_code())

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        self.headers_done = True
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

    def ended_by_close(self) -> "_Answer":
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


def _split(timeout: Timeout) -> tuple[float | None, float | None]:
    if isinstance(timeout, tuple):
        return timeout[0], timeout[1]
    return timeout, timeout
