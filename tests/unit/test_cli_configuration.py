"""Configuration mistakes as an operator meets them: a real `python-worker`, exit 2, one line."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.outbox_holder import outbox_held
from tests.support.rabbitmq_node import free_port
from tests.support.worker_process import CLI, clean_environment

CANARY = "canary-url-pw-0b7d"


def run_cli(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    environment = clean_environment(**env)
    return subprocess.run(
        [*CLI, *args],
        check=False,
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd,
        timeout=timeout,
    )


def assert_stopped_with(result: subprocess.CompletedProcess[str], line: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stderr == line + "\n"


@pytest.mark.parametrize("command", ["run", "check"])
def test_stops_with_the_setting_meant_when_a_variable_is_misspelt(tmp_path, command):
    result = run_cli(command, env={"WORKER_CAPACTY": "3"}, cwd=tmp_path)

    assert_stopped_with(result, "unknown setting WORKER_CAPACTY — did you mean WORKER_CAPACITY?")
    assert "settings valid" not in result.stdout


def test_stops_pointing_at_the_readme_when_an_unknown_variable_resembles_no_setting(tmp_path):
    result = run_cli("run", env={"SHUTDOWN_SIGNAL": "TERM"}, cwd=tmp_path)

    assert_stopped_with(
        result,
        "unknown setting SHUTDOWN_SIGNAL — no setting has a name like it; the README's "
        '"Configuration" lists them all',
    )


def test_stops_without_showing_the_password_when_rabbitmq_url_is_set_with_rabbitmq_host(
    tmp_path,
):
    env = {"RABBITMQ_URL": f"amqp://worker:{CANARY}@rabbit1/", "RABBITMQ_HOST": "rabbit2"}

    result = run_cli("run", env=env, cwd=tmp_path)

    assert_stopped_with(
        result,
        "configuration error: RABBITMQ_URL is set, and so is RABBITMQ_HOST: give the broker "
        "either as RABBITMQ_URL or as the separate RABBITMQ_* variables, not both (example: "
        "RABBITMQ_URL=amqp://worker:s3cret@rabbit1.internal:5672,rabbit2.internal:5672/%2F)",
    )
    assert CANARY not in result.stdout + result.stderr


def test_stops_without_showing_the_password_when_rabbitmq_url_has_a_bad_port(tmp_path):
    env = {"RABBITMQ_URL": f"amqp://worker:{CANARY}@rabbit1:5672,rabbit2:http/%2F"}

    result = run_cli("check", env=env, cwd=tmp_path)

    assert_stopped_with(
        result,
        "configuration error: RABBITMQ_URL: node 'rabbit2:http': the port must be a number from "
        "1 to 65535 (example: RABBITMQ_URL=amqp://worker:s3cret@rabbit1.internal:5672,"
        "rabbit2.internal:5672/%2F)",
    )
    assert CANARY not in result.stdout + result.stderr


def test_check_never_prints_the_url_password_when_the_broker_refuses_the_connection(tmp_path):
    port = free_port()
    env = {
        "RABBITMQ_URL": f"amqp://worker:{CANARY}@127.0.0.1:{port}/%2F",
        "STATUS_UPDATE_URL": f"http://127.0.0.1:{free_port()}/api/jobs/status",
        "ORCHESTRATOR_URL": f"http://127.0.0.1:{free_port()}",
        "STATUS_OUTBOX_DIR": str(tmp_path / "outbox"),
    }

    result = run_cli("check", env=env, cwd=tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "ok   settings valid" in result.stdout
    node_line = next(line for line in result.stdout.splitlines() if "broker node" in line)
    assert f"broker node 127.0.0.1:{port} (vhost /): connection refused" in node_line
    assert "take the node out of RABBITMQ_URL" in node_line
    assert CANARY not in result.stdout + result.stderr


def test_stops_naming_the_file_when_a_secret_file_cannot_be_read(tmp_path):
    missing = tmp_path / "credentials" / "rabbitmq-password"

    result = run_cli("run", env={"RABBITMQ_PASSWORD_FILE": str(missing)}, cwd=tmp_path)

    assert_stopped_with(
        result,
        f"configuration error: RABBITMQ_PASSWORD_FILE='{missing}': cannot be read (No such file "
        "or directory) (example: RABBITMQ_PASSWORD_FILE=/run/credentials/python-worker.service/"
        "rabbitmq-password)",
    )


def test_stops_when_a_secret_is_given_both_as_a_value_and_as_a_file(tmp_path):
    token = tmp_path / "status-api-token"
    token.write_text(f"{CANARY}\n")
    env = {"STATUS_API_TOKEN": CANARY, "STATUS_API_TOKEN_FILE": str(token)}

    result = run_cli("check", env=env, cwd=tmp_path)

    assert_stopped_with(
        result,
        f"configuration error: STATUS_API_TOKEN_FILE='{token}': set together with "
        "STATUS_API_TOKEN: give only one (example: STATUS_API_TOKEN_FILE=/run/credentials/"
        "python-worker.service/status-api-token)",
    )
    assert CANARY not in result.stdout + result.stderr


def test_stops_naming_the_outbox_variable_when_the_outbox_dir_lies_under_a_regular_file(
    tmp_path,
):
    (tmp_path / "a-file").write_text("not a directory")
    outbox = tmp_path / "a-file" / "outbox"

    result = run_cli("run", env={"STATUS_OUTBOX_DIR": str(outbox)}, cwd=tmp_path)

    assert_stopped_with(
        result,
        f"configuration error: STATUS_OUTBOX_DIR='{outbox}': cannot be created or written (Not a "
        "directory) (example: STATUS_OUTBOX_DIR=/var/lib/python-worker/outbox)",
    )


def test_stops_before_starting_processes_when_the_outbox_dir_of_several_is_unusable(tmp_path):
    (tmp_path / "a-file").write_text("not a directory")
    outbox = tmp_path / "a-file" / "outbox"

    result = run_cli(
        "run", "--processes", "2", env={"STATUS_OUTBOX_DIR": str(outbox)}, cwd=tmp_path
    )

    # Named as the operator set it, although each process gets JOB_MEMORY_DIR from the supervisor.
    assert_stopped_with(
        result,
        f"configuration error: STATUS_OUTBOX_DIR='{outbox}': cannot be created or written (Not a "
        "directory) (example: STATUS_OUTBOX_DIR=/var/lib/python-worker/outbox)",
    )


@pytest.mark.parametrize("processes", ["1", "2"])
def test_stops_naming_the_other_worker_when_the_outbox_dir_is_already_in_use(tmp_path, processes):
    outbox = tmp_path / "outbox"

    with outbox_held(outbox) as holder:
        result = run_cli(
            "run", "--processes", processes, env={"STATUS_OUTBOX_DIR": str(outbox)}, cwd=tmp_path
        )

    assert_stopped_with(
        result,
        f"configuration error: STATUS_OUTBOX_DIR='{outbox}': in use by another running worker "
        f"(pid {holder.pid}); give each worker on this machine a directory of its own",
    )


def test_stops_naming_the_job_memory_variable_when_only_the_job_memory_dir_is_unusable(tmp_path):
    (tmp_path / "a-file").write_text("not a directory")
    memory = tmp_path / "a-file" / "memory"
    env = {"STATUS_OUTBOX_DIR": str(tmp_path / "outbox"), "JOB_MEMORY_DIR": str(memory)}

    result = run_cli("run", env=env, cwd=tmp_path)

    assert_stopped_with(
        result,
        f"configuration error: JOB_MEMORY_DIR='{memory}': cannot be created or written (Not a "
        "directory) (example: JOB_MEMORY_DIR=/var/lib/python-worker)",
    )


@pytest.fixture
def read_only_mount(tmp_path: Path):
    if os.geteuid() != 0:
        pytest.skip("mounting a read-only tmpfs needs root")
    if shutil.which("mount") is None:
        pytest.skip("no mount(8) here")
    mountpoint = tmp_path / "read-only"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mountpoint)],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here (a container without CAP_SYS_ADMIN?): {mounted.stderr}"
        )
    yield mountpoint
    subprocess.run(["umount", str(mountpoint)], check=True, timeout=30)


@pytest.mark.parametrize(
    ("below", "reason"),
    [("outbox", "Read-only file system"), ("", "read-only, or no write permission for this user")],
    ids=["a-new-directory", "the-mount-itself"],
)
def test_stops_naming_the_outbox_variable_when_the_outbox_dir_is_on_a_read_only_mount(
    tmp_path, read_only_mount, below, reason
):
    outbox = read_only_mount / below if below else read_only_mount

    result = run_cli("run", env={"STATUS_OUTBOX_DIR": str(outbox)}, cwd=tmp_path)

    assert_stopped_with(
        result,
        f"configuration error: STATUS_OUTBOX_DIR='{outbox}': cannot be created or written "
        f"({reason}) (example: STATUS_OUTBOX_DIR=/var/lib/python-worker/outbox)",
    )
