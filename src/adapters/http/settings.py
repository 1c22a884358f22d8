"""The settings of the HTTP adapters: the status API and the orchestrator."""

from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings

from python_worker.adapters.http.heartbeat_sink import HEARTBEAT_PATH
from python_worker.adapters.http.preflight import HttpEndpointPreflight


class HttpSettings(BaseSettings):
    """Where statuses and heartbeats go, with which tokens, how many requests at once.

    Mixed into the worker's `Settings` (bootstrap); each field's `examples[0]` is the good value
    shown when a bad one stops start-up.
    """

    orchestrator_url: str = Field(
        "http://localhost:8081",
        description="base URL; heartbeats go to ${ORCHESTRATOR_URL}/api/workers/heartbeat",
        examples=["http://orchestrator.internal:8081"],
    )
    orchestrator_token: SecretStr | None = Field(
        None, description="bearer token for the orchestrator (never logged)", examples=["hb-token"]
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

    @field_validator("orchestrator_url", "status_update_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value

    @property
    def heartbeat_url(self) -> str:
        return self.orchestrator_url.rstrip("/") + HEARTBEAT_PATH

    def http_preflights(self) -> list[HttpEndpointPreflight]:
        """`check`'s look at the status API and the orchestrator."""
        return [
            HttpEndpointPreflight(
                "status API",
                self.status_update_url,
                _secret(self.status_api_token),
                url_variable="STATUS_UPDATE_URL",
                token_variable="STATUS_API_TOKEN",
            ),
            HttpEndpointPreflight(
                "orchestrator",
                self.heartbeat_url,
                _secret(self.orchestrator_token),
                url_variable="ORCHESTRATOR_URL",
                token_variable="ORCHESTRATOR_TOKEN",
            ),
        ]


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None
