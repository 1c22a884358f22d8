"""`python-worker check`: prove, before a start, that the worker can do everything it needs.

Every check is harmless. The broker checks do what the worker does at every connect (declare
the exchange and queues with the worker's arguments, bind them), take no job (a consumer with
prefetch 1 that is cancelled at once; pika hands back, unacknowledged, anything delivered in
between) and publish nothing that can become a job (a probe with a routing key no queue is
bound to). The HTTP checks POST `{"preflight": true}`, which is neither a valid status update
nor a valid heartbeat, so an API that authenticates and validates answers 4xx and stores
nothing. The outbox check writes and deletes one temporary file.

Plain values come in (no settings object); results go out, one per line, never with a secret.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import sqlite3
import ssl
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pika
import pika.exceptions
import requests

from python_worker.adapters.http.outbox import OUTBOX_FILENAME
from python_worker.adapters.rabbitmq.connection import (
    EXCHANGE,
    JOB_QUEUES,
    BrokerConfig,
    wanted_queues,
)

ACCESS_REFUSED = 403
NOT_FOUND = 404
PRECONDITION_FAILED = 406
# Routed nowhere: no queue is bound to jobs.exchange with this key, so the probe is dropped.
PROBE_ROUTING_KEY = "python-worker.preflight.probe"
PROBE_BODY = b'{"preflight": true}'
HTTP_TIMEOUT = (3.0, 5.0)  # connect, read
LOW_DISK_BYTES = 100 * 1024 * 1024
# A consumer priority below the workers' (0): while workers have room, the broker hands
# messages to them rather than to the probe consumer.
PROBE_CONSUMER_PRIORITY = -100


class Outcome(Enum):
    """How one check went; only FAIL makes `python-worker check` exit non-zero."""

    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"
    SKIP = "skip"


@dataclass(frozen=True)
class CheckResult:
    """One check: what was checked and how it went, and for a problem, how to fix it."""

    outcome: Outcome
    what: str
    fix: str = ""

    @property
    def failed(self) -> bool:
        return self.outcome is Outcome.FAIL

    def line(self) -> str:
        """`ok   broker node rabbit1:5672 (vhost /) reachable` or `FAIL … — fix: …`."""
        text = f"{self.outcome.value:<4} {self.what}"
        return f"{text} — fix: {self.fix}" if self.fix else text


@dataclass(frozen=True)
class PreflightTarget:
    """Everything the worker talks to, as plain values (secrets included, never printed)."""

    broker: BrokerConfig
    status_url: str
    heartbeat_url: str
    outbox_dir: Path
    status_token: str | None = None
    orchestrator_token: str | None = None
    outbox_max_items: int | None = None

    def secrets(self) -> list[str]:
        values = [self.broker.password, self.status_token, self.orchestrator_token]
        # guest/guest: the user name is printed on purpose and is no secret.
        return [value for value in values if value and value != self.broker.username]


def run_preflight(target: PreflightTarget) -> list[CheckResult]:
    """Every check, in order."""
    return list(preflight_checks(target))


def preflight_checks(target: PreflightTarget) -> Iterator[CheckResult]:
    """Every check, each yielded as soon as it is done (a slow one shows where it waits)."""
    secrets = target.secrets()
    for result in _all_checks(target):
        yield _redacted(result, secrets)


def _all_checks(target: PreflightTarget) -> Iterator[CheckResult]:
    yield from _broker_checks(target.broker)
    yield _http_check(
        "status API",
        target.status_url,
        target.status_token,
        url_variable="STATUS_UPDATE_URL",
        token_variable="STATUS_API_TOKEN",
    )
    yield _http_check(
        "orchestrator",
        target.heartbeat_url,
        target.orchestrator_token,
        url_variable="ORCHESTRATOR_URL",
        token_variable="ORCHESTRATOR_TOKEN",
    )
    yield _outbox_check(target.outbox_dir, target.outbox_max_items)


# --------------------------------------------------------------------------- broker


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
            for host in config.hosts:
                result, connection = _connect_node(config, host)
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
                _close_quietly(connection)


def _node_name(config: BrokerConfig, host: str) -> str:
    scheme = " (TLS)" if config.tls else ""
    return f"broker node {host}:{config.port}{scheme} (vhost {config.vhost})"


def _connect_node(
    config: BrokerConfig, host: str
) -> tuple[CheckResult, pika.BlockingConnection | None]:
    node = _node_name(config, host)
    single = replace(config, hosts=[host])
    try:
        connection = pika.BlockingConnection(single.parameters()[0])
    except pika.exceptions.ProbableAuthenticationError:
        return CheckResult(
            Outcome.FAIL,
            f"{node}: login refused for user {config.username!r}",
            "check RABBITMQ_USERNAME and RABBITMQ_PASSWORD "
            f"(on the broker: rabbitmqctl authenticate_user {config.username} <password>)",
        ), None
    except pika.exceptions.ProbableAccessDeniedError as exc:
        return CheckResult(
            Outcome.FAIL,
            f"{node}: vhost refused ({_reply_text(exc)})",
            f"check RABBITMQ_VHOST; the vhost must exist and {config.username} needs "
            f"permissions on it: {permissions_command(config)}",
        ), None
    except (pika.exceptions.AMQPError, OSError) as exc:
        problem, fix = _describe_network_error(exc, f"RabbitMQ on {host}:{config.port}")
        fix += " (or take the node out of RABBITMQ_HOST)"
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
        # The worker logs this same text and uses the queue as it is (SPEC §3).
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


def _describe_network_error(exc: BaseException, service: str) -> tuple[str, str]:
    """(problem, fix) for a failure to reach `service`, from whatever pika or requests raised."""
    cause = _root_cause(exc)
    if isinstance(cause, socket.gaierror):
        return "host name not resolved", f"check the host name of {service}"
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused", f"start {service}"
    if isinstance(cause, TimeoutError):
        return (
            "connection timed out",
            f"check that {service} is up and that no firewall drops the traffic",
        )
    if isinstance(cause, ssl.SSLCertVerificationError):
        return (
            f"TLS certificate not trusted ({cause.verify_message})",
            "give the CA that signed the server's certificate (RABBITMQ_CA_FILE for the broker; "
            "HTTPS APIs must have a certificate from a public CA) and connect by a name the "
            "certificate holds",
        )
    if isinstance(cause, ssl.SSLError):
        return f"TLS handshake failed ({cause})", f"check that {service} speaks TLS on that port"
    text = str(cause)
    detail = f"{type(cause).__name__}: {text}" if text else type(cause).__name__
    return f"unreachable ({detail})", f"check that {service} is up"


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost error: pika nests socket errors in args, requests in `__context__`."""
    seen: set[int] = set()
    current = exc
    while id(current) not in seen:
        seen.add(id(current))
        inner = _inner(current)
        if inner is None:
            break
        current = inner
    return current


