"""A small threaded TCP proxy that tests switch between pass, delay, black-hole and reset."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from urllib.parse import urlsplit, urlunsplit

_CHUNK = 65536
_POLL = 0.1  # how often blocked pumps look at the mode / closing flag


def _rst_close(sock: socket.socket) -> None:
    # SO_LINGER on with timeout 0 makes close() send RST instead of FIN: the peer sees
    # "connection reset by peer", like a crashed middlebox or a killed host.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class TcpProxy:
    """Listens on a free 127.0.0.1 port and forwards every connection to (host, port).

    Modes (switch any time, they apply to existing and new connections):
    pass_through(); delay(seconds) per forwarded chunk; black_hole() keeps connections open but
    silently drops bytes both ways; reset() RSTs all current connections and new ones until the
    mode is changed again.
    """

    def __init__(self, target_host: str, target_port: int, amqp_url: str | None = None) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(_POLL)
        self.host = "127.0.0.1"
        self.port: int = self._listener.getsockname()[1]
        self._upstream_url = amqp_url
        self._mode = "pass"
        self._delay = 0.0
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._closing = threading.Event()
        self._acceptor = threading.Thread(target=self._accept_loop, name="tcp-proxy", daemon=True)
        self._acceptor.start()

    @classmethod
    def for_broker(cls, broker: object) -> TcpProxy:
        """Proxy in front of a tests.support.rabbitmq_node.Broker (keeps its credentials)."""
        return cls(broker.host, broker.port, broker.amqp_url)  # type: ignore[attr-defined]

    @property
    def amqp_url(self) -> str:
        """The upstream AMQP URL with host:port pointing at this proxy."""
        if self._upstream_url is None:
            raise ValueError("proxy was not created for a broker (use TcpProxy.for_broker)")
        parts = urlsplit(self._upstream_url)
        auth = parts.netloc.rpartition("@")[0]
        netloc = f"{auth}@{self.host}:{self.port}" if auth else f"{self.host}:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    # -- modes ---------------------------------------------------------------------------------

    def pass_through(self) -> None:
        self._mode, self._delay = "pass", 0.0

    def delay(self, seconds: float) -> None:
        self._mode, self._delay = "delay", seconds

    def black_hole(self) -> None:
        self._mode = "black_hole"

    def reset(self) -> None:
        """RST every open connection; connections accepted while in this mode get RST too."""
        self._mode = "reset"
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for client, upstream in pairs:
            _rst_close(client)
            _rst_close(upstream)

    @property
    def connection_count(self) -> int:
        with self._lock:
            return len(self._pairs)

    # -- plumbing ------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._mode == "reset":
                _rst_close(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                # Broker down: the client sees what it would see without the proxy.
                _rst_close(client)
                continue
            for sock in (client, upstream):
                sock.settimeout(_POLL)
            with self._lock:
                self._pairs.append((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not self._closing.is_set():
                try:
                    data = src.recv(_CHUNK)
                except TimeoutError:
                    continue
                if not data:
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)  # pass the half-close on
                    return
                mode = self._mode
                if mode == "black_hole":
                    continue
                if mode == "delay":
                    time.sleep(self._delay)
                dst.sendall(data)
        except OSError:
            # Either side went away (or reset() closed it): tear the pair down.
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.close()

    def close(self) -> None:
        self._closing.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self._acceptor.join(timeout=2)
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for client, upstream in pairs:
            client.close()
            upstream.close()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
