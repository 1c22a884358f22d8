"""The stand-in API as out-of-process users see it: scripted and read over HTTP."""

import time
from collections.abc import Iterator

import pytest
import requests

from devtools.stand_in_api import StandInApi
from tests.support.waiting import wait_until


@pytest.fixture
def api() -> Iterator[StandInApi]:
    with StandInApi() as server:
        yield server


def post_status(api: StandInApi, job_id: str) -> requests.Response:
    return requests.post(
        api.status_url,
        json={"jobId": job_id, "status": "running"},
        headers={"Idempotency-Key": f"{job_id}:running:1"},
        timeout=5,
    )


def test_lists_accepted_statuses_over_http_when_asked(api):
    post_status(api, "job-1")

    listed = requests.get(api.url + "/_stand-in/statuses", timeout=5).json()

    assert [entry["body"]["jobId"] for entry in listed] == ["job-1"]
    assert listed[0]["headers"]["idempotency-key"] == "job-1:running:1"


def test_answers_scripted_code_for_next_requests_when_scripted_over_http(api):
    requests.post(
        api.url + "/_stand-in/behaviour",
        json={"action": "answer", "status": 429, "times": 2, "retryAfter": 3},
        timeout=5,
    )

    answers = [post_status(api, f"job-{n}") for n in range(3)]

    assert [a.status_code for a in answers] == [429, 429, 200]
    assert answers[0].headers["Retry-After"] == "3"
    assert [s.job_id for s in api.statuses] == ["job-2"]


def test_refuses_connections_then_listens_again_when_told_to_over_http(api):
    requests.post(
        api.url + "/_stand-in/behaviour", json={"action": "refuse", "seconds": 1}, timeout=5
    )
    time.sleep(0.2)

    with pytest.raises(requests.ConnectionError):
        post_status(api, "job-1")
    assert wait_until(lambda: _answers(api), timeout=10)


def test_answers_401_when_required_token_is_missing():
    with StandInApi(required_token="secret") as api:
        answer = post_status(api, "job-1")

    assert answer.status_code == 401
    assert api.statuses == []


def _answers(api: StandInApi) -> bool:
    try:
        return post_status(api, "job-2").status_code == 200
    except requests.ConnectionError:
        return False
