"""The RabbitMQ settings (`RABBITMQ_*`, `QUEUE_TYPE`), a part of the worker's `Settings`."""

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings

from python_worker.adapters.rabbitmq.connection import BrokerConfig


class RabbitMQSettings(BaseSettings):
    """Where the broker is, how to log in, and what the worker declares there.

    Mixed into the worker's `Settings` (bootstrap), which reads them from the environment with
    the rest and reports a bad value the same way; each field's `examples[0]` is the good value
    shown then.
    """

    rabbitmq_host: str = Field(
        "localhost",
        min_length=1,
        description="broker host; a comma-separated list means cluster nodes tried in turn",
        examples=["rabbit1.internal,rabbit2.internal"],
    )
    rabbitmq_port: int = Field(5672, ge=1, le=65535, description="broker port", examples=[5672])
    rabbitmq_username: str = Field(
        "guest", min_length=1, description="broker user", examples=["worker"]
    )
    rabbitmq_password: SecretStr = Field(
        SecretStr("guest"), description="broker password (never logged)", examples=["s3cret"]
    )
    rabbitmq_vhost: str = Field("/", min_length=1, description="virtual host", examples=["/jobs"])
    rabbitmq_heartbeat: int = Field(
        30,
        ge=1,
        le=3600,
        description="AMQP heartbeat (s); a silent dead link is noticed within 2 x (this + 5) s",
        examples=[30],
    )
    rabbitmq_tls: bool = Field(False, description="connect with TLS (amqps)", examples=["true"])
    rabbitmq_ca_file: Path | None = Field(
        None,
        description="CA bundle to verify the broker's certificate (TLS)",
        examples=["/etc/ssl/rabbit-ca.pem"],
    )
    rabbitmq_tls_server_name: str | None = Field(
        None,
        description="name to verify in the broker's certificate, when it differs from the host",
        examples=["rabbit.internal"],
    )
    rabbitmq_prefetch: int | None = Field(
        None,
        ge=1,
        le=10_000,
        description=(
            "unacknowledged messages per queue consumer; default WORKER_CAPACITY + "
            "STATUS_MAX_IN_FLIGHT + 10 (see Priority)"
        ),
        examples=[120],
    )
    queue_type: Literal["classic", "quorum"] = Field(
        "classic",
        description="type of job queues this worker declares (quorum for new deployments)",
        examples=["quorum"],
    )

    @field_validator("rabbitmq_host")
    @classmethod
    def _some_host(cls, value: str) -> str:
        if not any(host.strip() for host in value.split(",")):
            raise ValueError("must name at least one host")
        return value

    def broker_config(self, max_delivery_attempts: int) -> BrokerConfig:
        """The connection parameters and queue arguments these settings describe."""
        return BrokerConfig(
            hosts=[host.strip() for host in self.rabbitmq_host.split(",") if host.strip()],
            port=self.rabbitmq_port,
            username=self.rabbitmq_username,
            password=self.rabbitmq_password.get_secret_value(),
            vhost=self.rabbitmq_vhost,
            heartbeat=self.rabbitmq_heartbeat,
            tls=self.rabbitmq_tls,
            ca_file=self.rabbitmq_ca_file,
            tls_server_name=self.rabbitmq_tls_server_name,
            queue_type=self.queue_type,
            max_delivery_attempts=max_delivery_attempts,
        )
