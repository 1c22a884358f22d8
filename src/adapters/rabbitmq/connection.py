"""Connection parameters and the contract §3 topology, shared by the consumer and the publisher."""

import logging
import re
import ssl
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Self

import pika
import pika.exceptions

from python_worker.application.dead_letters import iso_utc
from python_worker.application.process_job import broker_delivery_limit
from python_worker.domain.jobs import Priority

log = logging.getLogger(__name__)

EXCHANGE = "jobs.exchange"
DEAD_LETTER_QUEUE = "job.dead-letter"
JOB_QUEUES = [priority.queue for priority in Priority.by_rank()]

PRECONDITION_FAILED = 406
ACCESS_REFUSED = 403
NOT_FOUND = 404

REASON_HEADER = "x-worker-reason"
WORKER_HEADER = "x-worker-id"
ORIGINAL_QUEUE_HEADER = "x-original-queue"
DEAD_LETTERED_AT_HEADER = "x-dead-lettered-at"
ATTEMPTS_HEADER = "x-worker-attempts"
"""What a message the worker refused carries on job.dead-letter (contract §3)."""
EARLIER_ATTEMPTS_HEADER = "x-earlier-attempts"
"""On a message `dead-letters requeue` put back: the job's attempts before (Delivery)."""


def dead_letter_headers(
    reason: str | None, worker_id: str, queue: str, when: datetime, attempts: int = 1
) -> dict[str, str | int]:
    """The headers that say why, by whom, from where, when and after how many attempts at the
    job (replays included) a message was dead-lettered."""
    return {
        REASON_HEADER: reason or "(no reason given)",
        WORKER_HEADER: worker_id,
        ORIGINAL_QUEUE_HEADER: queue,
        DEAD_LETTERED_AT_HEADER: iso_utc(when),
        ATTEMPTS_HEADER: attempts,
    }


@dataclass(frozen=True)
class BrokerConfig:
    """Where the broker is and how to log in; the password never shows in a repr."""

    hosts: list[str]
    port: int = 5672
    username: str = "guest"
    password: str = field(default="guest", repr=False)
    vhost: str = "/"
    heartbeat: int = 30
    tls: bool = False
    ca_file: Path | None = None
    tls_server_name: str | None = None
    queue_type: str = "classic"
    max_delivery_attempts: int = 5
    ports: list[int] | None = None
    """Each host's own port, in the order of `hosts`, when nodes differ (several on one host);
    None: every node listens on `port`."""
    configured_by: str | None = None
    """The one variable the nodes and credentials came from (RABBITMQ_URL), for fix hints;
    None: the separate RABBITMQ_* variables."""
    connection_name: str = "python-worker"
    """What the broker shows for this client's connections (`rabbitmqctl list_connections
    client_properties`, the management UI)."""

    def __post_init__(self) -> None:
        if self.ports is not None and len(self.ports) != len(self.hosts):
            raise ValueError("BrokerConfig.ports needs one port per host")

    @property
    def nodes(self) -> list[tuple[str, int]]:
        """(host, port) of every node, in the order they are tried."""
        ports = self.ports if self.ports is not None else [self.port] * len(self.hosts)
        return list(zip(self.hosts, ports, strict=True))

    def node(self, host: str, port: int) -> Self:
        """This config narrowed to one of its nodes."""
        return replace(self, hosts=[host], port=port, ports=None)

    def where(self, host: str | None = None, port: int | None = None) -> str:
        """`amqp://user@host:port/vhost` for log lines: no password, ever."""
        scheme = "amqps" if self.tls else "amqp"
        vhost = self.vhost.lstrip("/")
        if host is not None:
            if port is None:
                port = next((p for h, p in self.nodes if h == host), self.port)
            return f"{scheme}://{self.username}@{host}:{port}/{vhost}"
        if len({port for _host, port in self.nodes}) == 1:
            hosts = ",".join(self.hosts)
            return f"{scheme}://{self.username}@{hosts}:{self.nodes[0][1]}/{vhost}"
        nodes = ",".join(f"{host}:{port}" for host, port in self.nodes)
        return f"{scheme}://{self.username}@{nodes}/{vhost}"

    def parameters(self, *, heartbeat: int | None = None) -> list[pika.ConnectionParameters]:
        """One parameter set per node, tried in turn by `BlockingConnection`."""
        credentials = pika.PlainCredentials(self.username, self.password, erase_on_connect=False)
        return [
            pika.ConnectionParameters(
                host=host,
                port=port,
                virtual_host=self.vhost,
                credentials=credentials,
                heartbeat=self.heartbeat if heartbeat is None else heartbeat,
                # We retry forever ourselves, with backoff and a log line per attempt.
                connection_attempts=1,
                socket_timeout=5,
                stack_timeout=15,
                blocked_connection_timeout=300,
                ssl_options=self._ssl_options(host),
                client_properties={"connection_name": self.connection_name},
            )
            for host, port in self.nodes
        ]

    def _ssl_options(self, host: str) -> pika.SSLOptions | None:
        if not self.tls:
            return None
        # create_default_context verifies the certificate chain and the host name; we never
        # downgrade to CERT_NONE.
        context = ssl.create_default_context(
            cafile=str(self.ca_file) if self.ca_file is not None else None
        )
        return pika.SSLOptions(context, server_hostname=self.tls_server_name or host)


