"""The alert and recording rules in deploy/prometheus: valid, unit-tested, on real metric names."""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from devtools.stand_in_api import StandInApi
from tests.integration.worker_fixtures import Publish, StartWorker, sum_job
from tests.support.rabbitmq_node import free_port

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool is missing: run scripts/ensure-prometheus.sh", pytrace=False)
    return subprocess.run(
        [tool, *args], cwd=RULES, capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_finds_the_rules_valid():
    checked = promtool("check", "rules", "python-worker.rules.yml")

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


def test_the_rules_pass_their_unit_tests_when_promtool_runs_them():
    tested = promtool("test", "rules", "python-worker.rules.test.yml")

    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_worker_metric_the_rules_use_is_one_a_running_worker_exposes(
    api: StandInApi, start_worker: StartWorker, publish: Publish
):
    port = free_port()
    start_worker(metrics_port=port)
    publish([("job.low", sum_job("scraped"))])
    assert api.wait_for(lambda: "scraped" in api.final_statuses(), 60)

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        exposed = set(re.findall(r"^([a-z_:]+)[ {]", answer.read().decode(), re.MULTILINE))
    rules = (RULES / "python-worker.rules.yml").read_text()
    # Recorded series (`instance:worker_jobs:rate5m`) are the rules' own, not the worker's.
    used = set(re.findall(r"(?<![:\w])(worker_[a-z_]+)(?![:\w])", rules))

    assert used, "the rules name no worker metric"
    assert used <= exposed, f"not exposed by the worker: {sorted(used - exposed)}"
    assert "process_resident_memory_bytes" in exposed
