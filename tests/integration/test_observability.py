"""What an operator watches: logs without secrets, JSON logs, /metrics, /healthz and /readyz."""

import json
import re
import socket
import urllib.error
import urllib.request
from pathlib import Path

from devtools.stand_in_api import StandInApi
from tests.integration.worker_fixtures import Publish, StartWorker, sum_job
from tests.support.rabbitmq_node import RabbitMQNode

CANARY_PASSWORD = "canary-pw-5b1e0c"
CANARY_TOKEN = "canary-token-93d7aa"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_secrets_never_reach_the_log_even_at_debug_through_a_reconnect(
    controllable_node: RabbitMQNode, tmp_path: Path, start_worker: StartWorker, publish: Publish
):
    controllable_node.rabbitmqctl("add_user", "canary", CANARY_PASSWORD)
    controllable_node.rabbitmqctl("set_permissions", "canary", ".*", ".*", ".*")
    with StandInApi(required_token=CANARY_TOKEN) as secured_api:
        worker = start_worker(
            log_level="DEBUG",
            rabbitmq_username="canary",
            rabbitmq_password=CANARY_PASSWORD,
            status_api_token=CANARY_TOKEN,
            orchestrator_token=CANARY_TOKEN,
            status_update_url=secured_api.status_url,
            orchestrator_url=secured_api.url,
        )
        publish(("job.low", sum_job(f"job-{n}")) for n in range(20))
        assert secured_api.wait_for(lambda: len(secured_api.final_statuses()) == 20, 60)
        controllable_node.close_all_connections("canary test")
        assert worker.wait_for_log("reconnecting to", 30)
        publish(("job.low", sum_job(f"after-{n}")) for n in range(5))
        assert secured_api.wait_for(lambda: len(secured_api.final_statuses()) == 25, 60)
        assert secured_api.heartbeats

        worker.terminate()

    log = worker.log()
    assert "DEBUG" in log
    assert CANARY_PASSWORD not in log
    assert CANARY_TOKEN not in log


def test_json_log_format_writes_one_json_object_per_line(
    api: StandInApi, start_worker: StartWorker, publish: Publish
):
    worker = start_worker(log_format="json", metrics_log_interval=0.5)
    publish([("job.high", sum_job("json-1"))])
    assert api.wait_for(lambda: "json-1" in api.final_statuses(), 60)
    assert worker.wait_for_log('"metrics load=', 30)

    assert worker.terminate() == 0

    records = [json.loads(line) for line in worker.log().splitlines() if line.strip()]
    outcome = next(r for r in records if r.get("job_id") == "json-1" and r.get("status"))
    assert outcome["status"] == "completed"
    assert outcome["queue"] == "job.high"
    assert outcome["job_type"] == "sum"
    assert "duration_ms" in outcome
    assert outcome["attempt"] == 1
    assert {"time", "level", "logger", "message"} <= outcome.keys()


def test_metrics_endpoint_counts_jobs_and_readyz_follows_the_broker(
    controllable_node: RabbitMQNode, api: StandInApi, start_worker: StartWorker, publish: Publish
):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    start_worker(metrics_port=port, metrics_host="127.0.0.1")
    publish(("job.medium", sum_job(f"m-{n}")) for n in range(7))
    publish([("job.low", {"id": "bad-1", "type": "average", "payload": {"numbers": []}})])
    assert api.wait_for(lambda: len(api.final_statuses()) == 8, 60)
    assert api.wait_for(lambda: get(base + "/readyz")[0] == 200, 30)

    status, metrics = get(base + "/metrics")

    assert status == 200
    assert re.search(r'worker_jobs_total\{outcome="completed",type="sum"\} 7\.0', metrics)
    assert re.search(r'worker_jobs_total\{outcome="failed",type="average"\} 1\.0', metrics)
    assert re.search(r'worker_job_duration_seconds_count\{type="sum"\} 7\.0', metrics)
    assert "worker_queue_tier_wait_seconds_bucket" in metrics
    assert re.search(r"^worker_jobs_in_flight 0\.0$", metrics, re.MULTILINE)
    assert re.search(r"^worker_status_outbox_depth 0\.0$", metrics, re.MULTILINE)
    assert re.search(r"^worker_broker_connected 1\.0$", metrics, re.MULTILINE)
    assert get(base + "/healthz")[0] == 200

    controllable_node.stop_app()
    try:
        assert api.wait_for(lambda: get(base + "/readyz")[0] == 503, 30)
        status, body = get(base + "/readyz")
        assert json.loads(body) == {"ready": False, "problems": ["not connected to the broker"]}
        assert get(base + "/healthz")[0] == 200
    finally:
        controllable_node.start_app()

    assert api.wait_for(lambda: get(base + "/readyz")[0] == 200, 60)
    _, metrics = get(base + "/metrics")
    assert re.search(r"^worker_broker_reconnects_total 1\.0$", metrics, re.MULTILINE)
