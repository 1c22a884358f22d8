"""Hostile messages against one real worker process under background load.

Every bad message must be dead-lettered with a readable reason (a `failed` status with that
reason where an id can be read, the reason in the log otherwise), never crash or stall the
worker, and the good job published right behind it must complete promptly. At the end the
ledger must hold, the worker's memory must have stayed bounded and its heartbeats regular.
One worker, one stand-in API and one ledger serve the whole module.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from devtools.stand_in_api import StandInApi
from python_worker.application.messages import MAX_MESSAGE_BYTES
from tests.integration.conftest import PROJECT_EXCHANGES, PROJECT_QUEUES
from tests.support.ledger import Ledger, process_rss_mib
from tests.support.rabbitmq_node import Broker
from tests.support.worker_process import WorkerProcess

HEARTBEAT_INTERVAL = 1.0
PROMPTLY = 30  # seconds for the good job behind a bad one; generous for a shared 2-core box
RSS_BOUND_MIB = 200


@dataclass
class Hostile:
    broker: Broker
    api: StandInApi
    worker: WorkerProcess
    ledger: Ledger
    rss_mib: list[float] = field(default_factory=list)
    good: Iterator[int] = field(default_factory=itertools.count)

    def sample_rss(self) -> None:
        rss = process_rss_mib(self.worker.pid)
        if rss is not None:
            self.rss_mib.append(rss)

    def good_job_completes_promptly(self, queue: str = "job.low") -> None:
        job_id = f"good-{next(self.good)}"
        job = {"id": job_id, "type": "sum", "payload": {"numbers": [1, 2, 3]}}
        assert self.ledger.publish_job(queue, job, result={"value": 6})
        final = self.ledger.wait_for_final(job_id, PROMPTLY)
        assert final is not None, f"{job_id} did not finish within {PROMPTLY}s"
        assert final.status == "completed"
        assert self.worker.running(), self.worker.log()[-3000:]
        self.sample_rss()


@pytest.fixture(scope="module")
def hostile(rabbitmq_node: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    rabbitmq_node.ensure_running()
    rabbitmq_node.reset(queues=PROJECT_QUEUES, exchanges=PROJECT_EXCHANGES)
    workdir: Path = tmp_path_factory.mktemp("hostile")
    with StandInApi() as api:
        worker = WorkerProcess(
            workdir / "worker.log",
            rabbitmq_host=rabbitmq_node.host,
            rabbitmq_port=rabbitmq_node.port,
            rabbitmq_heartbeat=5,
            status_update_url=api.status_url,
            orchestrator_url=api.url,
            heartbeat_interval=HEARTBEAT_INTERVAL,
            status_outbox_dir=workdir / "outbox",
            worker_id="hostile",
            worker_capacity=4,
        ).start()
        ledger = Ledger(rabbitmq_node, api, prefix="load", logs=worker.log)
        env = Hostile(rabbitmq_node, api, worker, ledger)
        try:
            assert worker.wait_for_log("consuming job.high", 60), worker.log()
            env.good_job_completes_promptly()
            ledger.start_background(400, per_second=8)  # a steady trickle under every case
            yield env
        finally:
            ledger.close()
            worker.stop()
            print(f"----- worker log (tail)\n{worker.log()[-4000:]}")


def big_string_job(job_id: str, size: int) -> bytes:
    """A `length` job whose body is exactly `size` bytes."""

    def body(characters: int) -> bytes:
        payload = {"value": "x" * characters}
        return json.dumps({"id": job_id, "type": "length", "payload": payload}).encode()

    return body(size - len(body(0)))


def nested(depth: int, inner: bytes = b"1") -> bytes:
    return b"[" * depth + inner + b"]" * depth


# (queue, body, reason, id the worker can read or None)
BAD: dict[str, tuple[str, bytes | dict[str, Any], str, str | None]] = {
    "malformed JSON": (
        "job.high",
        b'{"id": "h1", "type": "sum", "payload": {"n',
        "not valid",
        None,
    ),
    "non-UTF-8 bytes": (
        "job.medium",
        b'{"id": "h2", "type": "sum", "x": "caf\xe9"}',
        "UTF-8",
        None,
    ),
    "a JSON array": ("job.low", b"[1, 2, 3]", "is a list, not a JSON object", None),
    "a JSON string": ("job.low", b'"please run me"', "is a string, not a JSON object", None),
    "no id": ("job.high", {"type": "sum"}, "id: is required", None),
    "no type": ("job.medium", {"id": "h-no-type"}, "type: is required", "h-no-type"),
    "unknown type": (
        "job.low",
        {"id": "h-unknown", "type": "teleport"},
        "unknown job",
        "h-unknown",
    ),
    "body 1 byte over 1 MiB": (
        "job.high",
        big_string_job("h-over", MAX_MESSAGE_BYTES + 1),
        f"the limit is {MAX_MESSAGE_BYTES} bytes",
        None,
    ),
    "a 10 MB string for a length check": (
        "job.medium",
        big_string_job("h-10mb", 10 * 1024 * 1024),
        f"the limit is {MAX_MESSAGE_BYTES} bytes",
        None,
    ),
    "100,000-deep nesting": ("job.low", nested(100_000), "depth limit exceeded", None),
    "100,000-deep nesting in a payload": (
        "job.low",
        b'{"id": "h-deep", "type": "reverse", "payload": {"data": {"a": '
        + nested(100_000)
        + b"}}}",
        "depth limit exceeded",
        None,
    ),
    "NaN": (
        "job.high",
        b'{"id": "h-nan", "type": "sum", "payload": {"numbers": [NaN]}}',
        "not valid JSON: it holds NaN",
        "h-nan",
    ),
    "Infinity": (
        "job.high",
        b'{"id": "h-inf", "type": "sum", "payload": {"numbers": [1, -Infinity]}}',
        "not valid JSON: it holds -Infinity",
        "h-inf",
    ),
    "a 5,000-digit integer": (
        "job.medium",
        b'{"id": "h-5000", "type": "sum", "payload": {"numbers": [' + b"7" * 5000 + b"]}}",
        "JSON",
        None,
    ),
    "count = 10**9": (
        "job.low",
        {"id": "h-count", "type": "sum", "payload": {"count": 10**9}},
        "the limit is 100000",
        "h-count",
    ),
    "a regex with a backreference": (
        "job.high",
        {"id": "h-backref", "type": "regex", "payload": {"value": "aa", "pattern": r"(a)\1"}},
        "does not compile",
        "h-backref",
    ),
    "id as a number": ("job.medium", {"id": 42, "type": "sum"}, "id: Input should be", None),
    "type as a list": (
        "job.medium",
        {"id": "h-type-list", "type": ["sum"]},
        "type: Input should be a valid string",
        "h-type-list",
    ),
    "payload as a string": (
        "job.low",
        {"id": "h-payload-str", "type": "sum", "payload": "numbers"},
        "payload: Input should be a valid dictionary",
        "h-payload-str",
    ),
    "numbers as an object": (
        "job.high",
        {"id": "h-numbers-obj", "type": "sum", "payload": {"numbers": {"a": 1}}},
        "payload.numbers must be a list",
        "h-numbers-obj",
    ),
    "a boolean among the numbers": (
        "job.high",
        {"id": "h-bool", "type": "sum", "payload": {"numbers": [1, True]}},
        "booleans are not numbers",
        "h-bool",
    ),
    "pattern as a list": (
        "job.medium",
        {"id": "h-pattern-list", "type": "regex", "payload": {"value": "a", "pattern": ["a"]}},
        "payload.pattern must be a string",
        "h-pattern-list",
    ),
    "min as a string": (
        "job.low",
        {"id": "h-min-str", "type": "length", "payload": {"value": "abc", "min": "1"}},
        "payload.min must be a whole number",
        "h-min-str",
    ),
    "data as a list": (
        "job.low",
        {"id": "h-data-list", "type": "uppercase", "payload": {"data": ["a"]}},
        "payload.data must be a JSON object",
        "h-data-list",
    ),
    "fields as a string": (
        "job.medium",
        {"id": "h-fields-str", "type": "filter", "payload": {"data": {}, "fields": "a"}},
        "payload.fields must be a list",
        "h-fields-str",
    ),
    "order as a number": (
        "job.high",
        {"id": "h-order-num", "type": "sort", "payload": {"numbers": [2, 1], "order": 1}},
        "payload.order must be",
        "h-order-num",
    ),
    "operation as a list": (
        "job.low",
        {"id": "h-op-list", "type": "calculate", "payload": {"operation": ["sum"], "numbers": [1]}},
        "is not a calculation",
        "h-op-list",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_message_is_dead_lettered_with_a_reason_and_the_next_good_job_completes(
    case: str, hostile: Hostile
) -> None:
    queue, body, reason, job_id = BAD[case]
    assert hostile.ledger.publish_bad(queue, body, reason, job_id=job_id)

    hostile.good_job_completes_promptly(queue)

    if job_id is None:
        assert hostile.worker.wait_for_log(reason, PROMPTLY), f"no log line with {reason!r}"
    else:
        final = hostile.ledger.wait_for_final(job_id, PROMPTLY)
        assert final is not None, f"no failed status for {job_id}"
        assert final.status == "failed"
        assert reason in final.body["errorMessage"]


def test_unknown_type_gets_only_a_failed_status(hostile: Hostile) -> None:
    job = {"id": "h-unknown-2", "type": "warp"}
    assert hostile.ledger.publish_failing("job.high", job, "unknown job type")
    assert hostile.ledger.wait_for_final("h-unknown-2", PROMPTLY) is not None
    assert [s.status for s in hostile.api.statuses_for("h-unknown-2")] == ["failed"]


def test_catastrophic_backtracking_pattern_answers_at_once_with_valid_false(
    hostile: Hostile,
) -> None:
    value = "a" * 50_000 + "!"
    job = {"id": "h-redos", "type": "regex", "payload": {"value": value, "pattern": "(a+)+$"}}
    assert hostile.ledger.publish_job("job.high", job, result={"valid": False})

    final = hostile.ledger.wait_for_final("h-redos", PROMPTLY)

    assert final is not None and final.status == "completed"
    assert final.body["result"]["valid"] is False
    # Backtracking would take longer than the universe has existed; linear time takes
    # milliseconds. The bound is loose so a busy machine cannot fail it.
    assert final.body["durationMs"] < 10_000, final.body["durationMs"]
    hostile.good_job_completes_promptly()


def test_an_output_18_times_its_input_completes_and_its_status_arrives(hostile: Hostile) -> None:
    # U+FDFA is one character that NFKC turns into 18: 100,000 of them become 1.8 million.
    job = {"id": "h-expand", "type": "normalize", "payload": {"data": {"s": "\ufdfa" * 100_000}}}
    assert hostile.ledger.publish_job("job.medium", job)

    final = hostile.ledger.wait_for_final("h-expand", PROMPTLY)

    assert final is not None and final.status == "completed"
    assert len(final.body["result"]["data"]["s"]) == 1_800_000
    hostile.good_job_completes_promptly()


def test_a_job_id_no_http_header_could_carry_completes_with_its_key_percent_encoded(
    hostile: Hostile,
) -> None:
    job_id = "h-€uro\r\nX-Injected: 1 100%"
    job = {"id": job_id, "type": "sum", "payload": {"numbers": [1, 2]}}
    assert hostile.ledger.publish_job("job.high", job)

    final = hostile.ledger.wait_for_final(job_id, PROMPTLY)

    assert final is not None and final.status == "completed"
    keys = [s.idempotency_key for s in hostile.api.statuses_for(job_id)]
    encoded = "h-%E2%82%ACuro%0D%0AX-Injected:%201%20100%25"
    assert keys == [f"{encoded}:running:1", f"{encoded}:completed:1"]
    assert all(s.headers.get("x-injected") is None for s in hostile.api.statuses_for(job_id))
    hostile.good_job_completes_promptly()


def test_afterwards_the_ledger_holds_memory_stayed_bounded_and_heartbeats_kept_coming(
    hostile: Hostile,
) -> None:
    settled = hostile.ledger.wait_until_settled(180)
    assert settled, hostile.ledger.report()
    hostile.ledger.assert_holds()

    hostile.sample_rss()
    rss = hostile.rss_mib
    print(f"worker VmRSS MiB: first {rss[0]:.1f}, peak {max(rss):.1f}, last {rss[-1]:.1f}")
    assert max(rss) < RSS_BOUND_MIB

    beats = [beat.at for beat in hostile.api.heartbeats]
    gaps = [later - earlier for earlier, later in itertools.pairwise(beats)]
    print(
        f"heartbeats: {len(beats)}, longest gap {max(gaps):.2f}s (interval {HEARTBEAT_INTERVAL}s)"
    )
    assert max(gaps) < 5 * HEARTBEAT_INTERVAL
    assert hostile.worker.running()
