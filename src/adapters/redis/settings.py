"""The Redis settings (`REDIS_*`), a part of the worker's `Settings`."""

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings

from python_worker.adapters.redis.config import RedisConfig, without_password


class RedisSettings(BaseSettings):
    """Where Redis is, how to log in, and how long an entry may sit idle before it is claimed.

    Mixed into the worker's `Settings` (bootstrap), which reads them from the environment with
    the rest and reports a bad value the same way; each field's `examples[0]` is the good value
    shown then. `REDIS_URL` is a secret as a whole: it may carry the password, and a bad value
    must not print it.
    """

    redis_url: SecretStr = Field(
        SecretStr("redis://localhost:6379/0"),
        description=(
            "Redis server for WORKER_BROKER=redis: redis://[user@]host:port/db, rediss:// for TLS; "
            "a password in it is never logged"
        ),
        examples=["rediss://worker@redis.internal:6380/0"],
    )
    redis_password: SecretStr | None = Field(
        None,
        description="Redis password (never logged); wins over one in REDIS_URL",
        examples=["s3cret"],
    )
    redis_ca_file: Path | None = Field(
        None,
        description="CA bundle to verify the Redis server's certificate (rediss://)",
        examples=["/etc/ssl/redis-ca.pem"],
    )
    redis_claim_idle_seconds: float = Field(
        30,
        ge=1,
        le=3600,
        description=(
            "a stream entry its worker stopped renewing (killed, cut off) for this long is "
            "claimed by another worker; each worker renews its own every third of it"
        ),
        examples=[30],
    )
    redis_prefetch: int | None = Field(
        None,
        ge=1,
        le=10_000,
        description=(
            "entries per stream one worker holds unacknowledged; default WORKER_CAPACITY + "
            "STATUS_MAX_IN_FLIGHT + 10, as RABBITMQ_PREFETCH"
        ),
        examples=[120],
    )

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: SecretStr) -> SecretStr:
        parts = urlsplit(value.get_secret_value())
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            raise ValueError("must be a redis:// or rediss:// URL with a host")
        try:
            _ = parts.port
        except ValueError:
            raise ValueError("the port must be a number from 1 to 65535") from None
        database = parts.path.lstrip("/")
        if database and not database.isdigit():
            raise ValueError("the path must be a database number, e.g. /0")
        return value

    def redis_config(self) -> RedisConfig:
        """The connection parameters these settings describe."""
        url, password_in_url = without_password(self.redis_url.get_secret_value())
        password = (
            self.redis_password.get_secret_value()
            if self.redis_password is not None
            else password_in_url
        )
        return RedisConfig(
            url=url,
            password=password,
            ca_file=self.redis_ca_file,
            claim_idle_seconds=self.redis_claim_idle_seconds,
        )

    def redis_secrets(self) -> list[str | None]:
        """Values no printed line may show: the password, wherever it was given."""
        return [self.redis_config().password]
