"""HttpHeartbeatSink against the real stand-in orchestrator: fields, token, fast failures."""

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from devtools.stand_in_api import HEARTBEAT_PATH, StandInApi
from python_worker.adapters.http.heartbeat_sink import HttpHeartbeatSink
from python_worker.application.ports import Heartbeat, HeartbeatFailed
from tests.integration.http_fixtures import CANARY_TOKEN


@pytest.fixture
def api() -> Iterator[StandInApi]:
    with StandInApi() as server:
        yield server


def heartbeat() -> Heartbeat:
    return Heartbeat(
        worker_id="worker-1",
        worker_type="python",
        status="busy",
        capacity=4,
        current_load=2,
        processed_count=10,
        failed_count=1,
        success_rate=0.9,
        average_job_time_ms=12.5,
        timestamp=datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC),
        hostname="host-a",
        version="0.1.0",
    )


def test_posts_every_spec_field_with_token_when_orchestrator_is_up(api):
    sink = HttpHeartbeatSink(api.url + "/", token=CANARY_TOKEN)

    sink.send(heartbeat())

    (received,) = api.heartbeats
    assert received.path == HEARTBEAT_PATH
    assert received.body == {
        "workerId": "worker-1",
        "workerType": "python",
        "status": "busy",
        "capacity": 4,
        "currentLoad": 2,
        "processedCount": 10,
        "failedCount": 1,
        "successRate": 0.9,
        "averageJobTimeMs": 12.5,
        "timestamp": "2024-05-01T12:00:00.000Z",
        "hostname": "host-a",
        "version": "0.1.0",
        "brokerConnected": True,
        "outboxDepth": 0,
        "acceptingJobs": True,
        "problems": [],
    }
    assert received.headers["authorization"] == f"Bearer {CANARY_TOKEN}"
    assert received.headers["content-type"] == "application/json"
    assert sink.url == api.url + HEARTBEAT_PATH
    sink.close()


def test_raises_heartbeat_failed_quickly_when_orchestrator_refuses_connections(api):
    sink = HttpHeartbeatSink(api.url, token=CANARY_TOKEN)
    api.refuse()

    started = time.monotonic()
    with pytest.raises(HeartbeatFailed) as raised:
        sink.send(heartbeat())

    assert time.monotonic() - started < 5  # connect 2 s + read 3 s at most
    assert "\n" not in str(raised.value)
    assert CANARY_TOKEN not in str(raised.value)


def test_raises_heartbeat_failed_within_read_timeout_when_orchestrator_hangs(api):
    sink = HttpHeartbeatSink(api.url, read_timeout=0.3)
    api.hang(endpoint="heartbeat")

    started = time.monotonic()
    with pytest.raises(HeartbeatFailed):
        sink.send(heartbeat())

    assert time.monotonic() - started < 5
    api.release()


def test_raises_with_status_and_body_excerpt_when_orchestrator_answers_error(api):
    sink = HttpHeartbeatSink(api.url, token=CANARY_TOKEN)
    api.answer(503, endpoint="heartbeat", times=1, body='{"error": "orchestrator is restarting"}')

    with pytest.raises(HeartbeatFailed) as raised:
        sink.send(heartbeat())

    assert "503" in str(raised.value)
    assert "orchestrator is restarting" in str(raised.value)
    assert CANARY_TOKEN not in str(raised.value)
    assert CANARY_TOKEN not in repr(sink)


def test_raises_heartbeat_failed_when_token_is_wrong(tmp_path):
    with StandInApi(required_token="right-token") as api:
        sink = HttpHeartbeatSink(api.url, token=CANARY_TOKEN)

        with pytest.raises(HeartbeatFailed) as raised:
            sink.send(heartbeat())

    assert "401" in str(raised.value)
    assert CANARY_TOKEN not in str(raised.value)
