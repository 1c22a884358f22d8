"""`scripts/dev-stack.sh`: a newcomer's local stack, brought up, used by a real worker, and stopped.

The stack runs on free ports (the defaults 5672/8080/8081 may be taken on a shared machine) and
in a temp dir; what it prints is the environment the worker is then given, so the test also
proves the printed lines are right.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.rabbitmq_node import EXTERNAL_BROKER_REASON, free_port
from tests.support.waiting import wait_until
from tests.support.worker_process import CLI, WorkerProcess, clean_environment

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "dev-stack.sh"

pytestmark = pytest.mark.skipif(bool(os.environ.get("RABBITMQ_URL")), reason=EXTERNAL_BROKER_REASON)


def _stack(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *command.split()],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _exports(output: str) -> dict[str, str]:
    """The variables of the `export A=1 B=2` lines the script printed."""
    found: dict[str, str] = {}
    for line in output.splitlines():
        if line.startswith("export "):
            for word in shlex.split(line)[1:]:
                key, _, value = word.partition("=")
                found[key] = value
    return found


def _get_json(url: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(url, timeout=5) as answer:
        records: list[dict[str, Any]] = json.load(answer)
        return records


def _pid(path: Path) -> int:
    return int(path.read_text().strip())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in _state(pid)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


@pytest.fixture
def stack_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    # ERL_ too: the stack's node must not take the suite's Erlang settings.
    env = {key: value for key, value in clean_environment().items() if not key.startswith("ERL_")}
    env.update(
        DEV_STACK_DIR=str(tmp_path / "stack"),
        DEV_STACK_AMQP_PORT=str(free_port()),
        DEV_STACK_DIST_PORT=str(free_port()),
        DEV_STACK_STATUS_PORT=str(free_port()),
        DEV_STACK_ORCHESTRATOR_PORT=str(free_port()),
    )
    yield env
    _stack("down --wipe", env)  # whatever the test left running


def test_up_serves_a_worker_and_down_stops_everything(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    up = _stack("up", stack_env)
    assert up.returncode == 0, up.stdout + up.stderr
    printed = _exports(up.stdout)
    status_port = stack_env["DEV_STACK_STATUS_PORT"]
    orchestrator_port = stack_env["DEV_STACK_ORCHESTRATOR_PORT"]
    assert printed == {
        "RABBITMQ_HOST": "127.0.0.1",
        "RABBITMQ_PORT": stack_env["DEV_STACK_AMQP_PORT"],
        "STATUS_UPDATE_URL": f"http://127.0.0.1:{status_port}/api/jobs/status",
        "ORCHESTRATOR_URL": f"http://127.0.0.1:{orchestrator_port}",
    }
    assert _stack("up", stack_env).returncode == 0, "a second `up` reuses what runs"

    state = Path(stack_env["DEV_STACK_DIR"])
    pids = {
        name: _pid(state / f"{name}.pid") for name in ("rabbitmq", "status-api", "orchestrator")
    }
    worker_env = {**printed, "WORKER_ID": "dev-stack-worker", "HEARTBEAT_INTERVAL": "1"}
    worker = WorkerProcess(tmp_path / "worker.log", cwd=tmp_path, **worker_env).start()
    try:
        published = subprocess.run(
            [*CLI, "publish", "--type", "sum", "--payload", '{"numbers": [1, 2]}', "--id", "dev-1"],
            env={**stack_env, **printed},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert published.returncode == 0, published.stdout + published.stderr

        def completed() -> bool:
            records = _get_json(f"http://127.0.0.1:{status_port}/_stand-in/statuses")
            return any(
                r["body"].get("jobId") == "dev-1" and r["body"].get("status") == "completed"
                for r in records
            )

        assert wait_until(completed, timeout=60), f"no completed status:\n{worker.log()}"
        heartbeats = f"http://127.0.0.1:{orchestrator_port}/_stand-in/heartbeats"
        assert wait_until(lambda: bool(_get_json(heartbeats)), timeout=30), worker.log()
        assert worker.terminate() == 0, worker.log()
        assert "heartbeat failed" not in worker.log(), "heartbeats went somewhere else"
    finally:
        worker.stop()

    down = _stack("down", stack_env)
    assert down.returncode == 0, down.stdout + down.stderr
    for name, pid in pids.items():
        assert not _alive(pid), f"{name} (pid {pid}) still runs after `down`"
    status = _stack("status", stack_env)
    assert status.returncode == 3
    assert status.stdout.count("is not running") == 3
    assert (state / "rabbitmq" / "data").is_dir(), "`down` keeps the queues for the next `up`"


def test_up_names_a_port_that_is_taken(stack_env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", int(stack_env["DEV_STACK_STATUS_PORT"])))
        taken.listen()
        up = _stack("up", stack_env)
    assert up.returncode == 1
    assert f"port {stack_env['DEV_STACK_STATUS_PORT']} is taken" in up.stderr
    assert "DEV_STACK_STATUS_PORT" in up.stderr
    assert not Path(stack_env["DEV_STACK_DIR"]).exists(), "nothing was started"
