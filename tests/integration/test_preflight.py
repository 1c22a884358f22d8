"""`python-worker check` as an operator runs it: a real process against a real broker and API."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.stand_in_api import StandInApi
from tests.support.outbox_holder import outbox_held
from tests.support.rabbitmq_node import Broker, RabbitMQNode, free_port
from tests.support.worker_process import CLI, clean_environment

CANARY_PASSWORD = "canary-broker-pw-7c1d"
CANARY_STATUS_TOKEN = "canary-status-token-41aa"
CANARY_ORCHESTRATOR_TOKEN = "canary-orchestrator-token-93be"
CANARIES = (CANARY_PASSWORD, CANARY_STATUS_TOKEN, CANARY_ORCHESTRATOR_TOKEN)


def run_check(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    environment = clean_environment(**env)
    return subprocess.run(
        [*CLI, "check", *args],
        check=False,
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )


def lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stdout.splitlines() if not line.startswith("preflight:")]


def line_about(result: subprocess.CompletedProcess[str], text: str) -> str:
    found = [line for line in lines(result) if text in line]
    assert found, f"no line mentions {text!r}:\n{result.stdout}{result.stderr}"
    return found[0]


@pytest.fixture
def env(broker: Broker, api: StandInApi, tmp_path: Path) -> dict[str, str]:
    return {
        "RABBITMQ_HOST": broker.host,
        "RABBITMQ_PORT": str(broker.port),
        "STATUS_UPDATE_URL": api.status_url,
        "ORCHESTRATOR_URL": api.url,
        "STATUS_OUTBOX_DIR": str(tmp_path / "outbox"),
    }


@pytest.fixture
def broker_user(controllable_node: RabbitMQNode) -> Iterator[str]:
    """A broker user `preflight` (password CANARY_PASSWORD) with no permissions yet."""
    controllable_node.rabbitmqctl("add_user", "preflight", CANARY_PASSWORD)
    yield "preflight"
    controllable_node.rabbitmqctl("delete_user", "preflight", check=False)


def grant(node: RabbitMQNode, user: str, configure: str, write: str, read: str) -> None:
    node.rabbitmqctl("set_permissions", "-p", "/", user, configure, write, read)


def test_passes_every_check_and_shows_no_secret_when_everything_is_in_order(
    controllable_node: RabbitMQNode, broker_user: str, env: dict[str, str], tmp_path: Path
) -> None:
    grant(controllable_node, broker_user, "^jobs?\\.", "^jobs?\\.", "^jobs?\\.")
    with (
        StandInApi(required_token=CANARY_STATUS_TOKEN) as status_api,
        StandInApi(required_token=CANARY_ORCHESTRATOR_TOKEN) as orchestrator,
    ):
        result = run_check(
            {
                **env,
                "RABBITMQ_USERNAME": broker_user,
                "RABBITMQ_PASSWORD": CANARY_PASSWORD,
                "STATUS_UPDATE_URL": status_api.status_url,
                "STATUS_API_TOKEN": CANARY_STATUS_TOKEN,
                "ORCHESTRATOR_URL": orchestrator.url,
                "ORCHESTRATOR_TOKEN": CANARY_ORCHESTRATOR_TOKEN,
            }
        )
        probes = status_api.requests + orchestrator.requests

    assert result.returncode == 0, result.stdout + result.stderr
    assert all(line.startswith("ok   ") for line in lines(result)), result.stdout
    assert result.stdout.splitlines()[-1] == "preflight: all checks passed"
    node_line = f"broker node {controllable_node.host}:{controllable_node.port} (vhost /)"
    assert f"{node_line} reachable, logged in as preflight" in result.stdout
    for text in ("exchange jobs.exchange", "queue job.high", "queue job.dead-letter"):
        line_about(result, text)
    assert "consume permitted on job.high, job.medium, job.low" in result.stdout
    assert "token accepted" in line_about(result, "status API")
    assert "token accepted" in line_about(result, "orchestrator")
    assert "writable" in line_about(result, "status outbox")
    for canary in CANARIES:
        assert canary not in result.stdout + result.stderr
    assert [probe.raw for probe in probes] == [b'{"preflight": true}'] * 2
    assert (tmp_path / "outbox").is_dir()
    assert list((tmp_path / "outbox").iterdir()) == []


def test_passes_and_names_the_running_worker_that_has_the_outbox_open(
    env: dict[str, str], tmp_path: Path
) -> None:
    with outbox_held(tmp_path / "outbox") as holder:
        result = run_check(env)

    assert result.returncode == 0, result.stdout + result.stderr
    outbox_line = line_about(result, "status outbox")
    assert outbox_line.startswith("ok   "), outbox_line
    assert f"open in a running worker (pid {holder.pid})" in outbox_line


def test_takes_no_job_and_creates_none(broker: Broker, env: dict[str, str]) -> None:
    assert run_check(env).returncode == 0  # creates the topology, as the worker would
    with contextlib.closing(broker.connect()) as connection:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish("jobs.exchange", "job.high", b'{"id": "waiting", "type": "sum"}')

    result = run_check(env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "queue job.high declared and bound (1 ready" in result.stdout
    counts = broker.queue_counts("job.high")
    assert counts is not None
    assert (counts.messages_ready, counts.messages_unacknowledged) == (1, 0)
    for queue in ("job.medium", "job.low", "job.dead-letter"):
        assert broker.queue_counts(queue) == (0, 0, 0)
    with contextlib.closing(broker.connect()) as connection:
        _method, _properties, body = connection.channel().basic_get("job.high", auto_ack=True)
    # Still first in line. (With no worker consuming, the probe consumer may have been handed
    # it for an instant: it comes back marked redelivered, as docs/operations.md says.)
    assert body == b'{"id": "waiting", "type": "sum"}'


def test_exits_2_with_the_usual_one_line_when_a_setting_is_bad(env: dict[str, str]) -> None:
    result = run_check({**env, "RABBITMQ_PORT": "many"})

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().startswith("configuration error: RABBITMQ_PORT='many'")
    assert len(result.stderr.strip().splitlines()) == 1


def test_fails_with_login_refused_when_the_password_is_wrong(env: dict[str, str]) -> None:
    result = run_check({**env, "RABBITMQ_PASSWORD": CANARY_PASSWORD})

    assert result.returncode == 1
    line = line_about(result, "broker node")
    assert line.startswith("FAIL ")
    assert "login refused for user 'guest'" in line
    assert "fix: check RABBITMQ_USERNAME and RABBITMQ_PASSWORD" in line
    assert "skip broker topology and permissions not checked: no node reachable" in result.stdout
    assert CANARY_PASSWORD not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("second_node", "problem"),
    [("nonexistent.invalid", "host name not resolved"), ("127.0.0.2", "connection refused")],
)
def test_checks_each_listed_node_and_fails_the_one_that_is_down(
    broker: Broker, env: dict[str, str], second_node: str, problem: str
) -> None:
    result = run_check({**env, "RABBITMQ_HOST": f"{broker.host},{second_node}"})

    assert result.returncode == 1
    good = line_about(result, f"broker node {broker.host}:")
    bad = line_about(result, f"broker node {second_node}:")
    assert good.startswith("ok   ")
    assert bad.startswith("FAIL ")
    assert problem in bad
    assert "RABBITMQ_HOST" in bad
    # The topology is still checked, on the node that answered.
    assert line_about(result, "exchange jobs.exchange").startswith("ok   ")
    assert f"(on {broker.host})" in line_about(result, "exchange jobs.exchange")


def test_fails_when_the_user_has_no_access_to_the_vhost(
    broker_user: str, env: dict[str, str]
) -> None:
    result = run_check(
        {**env, "RABBITMQ_USERNAME": broker_user, "RABBITMQ_PASSWORD": CANARY_PASSWORD}
    )

    assert result.returncode == 1
    line = line_about(result, "broker node")
    assert line.startswith("FAIL ")
    assert "vhost refused" in line
    assert "rabbitmqctl set_permissions -p / preflight" in line


def test_fails_when_the_user_may_not_write_to_the_exchange(
    controllable_node: RabbitMQNode, broker_user: str, env: dict[str, str]
) -> None:
    grant(controllable_node, broker_user, ".*", "^job\\.", ".*")

    result = run_check(
        {**env, "RABBITMQ_USERNAME": broker_user, "RABBITMQ_PASSWORD": CANARY_PASSWORD}
    )

    assert result.returncode == 1
    assert line_about(result, "broker node").startswith("ok   ")
    publish = line_about(result, "publish to jobs.exchange")
    assert publish.startswith("FAIL ")
    assert "access refused" in publish
    assert "fix: grant preflight configure, write and read" in publish
    # Declaring a queue that dead-letters to jobs.exchange needs write on it too.
    assert line_about(result, "queue job.high").startswith("FAIL ")
    assert CANARY_PASSWORD not in result.stdout + result.stderr


def test_fails_when_the_user_may_not_read_the_job_queues(
    controllable_node: RabbitMQNode, broker_user: str, env: dict[str, str]
) -> None:
    grant(controllable_node, broker_user, ".*", ".*", "^jobs\\.exchange$")

    result = run_check(
        {**env, "RABBITMQ_USERNAME": broker_user, "RABBITMQ_PASSWORD": CANARY_PASSWORD}
    )

    assert result.returncode == 1
    line = line_about(result, "consume refused")
    assert line.startswith("FAIL ")
    for queue in ("job.high", "job.medium", "job.low"):
        assert queue in line
    assert "rabbitmqctl set_permissions" in line


def test_warns_but_passes_when_a_queue_exists_with_other_arguments(
    broker: Broker, env: dict[str, str]
) -> None:
    with contextlib.closing(broker.connect()) as connection:
        connection.channel().queue_declare(
            "job.high", durable=True, arguments={"x-max-length": 1000}
        )

    result = run_check(env)
    strict = run_check(env, "--strict")

    assert result.returncode == 0, result.stdout + result.stderr
    line = line_about(result, "queue job.high")
    assert line.startswith("warn ")
    assert "exists with other arguments" in line
    assert "the worker uses it as it is" in line
    assert "inequivalent arg 'x-dead-letter-exchange'" in line
    assert "rabbitmqctl delete_queue -p / job.high" in line
    assert line_about(result, "queue job.medium").startswith("ok   ")
    assert strict.returncode == 1
    assert strict.stdout.splitlines()[-1] == "preflight: 1 problem(s)"


def test_fails_when_the_status_api_is_down(env: dict[str, str]) -> None:
    url = f"http://127.0.0.1:{free_port()}/api/jobs/status"

    result = run_check({**env, "STATUS_UPDATE_URL": url})

    assert result.returncode == 1
    line = line_about(result, "status API")
    assert line.startswith(f"FAIL status API {url}: connection refused")
    assert line_about(result, "orchestrator").startswith("ok   ")


def test_fails_when_the_status_api_refuses_the_token(env: dict[str, str]) -> None:
    with StandInApi(required_token="the-right-token") as status_api:
        wrong = run_check(
            {**env, "STATUS_UPDATE_URL": status_api.status_url, "STATUS_API_TOKEN": "wrong-token"}
        )
        missing = run_check({**env, "STATUS_UPDATE_URL": status_api.status_url})

    assert wrong.returncode == 1
    line = line_about(wrong, "status API")
    assert line.startswith("FAIL ")
    assert "token refused (401)" in line
    assert "fix: check STATUS_API_TOKEN" in line
    assert "wrong-token" not in wrong.stdout + wrong.stderr
    assert missing.returncode == 1
    assert "it wants a token — fix: set STATUS_API_TOKEN" in line_about(missing, "status API")


def test_fails_when_the_orchestrator_is_down(env: dict[str, str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"

    result = run_check({**env, "ORCHESTRATOR_URL": url})

    assert result.returncode == 1
    line = line_about(result, "orchestrator")
    assert line.startswith(f"FAIL orchestrator {url}/api/workers/heartbeat: connection refused")
    assert line_about(result, "status API").startswith("ok   ")


def test_fails_when_the_status_url_is_not_an_endpoint_that_takes_posts(
    api: StandInApi, env: dict[str, str]
) -> None:
    result = run_check({**env, "STATUS_UPDATE_URL": api.url + "/api/nothing-here"})

    assert result.returncode == 1
    line = line_about(result, "status API")
    assert "answered 404" in line
    assert "STATUS_UPDATE_URL" in line


def test_warns_when_the_status_api_answers_5xx(api: StandInApi, env: dict[str, str]) -> None:
    api.answer(503)

    result = run_check(env)

    assert result.returncode == 0
    line = line_about(result, "status API")
    assert line.startswith("warn ")
    assert "answered 503" in line


def test_fails_when_the_outbox_directory_cannot_be_created(
    env: dict[str, str], tmp_path: Path
) -> None:
    # As root, permissions don't stop a write; a path under a regular file stops everyone.
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")

    result = run_check({**env, "STATUS_OUTBOX_DIR": str(blocker / "outbox")})

    assert result.returncode == 1
    line = line_about(result, "status outbox")
    assert line.startswith(f"FAIL status outbox {blocker / 'outbox'}: not writable")
    assert "fix: set STATUS_OUTBOX_DIR" in line
