"""The printing commands behind a pipe whose reader goes away: they end like any Unix tool.

`python-worker process jobs.jsonl | head -1` must end at once when `head` has its line, as if
SIGPIPE killed it (status 141 in the shell, -13 from subprocess), and print no traceback.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from devtools.stand_in_api import StandInApi
from tests.support.rabbitmq_node import Broker
from tests.support.worker_process import CLI, clean_environment

ENDS_WITHIN = 120  # seconds; generous for a shared 2-core machine
SHELL_SIGPIPE_STATUS = 128 + signal.SIGPIPE
JOBS = 3000


@dataclass(frozen=True)
class Command:
    """One CLI invocation, and how many lines its reader takes before it goes away."""

    args: list[str]
    env: dict[str, str]
    lines_read: int


def environment(extra: dict[str, str]) -> dict[str, str]:
    return clean_environment(**extra)


def write_jobs(path: Path, count: int) -> Path:
    with path.open("w") as out:
        for n in range(count):
            job = {"id": f"pipe-{n}", "type": "sum", "payload": {"numbers": [n, 1, 2]}}
            out.write(json.dumps({**job, "priority": ("high", "medium", "low")[n % 3]}) + "\n")
    return path


@pytest.fixture
def services_env(broker: Broker, api: StandInApi, tmp_path: Path) -> dict[str, str]:
    return {
        "RABBITMQ_HOST": broker.host,
        "RABBITMQ_PORT": str(broker.port),
        "STATUS_UPDATE_URL": api.status_url,
        "ORCHESTRATOR_URL": api.url,
        "STATUS_OUTBOX_DIR": str(tmp_path / "outbox"),
    }


def process_command(tmp_path: Path, services_env: dict[str, str]) -> Command:
    # Every status update is one flushed line: thousands of them, far beyond a pipe's buffer.
    jobs = write_jobs(tmp_path / "jobs.jsonl", JOBS)
    return Command(["process", str(jobs)], {}, lines_read=1)


def demo_command(tmp_path: Path, services_env: dict[str, str]) -> Command:
    # One table row per job: well over the 64 KiB a pipe holds before the writer must wait.
    jobs = write_jobs(tmp_path / "demo-jobs.jsonl", JOBS)
    return Command(["demo", "--jobs", str(jobs)], {}, lines_read=1)


def check_command(tmp_path: Path, services_env: dict[str, str]) -> Command:
    # One flushed line per check, each after a connection to the broker or an API.
    return Command(["check"], services_env, lines_read=1)


def publish_command(tmp_path: Path, services_env: dict[str, str]) -> Command:
    # `publish` says one line, at the end: its reader goes away before it comes.
    jobs = write_jobs(tmp_path / "publish-jobs.jsonl", 200)
    return Command(["publish", str(jobs)], services_env, lines_read=0)


COMMANDS: dict[str, Callable[[Path, dict[str, str]], Command]] = {
    "process": process_command,
    "demo": demo_command,
    "check": check_command,
    "publish": publish_command,
}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_ends_as_if_killed_by_sigpipe_without_a_traceback_when_its_reader_goes_away(
    name: str, tmp_path: Path, services_env: dict[str, str]
) -> None:
    command = COMMANDS[name](tmp_path, services_env)
    stderr_path = tmp_path / f"{name}.stderr"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [*CLI, *command.args],
            env=environment(command.env),
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    assert process.stdout is not None
    first_lines = [process.stdout.readline() for _ in range(command.lines_read)]

    process.stdout.close()
    try:
        returncode = process.wait(ENDS_WITHIN)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(30)
        pytest.fail(f"`{name}` still ran {ENDS_WITHIN}s after its reader went away")

    stderr_text = stderr_path.read_text(errors="replace")
    assert all(line.endswith(b"\n") for line in first_lines), first_lines
    assert "Traceback" not in stderr_text, stderr_text[-3000:]
    assert "BrokenPipeError" not in stderr_text, stderr_text[-3000:]
    assert returncode == -signal.SIGPIPE, (returncode, stderr_text[-3000:])


@pytest.mark.parametrize("name", list(COMMANDS))
def test_exits_141_in_a_pipefail_shell_when_the_next_command_stops_reading(
    name: str, tmp_path: Path, services_env: dict[str, str]
) -> None:
    command = COMMANDS[name](tmp_path, services_env)
    reader = "head -1" if command.lines_read else "true"
    script = (
        f"{shlex.join([*CLI, *command.args])} 2>{shlex.quote(str(tmp_path / 'err'))} | {reader}"
    )

    shell = subprocess.Popen(
        ["bash", "-o", "pipefail", "-c", script],
        env=environment(command.env),
        stdout=subprocess.PIPE,
        start_new_session=True,  # one process group: a hanging command can be put down with it
    )
    try:
        stdout, _ = shell.communicate(timeout=ENDS_WITHIN)
    except subprocess.TimeoutExpired:
        os.killpg(shell.pid, signal.SIGKILL)
        shell.communicate(timeout=30)
        pytest.fail(f"`{name} | {reader}` still ran after {ENDS_WITHIN}s")

    stderr_text = (tmp_path / "err").read_text(errors="replace")
    assert "Traceback" not in stderr_text, stderr_text[-3000:]
    assert shell.returncode == SHELL_SIGPIPE_STATUS, (shell.returncode, stderr_text[-3000:])
    assert len(stdout.splitlines()) == command.lines_read
