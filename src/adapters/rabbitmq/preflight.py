"""The broker half of `python-worker check`: every node, the topology, the permissions.

Every check is harmless. It does what the worker does at every connect (declare the exchange
and queues with the worker's arguments, bind them), takes no job (a consumer with prefetch 1
that is cancelled at once; pika hands back, unacknowledged, anything delivered in between) and
publishes nothing that can become a job (a probe with a routing key no queue is bound to).
"""

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import pika
import pika.exceptions

from python_worker.adapters.network import describe_network_error
from python_worker.adapters.rabbitmq.connection import (
    ACCESS_REFUSED,
    EXCHANGE,
    JOB_QUEUES,
    PRECONDITION_FAILED,
    BrokerConfig,
    close_quietly,
    wanted_queues,
)
from python_worker.application.ports import CheckResult, Outcome, Preflight

# Routed nowhere: no queue is bound to jobs.exchange with this key, so the probe is dropped.
PROBE_ROUTING_KEY = "python-worker.preflight.probe"
PROBE_BODY = b'{"preflight": true}'
# A consumer priority below the workers' (0): while workers have room, the broker hands
# messages to them rather than to the probe consumer.
PROBE_CONSUMER_PRIORITY = -100


class RabbitMQPreflight(Preflight):
    """The broker checks for one `BrokerConfig`."""

    def __init__(self, config: BrokerConfig) -> None:
        self._config = config

    def checks(self) -> Iterator[CheckResult]:
        return _broker_checks(self._config)


def permissions_command(config: BrokerConfig) -> str:
    """The one command that grants exactly what the worker needs (no password in it)."""
    return (
        f"rabbitmqctl set_permissions -p {config.vhost} {config.username} "
        "'^jobs?\\.' '^jobs?\\.' '^jobs?\\.'"
    )


def permissions_fix(config: BrokerConfig) -> str:
    return (
        f"grant {config.username} configure, write and read on jobs.exchange and the job.* "
        f"queues: {permissions_command(config)}"
    )


def _broker_checks(config: BrokerConfig) -> Iterator[CheckResult]:
    connected: list[tuple[str, pika.BlockingConnection]] = []
    with _quiet_pika():
        try:
            for host, port in config.nodes:
                result, connection = _connect_node(config, host, port)
                yield result
                if connection is not None:
                    connected.append((host, connection))
            if not connected:
                yield CheckResult(
                    Outcome.SKIP, "broker topology and permissions not checked: no node reachable"
                )
                return
            # Nodes of one cluster share topology and permissions: checking them on one is
            # checking them on all.
            host, connection = connected[0]
            yield from _topology_checks(config, host, connection)
        finally:
            for _host, connection in connected:
                close_quietly(connection)


def _node_name(config: BrokerConfig, host: str, port: int) -> str:
    scheme = " (TLS)" if config.tls else ""
    return f"broker node {host}:{port}{scheme} (vhost {config.vhost})"


def _connect_node(
    config: BrokerConfig, host: str, port: int
) -> tuple[CheckResult, pika.BlockingConnection | None]:
    node = _node_name(config, host, port)
    # Fix hints name the variable the operator actually set: RABBITMQ_URL, or the separate ones.
    credentials = config.configured_by or "RABBITMQ_USERNAME and RABBITMQ_PASSWORD"
    try:
        connection = pika.BlockingConnection(config.node(host, port).parameters()[0])
    except pika.exceptions.ProbableAuthenticationError:
        return CheckResult(
            Outcome.FAIL,
            f"{node}: login refused for user {config.username!r}",
            f"check {credentials} "
            f"(on the broker: rabbitmqctl authenticate_user {config.username} <password>)",
        ), None
    except pika.exceptions.ProbableAccessDeniedError as exc:
        return CheckResult(
            Outcome.FAIL,
            f"{node}: vhost refused ({_reply_text(exc)})",
            f"check {config.configured_by or 'RABBITMQ_VHOST'}; the vhost must exist and "
            f"{config.username} needs permissions on it: {permissions_command(config)}",
        ), None
    except (pika.exceptions.AMQPError, OSError) as exc:
        problem, fix = describe_network_error(exc, f"RabbitMQ on {host}:{port}", "RABBITMQ_CA_FILE")
        fix += f" (or take the node out of {config.configured_by or 'RABBITMQ_HOST'})"
        return CheckResult(Outcome.FAIL, f"{node}: {problem}", fix), None
    version = _server_version(connection)
    return CheckResult(
        Outcome.OK, f"{node} reachable, logged in as {config.username}{version}"
    ), connection


