"""The settings of logging and of the metrics and health endpoints."""

from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings


class ObservabilitySettings(BaseSettings):
    """How the worker logs, and where it serves /metrics, /healthz and /readyz.

    Mixed into the worker's `Settings` (bootstrap); each field's `examples[0]` is the good value
    shown when a bad one stops start-up.
    """

    metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="port for /metrics (Prometheus), /healthz and /readyz; off when unset",
        examples=[9100],
    )
    metrics_host: str = Field(
        "0.0.0.0",
        min_length=1,
        description="address the metrics and health endpoints listen on",
        examples=["127.0.0.1"],
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="log line format", examples=["json"]
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="least severe level logged", examples=["INFO"]
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value
