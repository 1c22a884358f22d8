"""The `python-worker` command as a user runs it: a real process, real environment variables."""

import json
import re
import socket
import subprocess

import pytest

from python_worker.bootstrap import setting_names
from tests.support.worker_process import CLI, clean_environment


def run_cli(*args: str, env: dict[str, str] | None = None, stdin: str | None = None):
    environment = clean_environment(**(env or {}))
    return subprocess.run(
        [*CLI, *args],
        check=False,
        input=stdin,
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("WORKER_CAPACITY", "zero", "WORKER_CAPACITY='zero'"),
        ("WORKER_CAPACITY", "0", "greater than or equal to 1"),
        ("HEARTBEAT_INTERVAL", "-1", "HEARTBEAT_INTERVAL='-1'"),
        ("RABBITMQ_PORT", "70000", "RABBITMQ_PORT='70000'"),
        ("STATUS_UPDATE_URL", "ftp://x", "http:// or https://"),
        ("LOG_FORMAT", "xml", "LOG_FORMAT='xml'"),
        ("RABBITMQ_HOST", " , ", "must name at least one host"),
        ("QUEUE_TYPE", "stream", "QUEUE_TYPE='stream'"),
    ],
)
def test_exits_2_with_one_line_naming_the_variable_when_a_setting_is_bad(variable, value, expected):
    result = run_cli("run", env={variable: value})

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"configuration error: {variable}")
    assert expected in lines[0]
    assert "(example: " in lines[0]
    assert "Traceback" not in result.stderr


def test_never_shows_a_bad_secret_value_in_the_configuration_error():
    result = run_cli("run", env={"STATUS_API_TOKEN": "", "WORKER_CAPACITY": "x"})

    assert result.returncode == 2
    assert "WORKER_CAPACITY" in result.stderr


def test_process_prints_running_and_final_status_for_each_job_as_json_lines():
    jobs = "\n".join(
        json.dumps(job)
        for job in [
            {"id": "a", "type": "sum", "payload": {"numbers": [1, 2, 3]}},
            {"id": "b", "type": "email", "payload": {"value": "x@example.com"}},
            {"id": "c", "type": "uppercase", "payload": {"data": {"k": "v"}}},
        ]
    )

    result = run_cli("process", "-", stdin=jobs)

    assert result.returncode == 0, result.stderr
    updates = [json.loads(line) for line in result.stdout.splitlines()]
    by_job: dict[str, list[dict]] = {}
    for update in updates:
        by_job.setdefault(update["jobId"], []).append(update)
    assert [u["status"] for u in by_job["a"]] == ["running", "completed"]
    assert by_job["a"][1]["result"] == {"operation": "sum", "value": 6, "count": 3}
    assert by_job["b"][1]["result"]["valid"] is True
    assert by_job["c"][1]["result"] == {"operation": "uppercase", "data": {"k": "V"}}


def test_process_handles_every_line_of_a_mixed_file_and_exits_0(tmp_path):
    lines = [
        json.dumps({"id": "good", "type": "max", "payload": {"numbers": [1, 5]}}),
        "this is not json",
        json.dumps({"id": "no-type"}),
        json.dumps([1, 2, 3]),
        json.dumps({"id": "unknown", "type": "fly"}),
        "",
        json.dumps({"id": "bad-payload", "type": "sum", "payload": {"numbers": [True]}}),
    ]
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("\n".join(lines) + "\n")

    result = run_cli("process", str(jobs))

    assert result.returncode == 0, result.stderr
    finals = {
        update["jobId"]: update
        for update in map(json.loads, result.stdout.splitlines())
        if update["status"] != "running"
    }
    assert finals["good"]["status"] == "completed"
    assert {job: finals[job]["status"] for job in ("no-type", "unknown", "bad-payload")} == {
        "no-type": "failed",
        "unknown": "failed",
        "bad-payload": "failed",
    }
    assert all(finals[job]["errorMessage"] for job in ("no-type", "unknown", "bad-payload"))
    assert "dead-lettered line 2: message body is not valid UTF-8 JSON" in result.stderr
    assert "dead-lettered line 4: message body is a list, not a JSON object" in result.stderr
    assert "handled 6 job(s): 1 completed, 5 failed (5 dead-lettered)" in result.stderr


