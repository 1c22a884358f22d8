"""The RabbitMQ settings (`RABBITMQ_*`, `QUEUE_TYPE`), a part of the worker's `Settings`."""

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import unquote

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings

from python_worker.adapters.rabbitmq.connection import BrokerConfig

URL_EXAMPLE = "amqp://worker:s3cret@rabbit1.internal:5672,rabbit2.internal:5672/%2F"
# What RABBITMQ_URL says by itself; setting one of these as well is a mistake, not a choice.
SAID_BY_THE_URL = (
    "rabbitmq_host",
    "rabbitmq_port",
    "rabbitmq_username",
    "rabbitmq_password",
    "rabbitmq_vhost",
    "rabbitmq_tls",
)
SCHEMES = {"amqp": (False, 5672), "amqps": (True, 5671)}
"""URL scheme -> (TLS, default port)."""
_SCHEME_SYNTAX = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_HOST_WITH_PORT = re.compile(r"[^:\[\]]+:\d*")


class RabbitMQSettings(BaseSettings):
    """Where the broker is, how to log in, and what the worker declares there.

    Mixed into the worker's `Settings` (bootstrap), which reads them from the environment with
    the rest and reports a bad value the same way; each field's `examples[0]` is the good value
    shown then.
    """

    rabbitmq_url: SecretStr | None = Field(
        None,
        description=(
            "the broker as one URL, `amqp[s]://user:password@host:port/vhost` (percent-encoded; "
            "nodes as `host1:port1,host2:port2` or `;`-separated URLs), instead of RABBITMQ_HOST, "
            "_PORT, _USERNAME, _PASSWORD, _VHOST and _TLS (never logged)"
        ),
        examples=[URL_EXAMPLE],
    )
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
        hosts = [host.strip() for host in value.split(",")]
        if not any(hosts):
            raise ValueError("must name at least one host")
        with_port = next((host for host in hosts if _HOST_WITH_PORT.fullmatch(host)), None)
        if with_port is not None:
            # pika would look the whole "host:port" up as a host name, and fail at connect.
            raise ValueError(
                f"{with_port!r} holds a port: give it in RABBITMQ_PORT, or give nodes on "
                "different ports as RABBITMQ_URL=amqp://user:password@host1:port1,host2:port2/"
            )
        return value

    @field_validator("rabbitmq_url")
    @classmethod
    def _broker_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_broker_url(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _one_way_to_the_broker(self) -> Self:
        # A secret may have come from its NAME_FILE instead (bootstrap): name both spellings.
        both = [
            name.upper() + ("[_FILE]" if name == "rabbitmq_password" else "")
            for name in SAID_BY_THE_URL
            if name in self.model_fields_set
        ]
        if self.rabbitmq_url is not None and both:
            # No field of its own: bootstrap shows this message as the whole line.
            raise ValueError(
                f"RABBITMQ_URL is set, and so is {' and '.join(both)}: give the broker either "
                "as RABBITMQ_URL or as the separate RABBITMQ_* variables, not both "
                f"(example: RABBITMQ_URL={URL_EXAMPLE})"
            )
        return self

    def broker_config(self, max_delivery_attempts: int) -> BrokerConfig:
        """The connection parameters and queue arguments these settings describe."""
        common: dict[str, Any] = {
            "heartbeat": self.rabbitmq_heartbeat,
            "ca_file": self.rabbitmq_ca_file,
            "tls_server_name": self.rabbitmq_tls_server_name,
            "queue_type": self.queue_type,
            "max_delivery_attempts": max_delivery_attempts,
        }
        if self.rabbitmq_url is not None:
            url = parse_broker_url(self.rabbitmq_url.get_secret_value())
            return BrokerConfig(
                hosts=[host for host, _port in url.nodes],
                port=url.nodes[0][1],
                ports=[port for _host, port in url.nodes],
                username=url.username,
                password=url.password,
                vhost=url.vhost,
                tls=url.tls,
                configured_by="RABBITMQ_URL",
                **common,
            )
        return BrokerConfig(
            hosts=[host.strip() for host in self.rabbitmq_host.split(",") if host.strip()],
            port=self.rabbitmq_port,
            username=self.rabbitmq_username,
            password=self.rabbitmq_password.get_secret_value(),
            vhost=self.rabbitmq_vhost,
            tls=self.rabbitmq_tls,
            **common,
        )

    def broker_secrets(self) -> list[str | None]:
        """The broker's values no printed line may show: its password, from wherever it came."""
        if self.rabbitmq_url is not None:
            url = parse_broker_url(self.rabbitmq_url.get_secret_value())
            username, password = url.username, url.password
        else:
            username, password = self.rabbitmq_username, self.rabbitmq_password.get_secret_value()
        # guest/guest: the user name is printed on purpose and is no secret.
        return [password if password != username else None]


@dataclass(frozen=True)
class BrokerUrl:
    """What RABBITMQ_URL says: the nodes, the login, the vhost, and whether TLS is on."""

    tls: bool
    nodes: list[tuple[str, int]]
    username: str
    password: str = field(repr=False)
    vhost: str


def parse_broker_url(text: str) -> BrokerUrl:
    """Read `amqp[s]://user:password@host:port,host:port/vhost`, or several `;`-separated.

    The spelling of Celery, kombu and Dramatiq, and of RabbitMQ's URI spec: user, password and
    vhost percent-decoded (`%2F` is `/`); no user means guest/guest, no path the vhost `/`
    (`//` too, as kombu writes it). kombu's failover form, full URLs separated by `;`, is read
    as the nodes of one cluster, so they must agree on scheme, login and vhost. A `ValueError`
    says what is wrong and never holds the password.
    """
    parts = [part.strip() for part in text.split(";") if part.strip()]
    if not parts:
        raise ValueError("is empty: expected amqp://user:password@host:port/vhost")
    urls = [_parse_one_url(part, number, len(parts)) for number, part in enumerate(parts, 1)]
    first = urls[0]
    for number, url in enumerate(urls[1:], start=2):
        differs = [
            what
            for what, attribute in (
                ("scheme", "tls"),
                ("user", "username"),
                ("password", "password"),
                ("vhost", "vhost"),
            )
            if getattr(url, attribute) != getattr(first, attribute)
        ]
        if differs:
            raise ValueError(
                f"the URLs separated by ';' are nodes of one cluster, with one login and vhost, "
                f"but URL {number} differs from the first in its {' and '.join(differs)}"
            )
    return replace(first, nodes=[node for url in urls for node in url.nodes])


def _parse_one_url(text: str, number: int, count: int) -> BrokerUrl:
    which = f"in URL {number}: " if count > 1 else ""
    scheme, separator, rest = text.partition("://")
    if not separator or not _SCHEME_SYNTAX.fullmatch(scheme):
        # Not even a scheme: the text may be anything, a bare password included; echo none.
        raise ValueError(f"{which}must start with amqp:// or amqps://")
    if scheme.lower() not in SCHEMES:
        raise ValueError(f"{which}scheme {scheme!r} is not amqp or amqps")
    tls, default_port = SCHEMES[scheme.lower()]
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, after = rest[:end], rest[end:]
    if "@" in after:
        # Most likely a password with a bare '/', '?' or '#' that ended the host part early.
        raise ValueError(
            f"{which}an '@' after the host: percent-encode '/', '?', '#' and '@' in the user "
            "name, password and vhost (%2F, %3F, %23, %40)"
        )
    path, _, query = after.partition("?")
    if query or "#" in after:
        raise ValueError(
            f"{which}takes no ?query or #fragment: set RABBITMQ_HEARTBEAT, RABBITMQ_CA_FILE "
            "and the like as variables of their own"
        )
    userinfo, at, hosts = authority.rpartition("@")
    username, password = "guest", "guest"
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user)
        if not username:
            raise ValueError(f"{which}the user name before '@' is empty")
        if colon:
            password = unquote(secret)
    nodes = [_parse_node(node.strip(), default_port, which) for node in hosts.split(",")]
    vhost = unquote(path[1:]) if path not in ("", "/") else "/"
    return BrokerUrl(tls=tls, nodes=nodes, username=username, password=password, vhost=vhost)


def _parse_node(text: str, default_port: int, which: str) -> tuple[str, int]:
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"{which}node {text!r}: the IPv6 address lacks its closing ']'")
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"{which}node {text!r}: expected [address]:port")
        has_port, port_text = bool(rest), rest[1:]
    else:
        host, colon, port_text = text.partition(":")
        if ":" in port_text:
            raise ValueError(f"{which}node {text!r}: put an IPv6 address in brackets, [::1]:5672")
        has_port = bool(colon)
    if not host:
        raise ValueError(f"{which}a node without a host (an empty entry in the host list?)")
    if not has_port:
        return host, default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{which}node {text!r}: the port must be a number from 1 to 65535")
    return host, int(port_text)
