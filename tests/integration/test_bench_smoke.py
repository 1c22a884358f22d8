"""Keeps the benchmark working: a --quick run against the session's broker, no timing asserted."""

from __future__ import annotations

import dataclasses
import io
import subprocess
from pathlib import Path

import orjson
import pytest

from bench.run import QUICK, baseline_tree, run_benchmark
from tests.support.rabbitmq_node import Broker

_REPO = Path(__file__).resolve().parents[2]
_THROUGHPUT = {"jobs_per_s", "cpu_ms_per_job", "peak_rss_mb", "cpu_cores_used", "guarantees_ok"}
_AT_LATENCY = _THROUGHPUT | {"latency_ms", "stand_in_peak_waiting"}
_VS_ZERO = {"ratio_to_0ms", "cpu_ratio_to_0ms", "ratio_to_broker", "ratio_to_http_1"}

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
        "ratio_to_baseline",
        "cpu_ratio_to_baseline",
        "guarantees_ok",
    },
    "baseline": _THROUGHPUT | {"ref", "commit", "ratio_to_broker"},
    "reference": {"jobs_per_s", "cpu_ms_per_job", "peak_rss_mb", "guarantees_ok"},
    # QUICK keeps the default latencies: 0 ms is `worker`, then 10 and 50 ms.
    "worker_latency_10": _AT_LATENCY | _VS_ZERO | {"ratio_to_reference", "cpu_ratio_to_reference"},
    "worker_latency_50": _AT_LATENCY | _VS_ZERO,
    "reference_latency_10": _AT_LATENCY,
    "priority": {
        "priority_inversions",
        "high_latency_running_ms_p50",
        "high_latency_running_ms_p95",
        "high_latency_running_ms_max",
        "guarantees_ok",
    },
    "baseline_priority": {
        "priority_inversions_by_worker_timestamp",
        "single_high_start_ms_p95",
        "guarantees_ok",
    },
    "summary": {"medians", "guarantees_ok"},
}
REDIS_KEYS = {
    "redis_broker_raw": {"msg_per_s"},
    "redis_worker": _THROUGHPUT | {"ratio_to_broker", "ratio_to_rabbitmq_worker"},
    "redis_worker_latency_10": _AT_LATENCY | {"ratio_to_0ms", "ratio_to_rabbitmq_worker"},
    "redis_priority": {"priority_inversions", "high_latency_running_ms_p95", "guarantees_ok"},
}
"""The same run on Redis, where redis-server is installed (check.sh installs it)."""


def test_quick_benchmark_writes_every_measurement_and_passes_its_guarantee_checks(
    broker: Broker, tmp_path: Path
) -> None:
    # The baseline is this repository's HEAD: a real worktree, the same code path as any ref.
    options = dataclasses.replace(QUICK, out=tmp_path, baseline="HEAD")
    output = io.StringIO()

    path = run_benchmark(options, broker, stream=output)

    records = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    by_measurement = {record["measurement"]: record for record in records}
    expected = EXPECTED_KEYS | (REDIS_KEYS if "redis" in options.brokers else {})
    for measurement, keys in expected.items():
        assert measurement in by_measurement, f"no {measurement} line in {path}"
        missing = keys - by_measurement[measurement].keys()
        assert not missing, f"{measurement} lacks {missing}"
        if "guarantees_ok" in keys:
            assert by_measurement[measurement]["guarantees_ok"] is True, by_measurement[measurement]
    assert by_measurement["worker_latency_10"]["latency_ms"] == 10
    assert by_measurement["reference_latency_10"]["latency_ms"] == 10
    medians = by_measurement["summary"]["medians"]
    for measurement in (
        "baseline",
        "worker_latency_10",
        "worker_latency_50",
        "reference_latency_10",
    ):
        assert "jobs_per_s" in medians[measurement], medians.keys()
    table = output.getvalue()
    assert "guarantees (one final status per job, queues empty): all passed" in table
    for label in (
        "worker jobs/s, API answers after 10 ms",
        "worker jobs/s, API answers after 50 ms",
        "ratio to 0 ms",
        "reference jobs/s, API after 10 ms",
        "ratio to reference at 10 ms",
        "baseline worker jobs/s (HEAD)",
        "ratio to baseline worker",
        "baseline inversions by worker timestamps",
    ):
        assert label in table, table
    assert not _baseline_worktrees(), "the baseline worktree was left behind"


def _baseline_worktrees() -> list[str]:
    """Worktrees of this repository that `bench.run --baseline` made and did not remove."""
    listing = subprocess.run(
        ["git", "-C", str(_REPO), "worktree", "list", "--porcelain"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line for line in listing.splitlines() if "pw-bench-baseline-" in line]


def test_the_baseline_worktree_is_removed_when_the_run_fails() -> None:
    with pytest.raises(RuntimeError, match="boom"), baseline_tree("HEAD") as baseline:
        assert (baseline.tree / "src" / "bootstrap.py").exists()
        tree = baseline.tree
        raise RuntimeError("boom")
    assert not tree.exists()
    assert not _baseline_worktrees()