def test_process_reports_a_missing_file_without_a_traceback(tmp_path):
    result = run_cli("process", str(tmp_path / "missing.jsonl"))

    assert result.returncode == 1
    assert "cannot read" in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_starts_every_high_job_before_any_medium_or_low_job():
    result = run_cli("demo")

    assert result.returncode == 0, result.stderr
    order_line = next(line for line in result.stdout.splitlines() if line.startswith("start order"))
    assert order_line.startswith("start order by queue: job.high x")
    assert order_line.count("->") == 2
    assert "metrics: processed=" in result.stdout


def no_broker() -> dict[str, str]:
    """Settings naming a broker nobody listens on: what a command does before connecting."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return {"RABBITMQ_HOST": "127.0.0.1", "RABBITMQ_PORT": str(port)}


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ('{"id": "a", "type": "sum"}\n{"id": "b", "type": \n', "line 2: bad JSON ("),
        ('{"id": "a", "type": "sum", "priority": "urgent"}\n', "priority 'urgent' is not one of"),
        ('["not", "a", "job"]\n', "line 1: expected a JSON object (a job), got an array"),
    ],
    ids=["bad-json", "bad-priority", "not-an-object"],
)
def test_publish_sends_nothing_and_names_the_line_when_a_line_is_bad_even_with_no_broker(
    tmp_path, lines, expected
):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(lines)

    result = run_cli("publish", str(jobs), env=no_broker())

    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert expected in result.stderr
    assert result.stderr.rstrip().endswith("nothing published")
    assert result.stdout == ""


def test_publish_reads_stdin_and_says_bad_json_for_a_payload_that_is_not_json():
    from_stdin = run_cli("publish", "-", env=no_broker(), stdin='{"id": "x", "priority": 1}\n')
    from_flag = run_cli("publish", "--type", "sum", "--payload", "{numbers", env=no_broker())

    assert from_stdin.returncode == 2
    assert "stdin line 1: priority 1 is not one of high, medium, low" in from_stdin.stderr
    assert from_flag.returncode == 2
    assert "--payload: bad JSON (" in from_flag.stderr


def test_publish_says_the_broker_is_unreachable_in_one_line_when_every_line_is_good(tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"id": "a", "type": "sum", "priority": "high"}\n')

    result = run_cli("publish", str(jobs), env=no_broker())

    assert result.returncode == 1
    assert "unreachable" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read"),
        ('{"id": "a", "type": "sum", "priority": "high"}\nnot json\n', "line 2: bad JSON ("),
        ('{"id": "a", "type": "sum", "priority": "HIGH"}\n', "priority 'HIGH' is not one of"),
    ],
    ids=["missing-file", "bad-line", "bad-priority"],
)
def test_demo_stops_with_one_line_naming_the_problem_when_its_jobs_file_is_bad(
    tmp_path, content, expected
):
    jobs = tmp_path / "jobs.jsonl"
    if content is not None:
        jobs.write_text(content)

    result = run_cli("demo", "--jobs", str(jobs))

    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("python-worker demo: ")
    assert expected in result.stderr


COMMAND_NAMES = ["run", "process", "demo", "publish", "check", "dead-letters"]


@pytest.mark.parametrize("command", COMMAND_NAMES)
def test_help_says_what_the_command_does_and_names_only_real_settings(command):
    result = run_cli(command, "--help")

    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "Reads " in text
    described = text.split("positional arguments:")[0].split("options:")[0]
    words = re.findall(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*(?:_\*|\b)", described)
    named = {word for word in words if "_" in word}
    assert named, text
    for name in named - {"NAME_FILE"}:
        if name.endswith("*"):
            assert any(setting.startswith(name[:-1]) for setting in setting_names()), name
        else:
            assert name in setting_names(), name
