"""The Redis preflight, TLS and passwords: `check` against real servers, never showing a secret."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from devtools.stand_in_api import StandInApi
from python_worker.adapters.redis.preflight import RedisPreflight
from python_worker.adapters.redis.source import RedisSource
from python_worker.application.ports import CheckResult, Outcome, Settlement
from tests.integration.redis_fixtures import redis_instance, redis_server
from tests.support.rabbitmq_node import free_port
from tests.support.redis_server import RedisServer, TlsFiles
from tests.support.worker_process import CLI, clean_environment

__all__ = ["redis_instance", "redis_server"]

CANARY_PASSWORD = "canary-redis-pw-5e2b"


def checks(server: RedisServer, **changes: object) -> list[CheckResult]:
    return list(RedisPreflight(server.config(**changes)).checks())


def about(results: list[CheckResult], text: str) -> CheckResult:
    found = [result for result in results if text in result.what]
    assert found, f"no check mentions {text!r}: {[r.line() for r in results]}"
    return found[0]


@pytest.fixture
def protected() -> Iterator[RedisServer]:
    server = RedisServer(password=CANARY_PASSWORD).start()
    yield server
    server.close()


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[RedisServer]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    files = TlsFiles(
        cert=tmp_path / "server.pem", key=tmp_path / "server.key", ca=tmp_path / "ca.pem"
    )
    cert.cert_chain_pems[0].write_to_path(str(files.cert))
    cert.private_key_pem.write_to_path(str(files.key))
    ca.cert_pem.write_to_path(str(files.ca))
    server = RedisServer(tls=files, password=CANARY_PASSWORD).start()
    yield server
    server.close()


def test_every_check_passes_or_warns_about_persistence_when_redis_is_fresh(
    redis_server: RedisServer,
) -> None:
    results = checks(redis_server)

    assert [r.line() for r in results if r.failed] == []
    assert about(results, "reachable, logged in as default (Redis 7").outcome is Outcome.OK
    assert about(results, "append-only file").outcome is Outcome.WARN
    assert about(results, "stream job.high with group python-worker").outcome is Outcome.OK
    assert about(results, "may run every command").outcome is Outcome.OK


def test_names_the_commands_a_restricted_user_may_not_run_and_how_to_grant_them(
    redis_server: RedisServer,
) -> None:
    redis_server.create_topology()
    redis_server.acl_user("worker", CANARY_PASSWORD, "~job.*", "+@read", "+ping", "+info")

    results = checks(
        redis_server,
        url=f"redis://worker@127.0.0.1:{redis_server.port}/0",
        password=CANARY_PASSWORD,
    )

    refused = about(results, "may not run")
    assert refused.failed
    assert "XACK" in refused.what and "XAUTOCLAIM" in refused.what
    assert "ACL SETUSER worker on ~job.* +@stream +multi +exec" in refused.fix
    assert all(CANARY_PASSWORD not in r.line() for r in results)


def test_the_worker_runs_as_a_user_with_exactly_the_granted_commands(
    redis_server: RedisServer,
) -> None:
    redis_server.acl_user(
        "worker", CANARY_PASSWORD, "~job.*", "+@stream", "+multi", "+exec", "+ping", "+info"
    )
    config = redis_server.config(
        url=f"redis://worker@127.0.0.1:{redis_server.port}/0", password=CANARY_PASSWORD
    )
    client = redis_server.client()
    redis_server.create_topology()
    client.xadd("job.low", {"body": b"granted"})

    results = list(RedisPreflight(config).checks())
    source = RedisSource(config, prefetch=10)
    try:
        delivery = source.receive(timeout=10)
        assert delivery is not None
        source.settle(delivery, Settlement.ACK)
    finally:
        source.close()

    assert [r.line() for r in results if r.failed] == []
    assert redis_server.remaining() == 0


def test_says_the_login_was_refused_when_the_password_is_wrong(protected: RedisServer) -> None:
    results = checks(protected, password="not-the-password")

    assert results[0].failed
    assert "login refused for user 'default'" in results[0].what


def test_says_a_password_is_needed_when_none_was_given(protected: RedisServer) -> None:
    results = checks(protected, password=None)

    assert results[0].failed
    assert "REDIS_PASSWORD" in results[0].fix


def test_says_the_connection_was_refused_when_nothing_listens() -> None:
    nobody = f"redis://127.0.0.1:{free_port()}/0"

    results = list(RedisPreflight(RedisServer().config(url=nobody)).checks())

    assert results[0].failed
    assert "connection refused" in results[0].what


def test_connects_over_tls_when_given_the_ca(tls_server: RedisServer) -> None:
    results = checks(tls_server)

    assert about(results, "(TLS) reachable").outcome is Outcome.OK


def test_says_the_certificate_is_not_trusted_when_the_ca_is_missing(
    tls_server: RedisServer,
) -> None:
    results = checks(tls_server, ca_file=None)

    assert results[0].failed
    assert "certificate not trusted" in results[0].what
    assert "REDIS_CA_FILE" in results[0].fix


def test_check_command_passes_over_tls_and_never_prints_the_password(
    tls_server: RedisServer, api: StandInApi, tmp_path: Path
) -> None:
    env = clean_environment()
    assert tls_server.tls is not None
    env.update(
        WORKER_BROKER="redis",
        REDIS_URL=f"rediss://:{CANARY_PASSWORD}@127.0.0.1:{tls_server.port}/0",
        REDIS_CA_FILE=str(tls_server.tls.ca),
        STATUS_UPDATE_URL=api.status_url,
        ORCHESTRATOR_URL=api.url,
        STATUS_OUTBOX_DIR=str(tmp_path / "outbox"),
    )

    done = subprocess.run(
        [*CLI, "check"], env=env, capture_output=True, text=True, timeout=120, check=False
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "rediss://127.0.0.1" in done.stdout
    assert CANARY_PASSWORD not in done.stdout + done.stderr
