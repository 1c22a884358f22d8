"""The HTTP adapters' TLS files and the proxy refusal, as the settings read them at start-up."""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from python_worker.bootstrap import ConfigurationError, Settings, load_settings, setting_prefixes
from tests.support.tls import PrivateCa
from tests.support.worker_process import PROXY_VARIABLES


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """None of the worker's or the proxies' variables from the shell that runs the tests."""
    for name in list(os.environ):
        if name.upper().startswith(setting_prefixes()) or name.lower() in PROXY_VARIABLES:
            monkeypatch.delenv(name)
    yield


@pytest.fixture
def pki(tmp_path: Path) -> PrivateCa:
    return PrivateCa.create(tmp_path / "tls")


def refusal(monkeypatch: pytest.MonkeyPatch, **variables: str | Path) -> str:
    """The one line load_settings() stops with, given these environment variables."""
    for name, value in variables.items():
        monkeypatch.setenv(name, str(value))
    with pytest.raises(ConfigurationError) as raised:
        load_settings()
    return str(raised.value)


def loaded(monkeypatch: pytest.MonkeyPatch, **variables: str | Path) -> Settings:
    for name, value in variables.items():
        monkeypatch.setenv(name, str(value))
    return load_settings()


# --------------------------------------------------------------------------- TLS files


def test_refuses_a_ca_file_with_one_line_when_it_does_not_exist(monkeypatch, tmp_path):
    missing = tmp_path / "nowhere.pem"

    line = refusal(monkeypatch, STATUS_API_CA_FILE=missing)

    assert line == (
        f"configuration error: STATUS_API_CA_FILE='{missing}': no such file "
        "(example: STATUS_API_CA_FILE=/etc/python-worker/tls/company-ca.pem)"
    )


def test_refuses_a_ca_file_when_it_holds_no_certificate(monkeypatch, pki):
    line = refusal(monkeypatch, ORCHESTRATOR_CA_FILE=pki.client_key_file)

    assert line.startswith(f"configuration error: ORCHESTRATOR_CA_FILE='{pki.client_key_file}'")
    assert "holds no PEM certificate" in line


def test_refuses_a_client_certificate_when_its_key_is_not_set(monkeypatch, pki):
    line = refusal(monkeypatch, STATUS_API_CLIENT_CERT_FILE=pki.client_cert_file)

    assert line == (
        "configuration error: STATUS_API_CLIENT_KEY_FILE: unset, but "
        "STATUS_API_CLIENT_CERT_FILE is set: a client certificate needs its private key "
        "(example: STATUS_API_CLIENT_KEY_FILE=/etc/python-worker/tls/worker.key)"
    )


def test_refuses_a_client_key_when_its_certificate_is_not_set(monkeypatch, pki):
    line = refusal(monkeypatch, ORCHESTRATOR_CLIENT_KEY_FILE=pki.client_key_file)

    assert line.startswith(
        f"configuration error: ORCHESTRATOR_CLIENT_KEY_FILE='{pki.client_key_file}': set, "
        "but ORCHESTRATOR_CLIENT_CERT_FILE is not"
    )


def test_refuses_a_client_key_when_it_belongs_to_another_certificate(monkeypatch, pki, tmp_path):
    other = tmp_path / "other.key"
    pki.ca.issue_cert("someone-else").private_key_pem.write_to_path(other)

    line = refusal(
        monkeypatch,
        STATUS_API_CLIENT_CERT_FILE=pki.client_cert_file,
        STATUS_API_CLIENT_KEY_FILE=other,
    )

    assert "is not the private key of STATUS_API_CLIENT_CERT_FILE's certificate" in line


def test_refuses_a_client_key_without_asking_for_a_passphrase_when_it_is_encrypted(
    monkeypatch, pki, tmp_path
):
    key = serialization.load_pem_private_key(pki.client_key_file.read_bytes(), None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )

    line = refusal(
        monkeypatch,
        STATUS_API_CLIENT_CERT_FILE=pki.client_cert_file,
        STATUS_API_CLIENT_KEY_FILE=encrypted,
    )

    assert "the private key is encrypted; give it unencrypted" in line


