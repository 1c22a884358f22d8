"""A private CA on disk for the TLS tests: its bundle, a client certificate, server contexts."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import trustme

from tests.support.http_wire import read_message

SERVER_NAMES = ("127.0.0.1", "localhost")
"""What the servers' certificates are issued for: where the stand-ins listen."""


@dataclass(frozen=True)
class PrivateCa:
    """A CA of trustme's, written to `directory` as an operator would install one."""

    ca: trustme.CA
    directory: Path

    @classmethod
    def create(cls, directory: Path) -> PrivateCa:
        directory.mkdir(parents=True, exist_ok=True)
        made = cls(trustme.CA(), directory)
        made.ca.cert_pem.write_to_path(made.ca_file)
        client = made.ca.issue_cert("python-worker.internal")
        client.cert_chain_pems[0].write_to_path(made.client_cert_file)
        client.private_key_pem.write_to_path(made.client_key_file)
        return made

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def client_cert_file(self) -> Path:
        return self.directory / "worker.crt"

    @property
    def client_key_file(self) -> Path:
        return self.directory / "worker.key"

    def server_context(self, *, require_client_cert: bool = False) -> ssl.SSLContext:
        """A server's context with a certificate this CA issued for SERVER_NAMES.

        `require_client_cert`: the server asks for a client certificate and accepts only
        those this CA issued (ssl.CERT_REQUIRED), as a mutual-TLS API does.
        """
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert(*SERVER_NAMES).configure_cert(context)
        if require_client_cert:
            context.verify_mode = ssl.CERT_REQUIRED
            self.ca.configure_trust(context)
        return context


class BlockingTlsServer:
    """A one-thread TLS server that answers every request with 200, on blocking sockets.

    Unlike an asyncio server (the stand-in API), OpenSSL on a blocking socket sends its alert
    when it refuses a handshake, as most servers do ("certificate required" when a client
    certificate was wanted and none came): the tests see both behaviours.
    """

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self._listener.getsockname()[1]}"
        self.requests: list[bytes] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self._listener.accept()
            except OSError:
                return  # closed
            raw.settimeout(10)
            connection = self._context.wrap_socket(
                raw, server_side=True, do_handshake_on_connect=False
            )
            try:
                connection.do_handshake()
            except (ssl.SSLError, OSError):
                # Refused; OpenSSL has written its alert. Close as real servers do (lingering):
                # closing with the client's request unread would send a reset that can
                # overtake the alert.
                _linger_close(socket.socket(fileno=connection.detach()))
                continue
            with connection, contextlib.suppress(OSError):
                message = read_message(connection)
                if message is not None:
                    self.requests.append(message[1])
                    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    def close(self) -> None:
        # shutdown wakes the thread blocked in accept(); close alone does not on Linux.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(timeout=10)


def _linger_close(sock: socket.socket) -> None:
    """Half-close, read until the peer closes too (or 2 s pass), then close."""
    with sock, contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(2)
        while sock.recv(65536):
            pass
