"""The asyncio keep-alive transport: reuse, a server that drops idle connections, errors, TLS."""

import asyncio
import socket
import ssl
import threading

import pytest
import requests
import trustme

from devtools.stand_in_api import StandInApi
from python_worker.adapters.http.transport import MAX_RESPONSE_BYTES, KeepAlivePool
from tests.support.http_wire import read_message


class Client:
    """A `KeepAlivePool` driven from a test: each call runs on the client's own event loop."""

    def __init__(self, max_connections: int = 4, ssl_context: ssl.SSLContext | None = None):
        self._loop = asyncio.new_event_loop()
        self.pool = KeepAlivePool(max_connections, ssl_context)

    def send(self, request: requests.PreparedRequest, timeout=(2, 5)) -> requests.Response:
        return self._loop.run_until_complete(self.pool.send(request, timeout))

    def send_all(self, requests_: list[requests.PreparedRequest]) -> list[requests.Response]:
        async def all_at_once() -> list[requests.Response]:
            return await asyncio.gather(*(self.pool.send(r, (2, 5)) for r in requests_))

        return self._loop.run_until_complete(all_at_once())

    def close(self) -> None:
        self.pool.close()
        self._loop.run_until_complete(asyncio.sleep(0))  # let the transports close
        self._loop.close()


@pytest.fixture
def client():
    made = Client()
    yield made
    made.close()


def prepared(url: str, body: bytes = b'{"jobId": "x"}') -> requests.PreparedRequest:
    request = requests.Request("POST", url, data=body, headers={"Content-Type": "application/json"})
    return request.prepare()


def post(client: Client, url: str, body: bytes = b'{"jobId": "x"}', **kwargs):
    return client.send(prepared(url, body), timeout=kwargs.pop("timeout", (2, 5)))


def test_sends_again_on_a_fresh_connection_when_the_server_dropped_the_idle_one(client):
    with StandInApi() as api:
        assert post(client, api.status_url).status_code == 200
        api.refuse()  # drops open connections
        api.resume()

        response = post(client, api.status_url, body=b'{"jobId": "after-drop"}')

        assert response.status_code == 200
        assert [s.job_id for s in api.statuses] == ["x", "after-drop"]


def test_returns_the_api_answer_and_body_for_an_error_status(client):
    with StandInApi() as api:
        api.answer(400, times=1, body='{"error": "bad jobId"}')

        response = post(client, api.status_url)

        assert response.status_code == 400
        assert response.json() == {"error": "bad jobId"}


def test_raises_connection_error_when_nothing_listens(client):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    with pytest.raises(requests.ConnectionError):
        post(client, f"http://127.0.0.1:{port}/api/jobs/status")


def test_raises_read_timeout_when_the_server_does_not_answer(client):
    with StandInApi() as api:
        api.hang(seconds=None)
        try:
            with pytest.raises(requests.ReadTimeout):
                post(client, api.status_url, timeout=(2, 0.3))
        finally:
            api.release()


def test_sends_requests_side_by_side_on_at_most_max_connections():
    many = Client(max_connections=4)
    try:
        with StandInApi() as api:
            api.hang(seconds=0.05)  # every answer takes a while, so requests overlap

            answers = many.send_all([prepared(api.status_url) for _ in range(40)])

            assert [a.status_code for a in answers] == [200] * 40
            assert len(api.statuses) == 40
            assert 1 < len({status.connection for status in api.statuses}) <= 4
    finally:
        many.close()


class ScriptedServer:
    """A TCP server that answers each request with the next scripted bytes, then maybe closes."""

    def __init__(
        self, answers: list[tuple[bytes, bool]], tls: ssl.SSLContext | None = None
    ) -> None:
        self._answers = answers
        self._tls = tls
        self.requests: list[bytes] = []
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        scheme = "https" if tls else "http"
        port = self._listener.getsockname()[1]
        self.url = f"{scheme}://localhost:{port}/api/jobs/status"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while self._answers:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            if self._tls is not None:
                try:
                    conn = self._tls.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError):
                    conn.close()  # the client refused our certificate
                    continue
            with conn:
                while self._answers:
                    request = read_message(conn)
                    if request is None:
                        break
                    head, body = request
                    self.requests.append(head + b"\r\n\r\n" + body)
                    answer, close = self._answers.pop(0)
                    conn.sendall(answer)
                    if close:
                        break

    def close(self) -> None:
        self._listener.close()