def test_takes_a_blank_tls_file_for_unset_when_an_env_file_leaves_it_empty(monkeypatch):
    settings = loaded(monkeypatch, STATUS_API_CA_FILE="", ORCHESTRATOR_CLIENT_CERT_FILE="")

    assert (settings.status_api_ca_file, settings.orchestrator_client_cert_file) == (None, None)


def test_trusts_only_the_ca_file_when_one_is_set(monkeypatch, pki):
    settings = loaded(
        monkeypatch,
        STATUS_UPDATE_URL="https://api.internal/api/jobs/status",
        STATUS_API_CA_FILE=pki.ca_file,
    )

    context = settings.status_api_ssl_context()

    assert context is not None
    assert len(context.get_ca_certs()) == 1
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True)


def test_makes_no_tls_context_when_the_status_url_is_plain_http(monkeypatch, pki):
    settings = loaded(monkeypatch, STATUS_API_CA_FILE=pki.ca_file)

    assert settings.status_api_ssl_context() is None


# --------------------------------------------------------------------------- proxies


def proxy_problem(monkeypatch: pytest.MonkeyPatch, **variables: str) -> str | None:
    settings = loaded(
        monkeypatch,
        STATUS_UPDATE_URL="https://api.internal/api/jobs/status",
        ORCHESTRATOR_URL="http://orchestrator.internal:8081",
        **variables,
    )
    return settings.proxy_in_the_way()


def test_names_the_variable_and_the_host_when_https_proxy_applies_to_the_status_url(
    monkeypatch,
):
    problem = proxy_problem(monkeypatch, HTTPS_PROXY="http://proxy.internal:3128")

    assert problem == (
        "HTTPS_PROXY='http://proxy.internal:3128': applies to STATUS_UPDATE_URL (host "
        "api.internal), but the worker connects directly, never through a proxy: add the host "
        "to NO_PROXY or unset HTTPS_PROXY (example: NO_PROXY=api.internal)"
    )


def test_finds_no_proxy_in_the_way_when_no_proxy_covers_both_hosts(monkeypatch):
    problem = proxy_problem(
        monkeypatch,
        https_proxy="http://proxy:3128",
        http_proxy="http://proxy:3128",
        NO_PROXY=".internal",
    )

    assert problem is None


def test_names_the_lower_case_variable_when_http_proxy_applies_to_the_orchestrator(monkeypatch):
    problem = proxy_problem(monkeypatch, http_proxy="proxy:3128", NO_PROXY="api.internal")

    assert problem is not None
    assert problem.startswith("http_proxy='proxy:3128': applies to ORCHESTRATOR_URL (host ")
    assert problem.endswith("(example: NO_PROXY=api.internal,orchestrator.internal)")


def test_takes_all_proxy_for_both_urls_when_no_scheme_proxy_is_set(monkeypatch):
    problem = proxy_problem(monkeypatch, ALL_PROXY="socks5://proxy:1080")

    assert problem is not None
    assert "STATUS_UPDATE_URL (host api.internal) and ORCHESTRATOR_URL" in problem


def test_shows_no_password_when_the_proxy_url_holds_credentials(monkeypatch):
    problem = proxy_problem(monkeypatch, HTTPS_PROXY="http://alice:canary-pw-31d@proxy:3128")

    assert problem is not None
    assert "canary-pw-31d" not in problem
    assert "alice" not in problem
    assert problem.startswith("HTTPS_PROXY='http://proxy:3128'")


def test_finds_no_proxy_in_the_way_when_no_proxy_lists_the_hosts_network(monkeypatch):
    settings = loaded(
        monkeypatch,
        STATUS_UPDATE_URL="http://10.1.2.3:8080/api/jobs/status",
        ORCHESTRATOR_URL="http://10.1.2.4:8081",
        HTTP_PROXY="http://proxy:3128",
        NO_PROXY="10.1.0.0/16",
    )

    assert settings.proxy_in_the_way() is None