def _inner(exc: BaseException) -> BaseException | None:
    # pika's AMQPConnectionWorkflowFailed keeps every attempt's error in `exceptions`, its
    # connector errors keep theirs in `exception`.
    errors = getattr(exc, "exceptions", None)
    if isinstance(errors, Sequence) and errors and isinstance(errors[-1], BaseException):
        return errors[-1]
    wrapped = getattr(exc, "exception", None)
    if isinstance(wrapped, BaseException):
        return wrapped
    for arg in exc.args:
        if isinstance(arg, BaseException):
            return arg
        if isinstance(arg, Sequence) and not isinstance(arg, str | bytes):
            for item in arg:
                if isinstance(item, BaseException):
                    return item
    return exc.__cause__ or exc.__context__


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


def _close_quietly(connection: pika.BlockingConnection) -> None:
    with contextlib.suppress(Exception):
        if connection.is_open:
            connection.close()


# --------------------------------------------------------------------------- HTTP


def _http_check(
    name: str, url: str, token: str | None, *, url_variable: str, token_variable: str
) -> CheckResult:
    what = f"{name} {_safe_url(url)}"
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "python-worker-preflight",
        "X-Python-Worker-Preflight": "1",
    }
    if token:
        headers["Authorization"] = f"Bearer {token}"
    session = requests.Session()
    # As the worker's reporter and heartbeat sink: no proxies, .netrc or REQUESTS_CA_BUNDLE
    # from the environment, so the check sees what the worker will see.
    session.trust_env = False
    try:
        with session:
            response = session.post(
                url, data=PROBE_BODY, headers=headers, timeout=HTTP_TIMEOUT, allow_redirects=False
            )
    except requests.exceptions.SSLError as exc:
        problem, fix = _describe_network_error(exc, what)
        return CheckResult(Outcome.FAIL, f"{what}: {problem}", fix)
    except requests.exceptions.Timeout:
        return CheckResult(
            Outcome.FAIL,
            f"{what}: no answer within {HTTP_TIMEOUT[0]:.0f}+{HTTP_TIMEOUT[1]:.0f} s",
            f"check that {name} is up and that no firewall drops the traffic",
        )
    except requests.exceptions.RequestException as exc:
        problem, fix = _describe_network_error(exc, f"the {name}")
        return CheckResult(Outcome.FAIL, f"{what}: {problem}", f"{fix} (or correct {url_variable})")
    with contextlib.closing(response):
        return _judge_answer(what, response, token, url_variable, token_variable)


