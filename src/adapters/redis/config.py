"""Where Redis is and how to log in: what the settings make, without the client library.

The `redis` library is imported only when a client is made: it costs a worker about 7 MiB of
resident memory (bench/: 64.8 against 57.3 MiB peak RSS with it imported at start-up), which a
worker on RabbitMQ, whose settings still include Redis's, has no use for.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    import redis


@dataclass(frozen=True)
class RedisConfig:
    """Where Redis is and how to log in; the password never shows in a repr or a log line."""

    url: str = "redis://localhost:6379/0"
    """The server's URL without its password (`RedisSettings` takes it out)."""
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    claim_idle_seconds: float = 30.0
    socket_timeout: float = 10.0

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "rediss"

    @property
    def username(self) -> str | None:
        return urlsplit(self.url).username

    def where(self) -> str:
        """`redis://user@host:port/db` for log lines: no password, ever."""
        return self.url

    def client(self, *, socket_timeout: float | None = None) -> "redis.Redis":
        """A client with a pool of its own; it connects on first use. Each thread of ours owns
        one, so each has its connection (a blocking read never holds up an acknowledgement)."""
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        options: dict[str, Any] = {}
        if self.tls and self.ca_file is not None:
            options["ssl_ca_certs"] = str(self.ca_file)
        return redis.Redis.from_url(
            self.url,
            password=self.password,
            socket_timeout=socket_timeout or self.socket_timeout,
            socket_connect_timeout=5,
            socket_keepalive=True,
            health_check_interval=30,
            # No silent retries: a retried XADD whose first reply was lost would add the job
            # twice, and our own loops retry forever with backoff and a log line per attempt.
            retry=Retry(NoBackoff(), 0),
            **options,
        )


def without_password(url: str) -> tuple[str, str | None]:
    """(the URL without its password, the password it carried)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url, None
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}@{host}" if user else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)), (
        parts.password
    )
