"""Reading one HTTP/1.1 message off a raw socket, for test servers and the benchmark's client."""

from __future__ import annotations

import socket


def read_message(sock: socket.socket) -> tuple[bytes, bytes] | None:
    """Head (without the blank line) and body of the next message sized by Content-Length.

    None when the peer closes the connection before a whole head has arrived. Only what the
    test servers and the stand-in speak: no chunked bodies, a Content-Length on every message.
    """
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head, body
