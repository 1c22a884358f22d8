"""The settings of the HTTP adapters: the status API and the orchestrator."""

import ssl
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings

from python_worker.adapters.http.heartbeat_sink import HEARTBEAT_PATH
from python_worker.adapters.http.preflight import HttpEndpointPreflight
from python_worker.adapters.http.proxies import proxy_in_the_way
from python_worker.adapters.http.tls import (
    ClientTls,
    check_ca_file,
    check_certificate_file,
    check_client_certificate,
)


class HttpSettings(BaseSettings):
    """Where statuses and heartbeats go, with which tokens and TLS files, how many at once.

    Mixed into the worker's `Settings` (bootstrap); each field's `examples[0]` is the good value
    shown when a bad one stops start-up. The TLS files are loaded here, so a file that is
    missing, unreadable or not what its name says stops start-up, not the first request.
    """

    orchestrator_url: str = Field(
        "http://localhost:8081",
        description="base URL; heartbeats go to ${ORCHESTRATOR_URL}/api/workers/heartbeat",
        examples=["http://orchestrator.internal:8081"],
    )
    orchestrator_token: SecretStr | None = Field(
        None, description="bearer token for the orchestrator (never logged)", examples=["hb-token"]
    )
    orchestrator_ca_file: Path | None = Field(
        None,
        description="PEM bundle of the CAs trusted for the orchestrator's certificate; unset: "
        "the system's trust store",
        examples=["/etc/python-worker/tls/company-ca.pem"],
    )
    orchestrator_client_cert_file: Path | None = Field(
        None,
        description="client certificate (PEM) shown to the orchestrator (mutual TLS); with "
        "ORCHESTRATOR_CLIENT_KEY_FILE",
        examples=["/etc/python-worker/tls/worker.crt"],
    )
    orchestrator_client_key_file: Path | None = Field(
        None,
        validate_default=True,
        description="unencrypted private key (PEM) of ORCHESTRATOR_CLIENT_CERT_FILE",
        examples=["/etc/python-worker/tls/worker.key"],
    )
    status_update_url: str = Field(
        "http://localhost:8080/api/jobs/status",
        description="full URL for job status updates",
        examples=["http://api.internal:8080/api/jobs/status"],
    )
    status_max_in_flight: int = Field(
        450,
        ge=1,
        le=10_000,
        description=(
            "status requests in flight at once, each on its own connection to the status API; "
            "bounds jobs/s to STATUS_MAX_IN_FLIGHT / (2 x the API's latency)"
        ),
        examples=[450],
    )
    status_api_token: SecretStr | None = Field(
        None, description="bearer token for the status API (never logged)", examples=["api-token"]
    )
    status_api_ca_file: Path | None = Field(
        None,
        description="PEM bundle of the CAs trusted for the status API's certificate; unset: "
        "the system's trust store",
        examples=["/etc/python-worker/tls/company-ca.pem"],
    )
    status_api_client_cert_file: Path | None = Field(
        None,
        description="client certificate (PEM) shown to the status API (mutual TLS); with "
        "STATUS_API_CLIENT_KEY_FILE",
        examples=["/etc/python-worker/tls/worker.crt"],
    )
    status_api_client_key_file: Path | None = Field(
        None,
        validate_default=True,
        description="unencrypted private key (PEM) of STATUS_API_CLIENT_CERT_FILE",
        examples=["/etc/python-worker/tls/worker.key"],
    )

    @field_validator("orchestrator_url", "status_update_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value

    @field_validator(
        "orchestrator_ca_file",
        "orchestrator_client_cert_file",
        "orchestrator_client_key_file",
        "status_api_ca_file",
        "status_api_client_cert_file",
        "status_api_client_key_file",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # An env file's `STATUS_API_CA_FILE=` means "not set", not the current directory.
        return None if value == "" else value

    @field_validator("orchestrator_ca_file", "status_api_ca_file")
    @classmethod
    def _ca_bundle(cls, value: Path | None) -> Path | None:
        if value is not None:
            check_ca_file(value)
        return value

    @field_validator("orchestrator_client_cert_file", "status_api_client_cert_file")
    @classmethod
    def _client_certificate(cls, value: Path | None) -> Path | None:
        if value is not None:
            check_certificate_file(value)
        return value

    @field_validator("orchestrator_client_key_file", "status_api_client_key_file")
    @classmethod
    def _client_key(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        certificate_field = str(info.field_name).replace("_key_file", "_cert_file")
        if certificate_field not in info.data:
            return value  # the certificate was refused: that is the error to show
        certificate: Path | None = info.data[certificate_field]
        certificate_setting = certificate_field.upper()
        if value is None and certificate is None:
            return None
        if value is None:
            raise ValueError(
                f"unset, but {certificate_setting} is set: a client certificate needs its "
                "private key"
            )
        if certificate is None:
            raise ValueError(
                f"set, but {certificate_setting} is not: set both for mutual TLS, or neither"
            )
        check_client_certificate(certificate, value, certificate_setting)
        return value

    @property
    def heartbeat_url(self) -> str:
        return self.orchestrator_url.rstrip("/") + HEARTBEAT_PATH

    @property
    def status_api_tls(self) -> ClientTls:
        return _client_tls(
            self.status_api_ca_file,
            self.status_api_client_cert_file,
            self.status_api_client_key_file,
        )

    @property
    def orchestrator_tls(self) -> ClientTls:
        return _client_tls(
            self.orchestrator_ca_file,
            self.orchestrator_client_cert_file,
            self.orchestrator_client_key_file,
        )

    def status_api_ssl_context(self) -> ssl.SSLContext | None:
        """The status transport's TLS context; None for a plain http STATUS_UPDATE_URL."""
        return self.status_api_tls.context_for(self.status_update_url)

    def proxy_in_the_way(self) -> str | None:
        """Why a proxy variable in the environment stops `run` and `check`, or None.

        The worker connects to both APIs directly; a proxy meant for them would be ignored
        silently otherwise, and the worker would fail where curl succeeds.
        """
        return proxy_in_the_way(
            {"STATUS_UPDATE_URL": self.status_update_url, "ORCHESTRATOR_URL": self.heartbeat_url}
        )

    def http_preflights(self) -> list[HttpEndpointPreflight]:
        """`check`'s look at the status API and the orchestrator, with the worker's TLS."""
        return [
            HttpEndpointPreflight(
                "status API",
                self.status_update_url,
                _secret(self.status_api_token),
                url_variable="STATUS_UPDATE_URL",
                token_variable="STATUS_API_TOKEN",
                tls=self.status_api_tls,
                tls_prefix="STATUS_API",
            ),
            HttpEndpointPreflight(
                "orchestrator",
                self.heartbeat_url,
                _secret(self.orchestrator_token),
                url_variable="ORCHESTRATOR_URL",
                token_variable="ORCHESTRATOR_TOKEN",
                tls=self.orchestrator_tls,
                tls_prefix="ORCHESTRATOR",
            ),
        ]


def _client_tls(ca_file: Path | None, cert: Path | None, key: Path | None) -> ClientTls:
    # The validators ensure that both or neither of a certificate and its key are set.
    client_cert = (cert, key) if cert is not None and key is not None else None
    return ClientTls(ca_file=ca_file, client_cert=client_cert)


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None