def _judge_answer(
    what: str,
    response: requests.Response,
    token: str | None,
    url_variable: str,
    token_variable: str,
) -> CheckResult:
    code = response.status_code
    answered = f"{what} reachable: answered {code} to a probe POST"
    if code in (401, 403):
        if token:
            return CheckResult(
                Outcome.FAIL,
                f"{what}: token refused ({code})",
                f"check {token_variable}: the API does not accept it",
            )
        return CheckResult(
            Outcome.FAIL,
            f"{what}: answered {code}: it wants a token",
            f"set {token_variable} to the bearer token the API expects",
        )
    token_note = " (token accepted)" if token else ""
    if 200 <= code < 300 or code in (400, 409, 422):
        return CheckResult(Outcome.OK, answered + token_note)
    if code in (404, 405, 410):
        return CheckResult(
            Outcome.FAIL,
            f"{what}: answered {code} to a POST: not the endpoint the worker posts to",
            f"check {url_variable} (a 4xx answer is not retried: what is sent there is lost)",
        )
    if 300 <= code < 400:
        location = _safe_url(response.headers.get("Location", "?"))
        return CheckResult(
            Outcome.FAIL,
            f"{what}: answered {code}, a redirect to {location}",
            f"point {url_variable} at the final URL (the worker does not follow redirects)",
        )
    if code >= 500 or code == 429:
        return CheckResult(
            Outcome.WARN,
            answered + f"{token_note}: it is unwell; the worker keeps status updates in the "
            "outbox until it recovers",
        )
    return CheckResult(Outcome.WARN, answered + token_note + ": an unexpected answer")


def _safe_url(url: str) -> str:
    """The URL without user info (a password may sit in it)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


# --------------------------------------------------------------------------- outbox


def _outbox_check(directory: Path, max_items: int | None) -> CheckResult:
    what = f"status outbox {directory}"
    fix = "set STATUS_OUTBOX_DIR to a directory the worker's user can create and write"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".preflight-") as probe:
            probe.write(b"preflight")
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return CheckResult(Outcome.FAIL, f"{what}: not writable ({reason})", fix)
    free = shutil.disk_usage(directory).free
    depth = _outbox_depth(directory)
    held = f", holds {depth} undelivered update(s)" if depth else ""
    text = f"{what} writable ({_size(free)} free{held})"
    if free < LOW_DISK_BYTES:
        return CheckResult(
            Outcome.WARN, text + ": little disk left", "free disk space on that filesystem"
        )
    if depth and max_items is not None and depth >= max_items:
        return CheckResult(
            Outcome.WARN,
            text + f": full (STATUS_OUTBOX_MAX_ITEMS={max_items}); the worker takes no new job "
            "until the API takes them",
            "make the status API reachable; the worker replays the outbox oldest-first",
        )
    return CheckResult(Outcome.OK, text)


def _outbox_depth(directory: Path) -> int:
    path = directory / OUTBOX_FILENAME
    if not path.exists():
        return 0
    try:
        with contextlib.closing(
            sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)
        ) as database:
            row = database.execute("SELECT COUNT(*) FROM outbox").fetchone()
    except sqlite3.Error:
        return 0
    return int(row[0]) if row else 0


def _size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


# --------------------------------------------------------------------------- secrets


def _redacted(result: CheckResult, secrets: list[str]) -> CheckResult:
    """Last line of defence: no secret reaches a printed line, whatever an error message held."""
    what, fix = result.what, result.fix
    for secret in secrets:
        if len(secret) < 4:
            continue  # "***" for every "a" in the text would hide more than it protects
        what, fix = what.replace(secret, "***"), fix.replace(secret, "***")
    return replace(result, what=what, fix=fix)