@pytest.fixture
def scripted():
    servers: list[ScriptedServer] = []

    def start(*answers: tuple[bytes, bool], tls: ssl.SSLContext | None = None) -> ScriptedServer:
        server = ScriptedServer(list(answers), tls)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def test_posts_many_requests_over_one_kept_alive_connection(client, scripted):
    server = scripted(*[OK_EMPTY] * 50)

    answers = [post(client, server.url).status_code for _ in range(50)]

    assert answers == [200] * 50
    assert server.connections == 1


def test_reads_a_chunked_answer_and_keeps_the_connection(client, scripted):
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    server = scripted((chunked, False), (b"HTTP/1.1 204 No Content\r\n\r\n", False))

    first = post(client, server.url)
    second = post(client, server.url)

    assert (first.status_code, first.content, first.reason) == (200, b"hello world", "OK")
    assert second.status_code == 204
    assert server.connections == 1


def test_reads_an_answer_whose_body_runs_until_the_server_closes(client, scripted):
    server = scripted(
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it", True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", False),
    )

    first = post(client, server.url)
    second = post(client, server.url)

    assert first.content == b"all of it"
    assert second.content == b"ok"
    assert server.connections == 2


def test_skips_an_interim_100_continue_answer(client, scripted):
    server = scripted(
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", False)
    )

    assert post(client, server.url).status_code == 201


def test_an_answer_cut_short_is_a_connection_error_not_a_partial_body(client, scripted):
    server = scripted((b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this", True))

    with pytest.raises(requests.ConnectionError, match="middle of its answer"):
        post(client, server.url)


def test_an_answer_larger_than_the_limit_is_a_connection_error(client, scripted):
    size = MAX_RESPONSE_BYTES + 1
    huge = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"x" * size
    server = scripted((huge, True))

    with pytest.raises(requests.ConnectionError, match="larger than"):
        post(client, server.url)


def test_garbage_instead_of_http_is_a_connection_error(client, scripted):
    server = scripted((b"SSH-2.0-OpenSSH_9.6\r\n\r\n", True))

    with pytest.raises(requests.ConnectionError):
        post(client, server.url)


def test_writes_the_request_line_host_headers_and_body_it_was_given(client, scripted):
    server = scripted((b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", False))

    post(client, server.url + "?a=1", body=b'{"jobId": "q"}')

    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    port = server.url.split(":")[2].split("/")[0]
    assert lines[0] == b"POST /api/jobs/status?a=1 HTTP/1.1"
    assert f"Host: localhost:{port}".encode() in lines
    assert b"Content-Type: application/json" in lines
    assert body == b'{"jobId": "q"}'


def test_refuses_a_header_value_with_a_line_break_set_after_preparing(client):
    request = requests.Request("POST", "http://127.0.0.1:9/x", data=b"{}").prepare()
    request.headers["Idempotency-Key"] = "a\r\nX-Evil: 1"

    with pytest.raises(requests.exceptions.InvalidHeader, match="line break"):
        client.send(request, timeout=(1, 1))


OK_EMPTY = (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", False)


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def tls_server_context(ca: trustme.CA, name: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(context)
    return context


def client_trusting(ca: trustme.CA) -> Client:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return Client(ssl_context=context)


def test_posts_over_tls_to_a_server_it_trusts_on_one_kept_alive_connection(scripted, ca):
    server = scripted(OK_EMPTY, OK_EMPTY, tls=tls_server_context(ca, "localhost"))

    trusting = client_trusting(ca)
    try:
        answers = [post(trusting, server.url).status_code for _ in range(2)]
    finally:
        trusting.close()

    assert answers == [200, 200]
    assert server.connections == 1
    assert server.requests[0].endswith(b'{"jobId": "x"}')


def test_refuses_a_server_certificate_it_does_not_trust(client, scripted, ca):
    server = scripted(OK_EMPTY, tls=tls_server_context(ca, "localhost"))
    # The client fixture trusts the system's store only.

    with pytest.raises(requests.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        post(client, server.url)
    assert server.requests == []


def test_refuses_a_certificate_issued_for_another_host_name(scripted, ca):
    server = scripted(OK_EMPTY, tls=tls_server_context(ca, "status.example.com"))

    trusting = client_trusting(ca)
    try:
        with pytest.raises(requests.ConnectionError):
            post(trusting, server.url)
    finally:
        trusting.close()
    assert server.requests == []
