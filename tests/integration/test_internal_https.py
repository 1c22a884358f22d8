"""Internal HTTPS: private CAs, mutual TLS and proxies, for statuses, heartbeats and `check`."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devtools.stand_in_api import StandInApi
from python_worker.adapters.http.heartbeat_sink import HttpHeartbeatSink
from python_worker.adapters.http.status_reporter import HttpStatusReporter
from python_worker.adapters.http.tls import ClientTls
from python_worker.application.ports import HeartbeatFailed
from tests.integration.http_fixtures import Handled, update
from tests.integration.test_http_heartbeat_sink import heartbeat
from tests.integration.worker_fixtures import Publish, StartWorker, settled, sum_job
from tests.support.rabbitmq_node import Broker, free_port
from tests.support.tls import BlockingTlsServer, PrivateCa
from tests.support.worker_process import CLI, clean_environment


@pytest.fixture
def pki(tmp_path: Path) -> PrivateCa:
    """The company CA the APIs' certificates come from, and the worker's client certificate."""
    return PrivateCa.create(tmp_path / "pki")


@pytest.fixture
def stranger(tmp_path: Path) -> PrivateCa:
    """Another CA, which signed nothing the worker talks to."""
    return PrivateCa.create(tmp_path / "stranger")


@pytest.fixture
def tls_api(pki: PrivateCa) -> Iterator[StandInApi]:
    """The stand-in API over HTTPS with a certificate from `pki`."""
    with StandInApi(ssl_context=pki.server_context()) as server:
        yield server


@pytest.fixture
def mtls_api(pki: PrivateCa) -> Iterator[StandInApi]:
    """The stand-in API over HTTPS that wants a client certificate `pki` issued."""
    with StandInApi(ssl_context=pki.server_context(require_client_cert=True)) as server:
        yield server


@pytest.fixture
def alerting_mtls_server(pki: PrivateCa) -> Iterator[BlockingTlsServer]:
    """A server wanting a client certificate that says so with a TLS alert when none comes."""
    server = BlockingTlsServer(pki.server_context(require_client_cert=True))
    yield server
    server.close()


@pytest.fixture
def make_reporter(tmp_path: Path) -> Iterator[Callable[..., HttpStatusReporter]]:
    """Reporters with quick retries, all closed at the end of the test."""
    made: list[HttpStatusReporter] = []

    def make(url: str, tls: ClientTls) -> HttpStatusReporter:
        reporter = HttpStatusReporter(
            url,
            tmp_path / "outbox",
            max_in_flight=2,
            connect_timeout=2.0,
            read_timeout=2.0,
            max_attempts=2,
            backoff_base=0.05,
            backoff_cap=0.2,
            probe_cap=0.5,
            ssl_context=tls.context_for(url),
        )
        made.append(reporter)
        return reporter

    yield make
    for reporter in made:
        reporter.close()


def trusting(pki: PrivateCa, *, client_cert: bool = False) -> ClientTls:
    """What the worker builds from STATUS_API_CA_FILE (and the client certificate's files)."""
    pair = (pki.client_cert_file, pki.client_key_file) if client_cert else None
    return ClientTls(ca_file=pki.ca_file, client_cert=pair)


def tls_settings(prefix: str, pki: PrivateCa, *, client_cert: bool = False) -> dict[str, str]:
    """The environment variables that give the worker `pki`'s CA (and client certificate)."""
    settings = {f"{prefix}_CA_FILE": str(pki.ca_file)}
    if client_cert:
        settings[f"{prefix}_CLIENT_CERT_FILE"] = str(pki.client_cert_file)
        settings[f"{prefix}_CLIENT_KEY_FILE"] = str(pki.client_key_file)
    return settings


# --------------------------------------------------------------------------- status reporter


def test_delivers_statuses_over_https_when_the_ca_file_trusts_the_servers_ca(
    make_reporter, tls_api, pki
):
    reporter = make_reporter(tls_api.status_url, trusting(pki))

    reporter.report(update("job-https"))

    assert tls_api.wait_for(lambda: len(tls_api.statuses) == 1)
    assert tls_api.statuses[0].job_id == "job-https"


def test_keeps_statuses_in_the_outbox_and_sends_nothing_when_another_ca_signed_the_server(
    make_reporter, tls_api, stranger
):
    reporter = make_reporter(tls_api.status_url, trusting(stranger))
    handled = Handled()

    reporter.report(update("job-untrusted"), handled)

    assert handled.reached(1)  # stored in the outbox counts as handled
    assert reporter.backlog() == 1
    assert tls_api.requests == []


def test_delivers_statuses_with_the_client_certificate_when_the_server_requires_one(
    make_reporter, mtls_api, pki
):
    reporter = make_reporter(mtls_api.status_url, trusting(pki, client_cert=True))

    reporter.report(update("job-mtls"))

    assert mtls_api.wait_for(lambda: len(mtls_api.statuses) == 1)


def test_keeps_statuses_in_the_outbox_when_the_server_requires_a_client_certificate_and_none_is_set(
    make_reporter, mtls_api, pki
):
    reporter = make_reporter(mtls_api.status_url, trusting(pki))
    handled = Handled()

    reporter.report(update("job-no-cert"), handled)

    assert handled.reached(1)
    assert reporter.backlog() == 1
    assert mtls_api.requests == []


# --------------------------------------------------------------------------- heartbeat sink


def test_sends_heartbeats_over_https_when_the_ca_file_trusts_the_servers_ca(tls_api, pki):
    sink = HttpHeartbeatSink(tls_api.url, tls=trusting(pki))

    sink.send(heartbeat())

    assert len(tls_api.heartbeats) == 1


def test_fails_the_heartbeat_and_sends_nothing_when_another_ca_signed_the_server(tls_api, stranger):
    sink = HttpHeartbeatSink(tls_api.url, tls=trusting(stranger))

    with pytest.raises(HeartbeatFailed, match="CERTIFICATE_VERIFY_FAILED"):
        sink.send(heartbeat())
    assert tls_api.requests == []


def test_sends_heartbeats_with_the_client_certificate_when_the_server_requires_one(mtls_api, pki):
    sink = HttpHeartbeatSink(mtls_api.url, tls=trusting(pki, client_cert=True))

    sink.send(heartbeat())

    assert len(mtls_api.heartbeats) == 1


def test_fails_the_heartbeat_when_the_server_requires_a_client_certificate_and_none_is_set(
    mtls_api, pki
):
    sink = HttpHeartbeatSink(mtls_api.url, tls=trusting(pki))

    with pytest.raises(HeartbeatFailed):
        sink.send(heartbeat())
    assert mtls_api.requests == []


# --------------------------------------------------------------------------- the worker


def test_worker_reports_statuses_and_heartbeats_over_https_when_the_ca_files_name_the_private_ca(
    start_worker: StartWorker, publish: Publish, tls_api: StandInApi, pki: PrivateCa
):
    start_worker(
        status_update_url=tls_api.status_url,
        orchestrator_url=tls_api.url,
        **tls_settings("STATUS_API", pki),
        **tls_settings("ORCHESTRATOR", pki),
    )

    publish([("job.high", sum_job("over-https"))])

    assert tls_api.wait_for(lambda: "over-https" in tls_api.final_statuses(), 60)
    assert [s.status for s in tls_api.statuses_for("over-https")] == ["running", "completed"]
    assert tls_api.wait_for(lambda: len(tls_api.heartbeats) >= 2, 60)


def test_worker_keeps_statuses_in_the_outbox_and_delivers_them_on_restart_when_the_ca_was_wrong(
    broker: Broker,
    start_worker: StartWorker,
    publish: Publish,
    tls_api: StandInApi,
    pki: PrivateCa,
    stranger: PrivateCa,
):
    untrusting = start_worker(
        status_update_url=tls_api.status_url, **tls_settings("STATUS_API", stranger)
    )
    job_ids = [f"untrusted-{n}" for n in range(20)]

    publish(("job.medium", sum_job(job_id)) for job_id in job_ids)

    assert tls_api.wait_for(lambda: settled(broker), 60), "jobs stalled under the wrong CA"
    assert untrusting.wait_for_log("keeping updates in the outbox", 30)
    assert "CERTIFICATE_VERIFY_FAILED" in untrusting.log()
    assert tls_api.requests == []
    assert untrusting.terminate() == 0, untrusting.log()

    start_worker(status_update_url=tls_api.status_url, **tls_settings("STATUS_API", pki))

    assert tls_api.wait_for(lambda: set(job_ids) <= set(tls_api.final_statuses()), 120)
    for job_id in job_ids:
        assert [s.status for s in tls_api.statuses_for(job_id)] == ["running", "completed"]


def test_worker_reports_statuses_over_mutual_tls_when_the_status_api_settings_are_set(
    start_worker: StartWorker, publish: Publish, mtls_api: StandInApi, pki: PrivateCa
):
    start_worker(
        status_update_url=mtls_api.status_url, **tls_settings("STATUS_API", pki, client_cert=True)
    )

    publish([("job.high", sum_job("over-mtls"))])

    assert mtls_api.wait_for(lambda: "over-mtls" in mtls_api.final_statuses(), 60)
    assert [s.status for s in mtls_api.statuses_for("over-mtls")] == ["running", "completed"]


def test_worker_sends_heartbeats_over_mutual_tls_when_the_orchestrator_settings_are_set(
    start_worker: StartWorker, mtls_api: StandInApi, pki: PrivateCa
):
    start_worker(
        orchestrator_url=mtls_api.url, **tls_settings("ORCHESTRATOR", pki, client_cert=True)
    )

    assert mtls_api.wait_for(lambda: len(mtls_api.heartbeats) >= 2, 60)


def test_worker_exits_2_with_one_line_when_the_ca_file_does_not_exist(
    start_worker: StartWorker, tmp_path: Path
):
    missing = tmp_path / "company-ca.pem"

    worker = start_worker(status_api_ca_file=missing)

    assert worker.wait(60) == 2
    assert worker.log().splitlines() == [
        f"configuration error: STATUS_API_CA_FILE='{missing}': no such file "
        "(example: STATUS_API_CA_FILE=/etc/python-worker/tls/company-ca.pem)"
    ]


def test_worker_exits_2_with_one_line_when_a_client_certificate_is_set_without_its_key(
    start_worker: StartWorker, pki: PrivateCa
):
    worker = start_worker(orchestrator_client_cert_file=pki.client_cert_file)

    assert worker.wait(60) == 2
    assert worker.log().splitlines() == [
        "configuration error: ORCHESTRATOR_CLIENT_KEY_FILE: unset, but "
        "ORCHESTRATOR_CLIENT_CERT_FILE is set: a client certificate needs its private key "
        "(example: ORCHESTRATOR_CLIENT_KEY_FILE=/etc/python-worker/tls/worker.key)"
    ]


def test_worker_exits_2_saying_it_connects_directly_when_https_proxy_applies_to_the_status_api(
    start_worker: StartWorker, tls_api: StandInApi, pki: PrivateCa
):
    worker = start_worker(
        status_update_url=tls_api.status_url,
        https_proxy=f"http://127.0.0.1:{free_port()}",
        **tls_settings("STATUS_API", pki),
    )

    assert worker.wait(60) == 2
    (line,) = worker.log().splitlines()
    assert line.startswith("configuration error: HTTPS_PROXY='http://127.0.0.1:")
    assert "applies to STATUS_UPDATE_URL (host 127.0.0.1)" in line
    assert "the worker connects directly, never through a proxy" in line
    assert line.endswith(
        "add the host to NO_PROXY or unset HTTPS_PROXY (example: NO_PROXY=127.0.0.1)"
    )
    assert tls_api.requests == []


def test_worker_starts_and_reaches_the_apis_directly_when_no_proxy_covers_their_host(
    start_worker: StartWorker, publish: Publish, tls_api: StandInApi, pki: PrivateCa
):
    dead_proxy = f"http://127.0.0.1:{free_port()}"  # would lose every request
    start_worker(
        status_update_url=tls_api.status_url,
        orchestrator_url=tls_api.url,
        https_proxy=dead_proxy,
        http_proxy=dead_proxy,
        no_proxy="localhost,127.0.0.1",
        **tls_settings("STATUS_API", pki),
        **tls_settings("ORCHESTRATOR", pki),
    )

    publish([("job.high", sum_job("no-proxy"))])

    assert tls_api.wait_for(lambda: "no-proxy" in tls_api.final_statuses(), 60)
    assert tls_api.wait_for(lambda: len(tls_api.heartbeats) >= 1, 60)


def test_processes_a_file_when_a_proxy_variable_is_set_since_it_posts_nothing(
    tmp_path: Path,
):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"id": "p-1", "type": "sum", "payload": {"numbers": [1, 2]}}\n')

    result = subprocess.run(
        [*CLI, "process", str(jobs)],
        env=environment({"HTTPS_PROXY": "http://proxy.internal:3128"}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert '"jobId":"p-1"' in result.stdout.replace(" ", "")


# --------------------------------------------------------------------------- check


def environment(env: dict[str, str]) -> dict[str, str]:
    """The test run's environment without the worker's or the proxies' variables, plus `env`."""
    return clean_environment(**env)


def run_check(broker: Broker, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    settings = {
        "RABBITMQ_HOST": broker.host,
        "RABBITMQ_PORT": str(broker.port),
        "STATUS_OUTBOX_DIR": str(tmp_path / "outbox"),
        **env,
    }
    return subprocess.run(
        [*CLI, "check"],
        env=environment(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def line_about(result: subprocess.CompletedProcess[str], text: str) -> str:
    found = [line for line in result.stdout.splitlines() if text in line]
    assert found, f"no line mentions {text!r}:\n{result.stdout}{result.stderr}"
    return found[0]


def test_check_passes_both_apis_when_the_ca_files_trust_their_private_ca(
    broker: Broker, tmp_path: Path, tls_api: StandInApi, pki: PrivateCa
):
    result = run_check(
        broker,
        tmp_path,
        STATUS_UPDATE_URL=tls_api.status_url,
        ORCHESTRATOR_URL=tls_api.url,
        **tls_settings("STATUS_API", pki),
        **tls_settings("ORCHESTRATOR", pki),
    )

    assert result.returncode == 0, result.stdout + result.stderr
    for service, prefix in (("status API", "STATUS_API"), ("orchestrator", "ORCHESTRATOR")):
        line = line_about(result, f"{service} https://")
        assert line.startswith("ok   ")
        assert " reachable over TLSv1." in line  # the protocol the handshake agreed on
        assert f"(server certificate verified with {prefix}_CA_FILE, 1 CA certificate)" in line


def test_check_fails_with_certificate_not_trusted_when_the_ca_file_is_another_ca(
    broker: Broker, tmp_path: Path, api: StandInApi, tls_api: StandInApi, stranger: PrivateCa
):
    result = run_check(
        broker,
        tmp_path,
        STATUS_UPDATE_URL=tls_api.status_url,
        ORCHESTRATOR_URL=api.url,
        **tls_settings("STATUS_API", stranger),
    )

    assert result.returncode == 1
    line = line_about(result, "status API https://")
    assert line.startswith("FAIL ")
    assert "TLS certificate not trusted (unable to get local issuer certificate)" in line
    assert line.endswith(
        "fix: set STATUS_API_CA_FILE to the CA bundle (PEM) that signed the server's certificate"
    )
    assert tls_api.requests == []


def test_check_fails_naming_the_client_certificate_settings_when_the_server_closes_for_want_of_one(
    broker: Broker, tmp_path: Path, api: StandInApi, mtls_api: StandInApi, pki: PrivateCa
):
    result = run_check(
        broker,
        tmp_path,
        STATUS_UPDATE_URL=mtls_api.status_url,
        ORCHESTRATOR_URL=api.url,
        **tls_settings("STATUS_API", pki),
    )

    assert result.returncode == 1
    line = line_about(result, "status API https://")
    assert line.startswith("FAIL ")
    assert "closed the connection in or right after the TLS handshake, unanswered" in line
    assert "set STATUS_API_CLIENT_CERT_FILE and STATUS_API_CLIENT_KEY_FILE" in line


def test_check_fails_naming_the_client_certificate_settings_when_the_server_alerts_it_wants_one(
    broker: Broker,
    tmp_path: Path,
    api: StandInApi,
    alerting_mtls_server: BlockingTlsServer,
    pki: PrivateCa,
):
    result = run_check(
        broker,
        tmp_path,
        STATUS_UPDATE_URL=api.status_url,
        ORCHESTRATOR_URL=alerting_mtls_server.url,
        **tls_settings("ORCHESTRATOR", pki),
    )

    assert result.returncode == 1
    line = line_about(result, "orchestrator https://")
    assert "the server requires a client certificate (TLS alert: certificate required)" in line
    assert line.endswith(
        "fix: set ORCHESTRATOR_CLIENT_CERT_FILE and ORCHESTRATOR_CLIENT_KEY_FILE to a client "
        "certificate and key the server accepts"
    )


def test_check_fails_saying_the_server_refused_the_client_certificate_when_another_ca_issued_it(
    broker: Broker,
    tmp_path: Path,
    api: StandInApi,
    alerting_mtls_server: BlockingTlsServer,
    pki: PrivateCa,
    stranger: PrivateCa,
):
    result = run_check(
        broker,
        tmp_path,
        STATUS_UPDATE_URL=api.status_url,
        ORCHESTRATOR_URL=alerting_mtls_server.url,
        ORCHESTRATOR_CA_FILE=str(pki.ca_file),
        ORCHESTRATOR_CLIENT_CERT_FILE=str(stranger.client_cert_file),
        ORCHESTRATOR_CLIENT_KEY_FILE=str(stranger.client_key_file),
    )

    assert result.returncode == 1
    line = line_about(result, "orchestrator https://")
    assert "the server refused the client certificate (TLS alert: unknown ca)" in line
    assert "ORCHESTRATOR_CLIENT_CERT_FILE and ORCHESTRATOR_CLIENT_KEY_FILE" in line


def test_check_fails_saying_the_certificate_is_for_another_name_when_the_url_names_another_host(
    broker: Broker, tmp_path: Path, api: StandInApi, pki: PrivateCa
):
    # Linux routes all of 127/8 to the loopback; the certificate names 127.0.0.1 only.
    with StandInApi(host="127.0.0.2", ssl_context=pki.server_context()) as elsewhere:
        result = run_check(
            broker,
            tmp_path,
            STATUS_UPDATE_URL=elsewhere.status_url,
            ORCHESTRATOR_URL=api.url,
            **tls_settings("STATUS_API", pki),
        )

    assert result.returncode == 1
    line = line_about(result, "status API https://127.0.0.2")
    assert "TLS certificate is for another name (IP address mismatch" in line
    assert line.endswith("fix: connect by a name the server's certificate holds")


def test_check_passes_when_the_client_certificate_is_set_for_servers_that_require_one(
    broker: Broker,
    tmp_path: Path,
    mtls_api: StandInApi,
    alerting_mtls_server: BlockingTlsServer,
    pki: PrivateCa,
):
    result = run_check(
        broker,
        tmp_path,
        STATUS_UPDATE_URL=mtls_api.status_url,
        ORCHESTRATOR_URL=alerting_mtls_server.url,
        **tls_settings("STATUS_API", pki, client_cert=True),
        **tls_settings("ORCHESTRATOR", pki, client_cert=True),
    )

    assert result.returncode == 0, result.stdout + result.stderr
    for service, prefix in (("status API", "STATUS_API"), ("orchestrator", "ORCHESTRATOR")):
        line = line_about(result, f"{service} https://")
        assert line.startswith("ok   ")
        assert f"; client certificate of {prefix}_CLIENT_CERT_FILE sent if asked)" in line


def test_check_exits_2_with_one_line_when_a_lower_case_proxy_variable_applies(
    broker: Broker, tmp_path: Path, api: StandInApi
):
    result = run_check(
        broker,
        tmp_path,
        STATUS_UPDATE_URL=api.status_url,
        ORCHESTRATOR_URL=api.url,
        http_proxy="http://proxy.internal:3128",
    )

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "configuration error: http_proxy='http://proxy.internal:3128': applies to "
        "STATUS_UPDATE_URL (host 127.0.0.1) and ORCHESTRATOR_URL (host 127.0.0.1), but the "
        "worker connects directly, never through a proxy: add the host to NO_PROXY or unset "
        "http_proxy (example: NO_PROXY=127.0.0.1)"
    ]