def connect(config: BrokerConfig) -> pika.BlockingConnection:
    """Connect to the first listed node that answers, logging each one that does not.

    We walk the list ourselves: pika's own list handling gives up at the first node whose name
    does not resolve, and would not say which node failed.
    """
    failure: Exception | None = None
    for (host, port), parameters in zip(config.nodes, config.parameters(), strict=True):
        try:
            return pika.BlockingConnection(parameters)
        except (pika.exceptions.AMQPConnectionError, OSError) as exc:
            failure = exc
            if len(config.hosts) > 1:
                log.warning(
                    "broker node %s unreachable: %s", config.where(host, port), describe(exc)
                )
    assert failure is not None, "BrokerConfig.hosts is never empty"
    raise failure


def close_quietly(connection: pika.BlockingConnection) -> None:
    """Close a connection that may be broken already; nothing more to release if so."""
    try:
        if connection.is_open:
            connection.close()
    except Exception:
        log.debug("ignoring error while closing a broken connection", exc_info=True)


def describe(exc: BaseException) -> str:
    """An exception as one log-friendly line (pika's messages carry no credentials)."""
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text}"


def queue_arguments(config: BrokerConfig) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "x-dead-letter-exchange": EXCHANGE,
        "x-dead-letter-routing-key": DEAD_LETTER_QUEUE,
    }
    if config.queue_type == "quorum":
        arguments["x-queue-type"] = "quorum"
        # A backstop above the worker's own rule: only a message that crashes every worker
        # even then is dead-lettered by the broker itself, without a status.
        arguments["x-delivery-limit"] = broker_delivery_limit(config.max_delivery_attempts) + 1
    return arguments


def wanted_queues(config: BrokerConfig) -> list[tuple[str, dict[str, Any]]]:
    """Every queue the worker declares, with its arguments, dead-letter queue first."""
    dead_letter_arguments = {"x-queue-type": "quorum"} if config.queue_type == "quorum" else {}
    return [(DEAD_LETTER_QUEUE, dead_letter_arguments)] + [
        (queue, queue_arguments(config)) for queue in JOB_QUEUES
    ]


def other_type(queue: str, wanted: str, reply_text: str) -> str | None:
    """The line for a queue that exists with another type than QUEUE_TYPE; None if not that.

    RabbitMQ's 406 names the argument, `x-queue-type`, and says `current is none` for a queue
    declared without one: a classic queue.
    """
    if "'x-queue-type'" not in reply_text:
        return None
    found = re.search(r"current is the value '([\w-]+)'", reply_text)
    current = found.group(1) if found else "classic"
    return (
        f"queue {queue} is a {current} queue, not {wanted} as QUEUE_TYPE={wanted} says; using "
        f"it as it is (a queue's type cannot change in place: docs/operations.md, \"Moving "
        f'classic queues to quorum") ({reply_text})'
    )


def declare_topology(connection: pika.BlockingConnection, config: BrokerConfig) -> None:
    """Declare exchange, job queues and dead-letter queue; idempotent.

    A queue that already exists with other arguments closes the channel with 406
    (`inequivalent arg`). We say which queue and argument differ — RabbitMQ's reply text
    names both — and carry on with the queue as it is, checked by a passive declare.
    """
    channel = connection.channel()
    channel.exchange_declare(EXCHANGE, exchange_type="direct", durable=True)
    for queue, arguments in wanted_queues(config):
        try:
            channel.queue_declare(queue, durable=True, arguments=arguments)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != PRECONDITION_FAILED:
                raise
            log.warning(
                "%s",
                other_type(queue, config.queue_type, exc.reply_text)
                or f"queue {queue} exists with different arguments; using it as it is "
                f"({exc.reply_text})",
            )
            channel = connection.channel()
            channel.queue_declare(queue, passive=True)
        channel.queue_bind(queue, EXCHANGE, routing_key=queue)
    channel.close()