def _server_version(connection: pika.BlockingConnection) -> str:
    # pika keeps the broker's connection.start properties on the impl; no public accessor.
    properties: dict[str, Any] = getattr(connection._impl, "server_properties", None) or {}
    product, version = properties.get("product"), properties.get("version")
    if isinstance(product, bytes):
        product = product.decode("utf-8", "replace")
    if isinstance(version, bytes):
        version = version.decode("utf-8", "replace")
    return f" ({product} {version})" if product and version else ""


def _topology_checks(
    config: BrokerConfig, host: str, connection: pika.BlockingConnection
) -> Iterator[CheckResult]:
    where = f" (on {host})" if len(config.hosts) > 1 else ""
    fix_permissions = permissions_fix(config)
    channel = connection.channel()
    try:
        channel.exchange_declare(EXCHANGE, exchange_type="direct", durable=True)
        yield CheckResult(Outcome.OK, f"exchange {EXCHANGE} (direct, durable) declared{where}")
    except pika.exceptions.ChannelClosedByBroker as exc:
        channel = connection.channel()
        if exc.reply_code == PRECONDITION_FAILED:
            yield CheckResult(
                Outcome.FAIL,
                f"exchange {EXCHANGE} exists with other properties: {exc.reply_text}",
                f"delete {EXCHANGE} (the worker re-creates it as a durable direct exchange and "
                "binds its queues again) or have it re-created by whoever owns it",
            )
        else:
            yield _refused(f"declare exchange {EXCHANGE}", exc, fix_permissions)

    for queue, arguments in wanted_queues(config):
        result, channel = _queue_check(connection, channel, queue, arguments, config)
        yield result

    # Read: the worker consumes the three job queues.
    probed, not_probed, refused = [], [], []
    for queue in JOB_QUEUES:
        try:
            waiting = channel.queue_declare(queue, passive=True).method.message_count
            if config.queue_type == "quorum" and waiting:
                # A message handed back by a quorum queue counts as a delivery attempt.
                not_probed.append(f"{queue} ({waiting} waiting)")
                continue
            _probe_consume(channel, queue)
            probed.append(queue)
        except pika.exceptions.ChannelClosedByBroker as exc:
            channel = connection.channel()
            refused.append(f"{queue} ({exc.reply_code} {exc.reply_text})")
    if refused:
        yield CheckResult(Outcome.FAIL, "consume refused on " + "; ".join(refused), fix_permissions)
    if probed:
        yield CheckResult(
            Outcome.OK,
            f"consume permitted on {', '.join(probed)} (probe consumer cancelled at once; "
            "nothing acknowledged)",
        )
    if not_probed:
        yield CheckResult(
            Outcome.SKIP,
            f"consume on {', '.join(not_probed)} not probed: a quorum queue counts a message "
            "handed back as a delivery attempt",
        )

    # Write on the exchange: declaring a queue that dead-letters to it needs it, and so does
    # every producer (`python-worker publish`).
    try:
        channel.confirm_delivery()
        channel.basic_publish(EXCHANGE, PROBE_ROUTING_KEY, PROBE_BODY, mandatory=False)
        yield CheckResult(
            Outcome.OK,
            f"publish to {EXCHANGE} confirmed (a probe routed to no queue: no job created)",
        )
    except pika.exceptions.ChannelClosedByBroker as exc:
        yield _refused(f"publish to {EXCHANGE}", exc, fix_permissions)
    except pika.exceptions.NackError:
        yield CheckResult(
            Outcome.FAIL,
            f"publish to {EXCHANGE} was nacked by the broker",
            "see the broker's log (disk or memory alarm? queue limits?)",
        )
    with contextlib.suppress(pika.exceptions.AMQPError):
        if channel.is_open:
            channel.close()


