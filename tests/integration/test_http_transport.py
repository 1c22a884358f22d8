"""The keep-alive transport under requests: reuse, a server that drops idle connections, errors."""

import socket
import threading

import pytest
import requests

from adapters.http.stand_in_api import StandInApi
from adapters.http.transport import KeepAliveAdapter


@pytest.fixture
def session():
    with requests.Session() as session:
        session.mount("http://", KeepAliveAdapter())
        yield session


def post(session: requests.Session, url: str, body: bytes = b'{"jobId": "x"}', **kwargs):
    request = requests.Request("POST", url, data=body, headers={"Content-Type": "application/json"})
    return session.send(request.prepare(), timeout=kwargs.pop("timeout", (2, 5)), **kwargs)


def test_posts_many_requests_over_one_kept_alive_connection(session):
    with StandInApi() as api:
        answers = [post(session, api.status_url).status_code for _ in range(50)]

        assert answers == [200] * 50
        assert len({r.headers.get("x-connection-id") for r in api.statuses} - {None}) <= 1
        assert len(api.statuses) == 50


def test_sends_again_on_a_fresh_connection_when_the_server_dropped_the_idle_one(session):
    with StandInApi() as api:
        assert post(session, api.status_url).status_code == 200
        api.refuse()  # drops open connections
        api.resume()

        response = post(session, api.status_url, body=b'{"jobId": "after-drop"}')

        assert response.status_code == 200
        assert [s.job_id for s in api.statuses] == ["x", "after-drop"]


def test_returns_the_api_answer_and_body_for_an_error_status(session):
    with StandInApi() as api:
        api.answer(400, times=1, body='{"error": "bad jobId"}')

        response = post(session, api.status_url)

        assert response.status_code == 400
        assert response.json() == {"error": "bad jobId"}


def test_raises_connection_error_when_nothing_listens(session):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    with pytest.raises(requests.ConnectionError):
        post(session, f"http://127.0.0.1:{port}/api/jobs/status")


def test_raises_read_timeout_when_the_server_does_not_answer(session):
    with StandInApi() as api:
        api.hang(seconds=None)
        try:
            with pytest.raises(requests.ReadTimeout):
                post(session, api.status_url, timeout=(2, 0.3))
        finally:
            api.release()


def test_keeps_one_connection_per_thread(session):
    with StandInApi() as api:
        errors: list[BaseException] = []

        def hammer() -> None:
            try:
                for _ in range(30):
                    assert post(session, api.status_url).status_code == 200
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert errors == []
        assert len(api.statuses) == 120
