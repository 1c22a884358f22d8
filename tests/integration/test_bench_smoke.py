"""Keeps the benchmark working: a --quick run against the session's broker, no timing asserted."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import orjson
from bench.run import QUICK, run_benchmark

from tests.support.rabbitmq_node import Broker

EXPECTED_KEYS = {
    "stand_in_capacity": {"posts_per_s"},
    "broker_raw": {"msg_per_s", "messages", "seconds"},
    "http_raw_1": {"posts_per_s", "client_cpu_ms_per_post"},
    "http_raw_lanes": {"posts_per_s", "threads"},
    "http_session_1": {"posts_per_s", "client_cpu_ms_per_post"},
    "worker": {
        "jobs_per_s",
        "cpu_ms_per_job",
        "peak_rss_mb",
        "ratio_to_broker",
        "ratio_to_http_1",
        "ratio_to_http_lanes",
        "ratio_to_reference",
        "guarantees_ok",
    },
    "reference": {"jobs_per_s", "cpu_ms_per_job", "peak_rss_mb", "guarantees_ok"},
    "priority": {
        "priority_inversions",
        "high_latency_running_ms_p50",
        "high_latency_running_ms_p95",
        "high_latency_running_ms_max",
        "guarantees_ok",
    },
    "summary": {"medians", "guarantees_ok"},
}


def test_quick_benchmark_writes_every_measurement_and_passes_its_guarantee_checks(
    broker: Broker, tmp_path: Path
) -> None:
    options = dataclasses.replace(QUICK, out=tmp_path)
    output = io.StringIO()

    path = run_benchmark(options, broker, stream=output)

    records = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    by_measurement = {record["measurement"]: record for record in records}
    for measurement, keys in EXPECTED_KEYS.items():
        assert measurement in by_measurement, f"no {measurement} line in {path}"
        missing = keys - by_measurement[measurement].keys()
        assert not missing, f"{measurement} lacks {missing}"
    for measurement in ("worker", "reference", "priority", "summary"):
        record = by_measurement[measurement]
        assert record["guarantees_ok"] is True, record
    assert "guarantees (one final status per job, queues empty): all passed" in output.getvalue()