def _queue_check(
    connection: pika.BlockingConnection,
    channel: Any,
    queue: str,
    arguments: dict[str, Any],
    config: BrokerConfig,
) -> tuple[CheckResult, Any]:
    """Declare and bind `queue` as the worker does; returns the result and a usable channel."""
    try:
        ok = channel.queue_declare(queue, durable=True, arguments=arguments)
        channel.queue_bind(queue, EXCHANGE, routing_key=queue)
    except pika.exceptions.ChannelClosedByBroker as exc:
        channel = connection.channel()
        if exc.reply_code != PRECONDITION_FAILED:
            return _refused(
                f"declare and bind queue {queue}", exc, permissions_fix(config)
            ), channel
        # The worker logs this same text and uses the queue as it is (contract §3).
        counts = ""
        try:
            counts = _counts(channel.queue_declare(queue, passive=True))
            channel.queue_bind(queue, EXCHANGE, routing_key=queue)
        except pika.exceptions.ChannelClosedByBroker as bind_exc:
            channel = connection.channel()
            return _refused(f"bind queue {queue}", bind_exc, permissions_fix(config)), channel
        return CheckResult(
            Outcome.WARN,
            f"queue {queue} exists with other arguments{counts}; the worker uses it as it is "
            f"({exc.reply_text})",
            "to align it: stop the workers, move its messages away, "
            f"rabbitmqctl delete_queue -p {config.vhost} {queue}, start a worker (it re-creates "
            "the queue); or keep it as it is (see docs/operations.md)",
        ), channel
    return CheckResult(Outcome.OK, f"queue {queue} declared and bound{_counts(ok)}"), channel


def _counts(ok: Any) -> str:
    method = ok.method
    return f" ({method.message_count} ready, {method.consumer_count} consumers)"


def _probe_consume(channel: Any, queue: str) -> None:
    """Prove read permission on `queue` without taking a message.

    basic.consume is what needs the permission (AMQP has no way to ask for it). The probe
    consumer has a priority below the workers', so while a worker has room the broker hands
    messages to the worker; otherwise, with prefetch 1, at most one message can be delivered
    before the cancel. pika's `basic_cancel` rejects with requeue whatever arrived for a
    manual-ack consumer and was not dispatched (ours never is: no events are processed in
    between), so such a message keeps its place in a classic queue, marked redelivered.
    """
    channel.basic_qos(prefetch_count=1)
    tag = channel.basic_consume(
        queue,
        _hand_back,
        auto_ack=False,
        arguments={"x-priority": PROBE_CONSUMER_PRIORITY},
    )
    channel.basic_cancel(tag)


def _hand_back(channel: Any, method: Any, _properties: Any, _body: bytes) -> None:
    channel.basic_nack(method.delivery_tag, requeue=True)


def _refused(action: str, exc: pika.exceptions.ChannelClosedByBroker, fix: str) -> CheckResult:
    if exc.reply_code == ACCESS_REFUSED:
        return CheckResult(Outcome.FAIL, f"{action}: access refused ({exc.reply_text})", fix)
    return CheckResult(
        Outcome.FAIL,
        f"{action}: refused by the broker ({exc.reply_code} {exc.reply_text})",
        "see the broker's log",
    )


def _reply_text(exc: BaseException) -> str:
    text = str(exc.args[0]) if exc.args else str(exc)
    # pika wraps the broker's close as "ConnectionClosedByBroker: (530) 'NOT_ALLOWED - …'".
    if ") " in text:
        text = text.split(") ", 1)[1]
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
            text = text[1:-1]
    return text


@contextlib.contextmanager
def _quiet_pika() -> Iterator[None]:
    # pika logs each failed connection attempt with a traceback at ERROR; our lines say it.
    logger = logging.getLogger("pika")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)
