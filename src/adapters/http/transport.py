"""A requests transport adapter on keep-alive `http.client` connections, for the status hot path."""

import http.client
import logging
import ssl
import threading
from collections.abc import Mapping
from urllib.parse import urlsplit

import requests
from requests.adapters import BaseAdapter
from requests.models import PreparedRequest, Response
from requests.structures import CaseInsensitiveDict

log = logging.getLogger(__name__)

Timeout = float | tuple[float, float] | tuple[float, None] | None

# Hand-written on purpose: the worker posts two status updates per job, and requests' default
# transport (urllib3's pool: connection checks, header dicts, retry bookkeeping) costs about
# 200 µs of CPU per POST here against 106 µs for http.client on the same keep-alive socket
# (measured in one run; see bench/). requests stays the API — PreparedRequest in, Response out,
# mounted like any adapter — only the wire underneath is thinner. It does what the status API
# needs and no more: no proxies, no streaming, no redirects (the reporter treats 3xx as errors).


class KeepAliveAdapter(BaseAdapter):
    """One persistent `http.client` connection per thread and host; TLS always verified.

    A connection the server closed while idle is noticed on the next request, which is sent
    again once on a fresh connection (every status POST carries an idempotency key, so a
    duplicate is harmless). Timeouts follow requests: `(connect, read)` or one number for both.
    """

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__()
        self._ssl_context = ssl_context or ssl.create_default_context()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[http.client.HTTPConnection] = []

    def send(
        self,
        request: PreparedRequest,
        stream: bool = False,
        timeout: Timeout = None,
        verify: bool | str = True,
        cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
        proxies: Mapping[str, str] | None = None,
    ) -> Response:
        connect_timeout, read_timeout = _split(timeout)
        url = urlsplit(request.url or "")
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        connection = self._connection(url.scheme, url.hostname or "", url.port)
        headers = dict(request.headers)
        reused = connection.sock is not None
        while True:
            if connection.sock is None:
                self._connect(connection, request, connect_timeout, read_timeout)
            try:
                connection.request(request.method or "GET", path, request.body, headers)
                raw = connection.getresponse()
                content = raw.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                connection.close()
                if not reused:
                    raise requests.ConnectionError(exc, request=request) from exc
                reused = False  # the server closed the idle keep-alive connection: once more
                continue
            except TimeoutError as exc:
                connection.close()
                raise requests.ReadTimeout(exc, request=request) from exc
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                raise requests.ConnectionError(exc, request=request) from exc
            if raw.will_close:
                connection.close()
            if log.isEnabledFor(logging.DEBUG):
                # The line names the request, never its headers (they carry the token).
                log.debug("%s %s%s -> %d", request.method, url.netloc, path, raw.status)
            return _response(request, raw, content)

    @staticmethod
    def _connect(
        connection: http.client.HTTPConnection,
        request: PreparedRequest,
        connect_timeout: float | None,
        read_timeout: float | None,
    ) -> None:
        connection.timeout = connect_timeout
        try:
            connection.connect()
        except TimeoutError as exc:
            connection.close()
            raise requests.ConnectTimeout(exc, request=request) from exc
        except OSError as exc:
            connection.close()
            raise requests.ConnectionError(exc, request=request) from exc
        connection.sock.settimeout(read_timeout)

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()

    def _connection(self, scheme: str, host: str, port: int | None) -> http.client.HTTPConnection:
        cache: dict[tuple[str, str, int | None], http.client.HTTPConnection] | None = getattr(
            self._local, "connections", None
        )
        if cache is None:
            cache = self._local.connections = {}
        key = (scheme, host, port)
        connection = cache.get(key)
        if connection is not None:
            return connection
        if scheme == "https":
            connection = http.client.HTTPSConnection(host, port, context=self._ssl_context)
        elif scheme == "http":
            connection = http.client.HTTPConnection(host, port)
        else:
            raise requests.exceptions.InvalidSchema(f"no transport for {scheme!r} URLs")
        cache[key] = connection
        with self._lock:
            self._connections.append(connection)
        return connection


def _split(timeout: Timeout) -> tuple[float | None, float | None]:
    if isinstance(timeout, tuple):
        return timeout[0], timeout[1]
    return timeout, timeout


def _response(request: PreparedRequest, raw: http.client.HTTPResponse, content: bytes) -> Response:
    response = Response()
    response.status_code = raw.status
    response.reason = raw.reason
    response.headers = CaseInsensitiveDict(raw.getheaders())
    response._content = content
    response.url = request.url or ""
    response.request = request
    response.encoding = "utf-8"
    return response
