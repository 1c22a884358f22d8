"""`job.dead-letter` on RabbitMQ for `dead-letters`: read it without losing a message, replay it."""

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pika
import pika.exceptions

from python_worker.adapters.network import describe_network_error
from python_worker.adapters.rabbitmq.connection import (
    ATTEMPTS_HEADER,
    DEAD_LETTER_QUEUE,
    DEAD_LETTERED_AT_HEADER,
    EARLIER_ATTEMPTS_HEADER,
    EXCHANGE,
    JOB_QUEUES,
    NOT_FOUND,
    ORIGINAL_QUEUE_HEADER,
    REASON_HEADER,
    WORKER_HEADER,
    BrokerConfig,
    close_quietly,
    connect,
    describe,
)
from python_worker.adapters.rabbitmq.source import ATTEMPT_HEADER, delivery_attempt
from python_worker.application.dead_letters import (
    RequeuePlan,
    Step,
    dead_lettered_message,
    iso_utc,
    merge_copies,
    plain,
)
from python_worker.application.ports import (
    DeadLetteredMessage,
    DeadLetters,
    DeadLetterSelection,
    DeadLettersUnavailable,
    RequeueReport,
)

log = logging.getLogger(__name__)

EARLIER_DEATHS_HEADER = "x-dead-lettered-before"
"""Times a message had been dead-lettered when a requeue put it back: its next copy on
job.dead-letter carries it on (the worker keeps a message's headers), so `times` adds up."""

SPENT_HEADERS = frozenset(
    {
        REASON_HEADER,
        WORKER_HEADER,
        ORIGINAL_QUEUE_HEADER,
        DEAD_LETTERED_AT_HEADER,
        ATTEMPT_HEADER,
        ATTEMPTS_HEADER,
        EARLIER_ATTEMPTS_HEADER,
        "x-death",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
        "x-delivery-count",
        "x-acquired-count",
    }
)
"""What a requeued message leaves behind. Delivery counts above all: the worker reads them as
earlier attempts, and would treat a replay as a job that keeps crashing it (or re-report the
failure it remembers) instead of running it. The job's attempts so far go on as one number,
EARLIER_ATTEMPTS_HEADER, which only the statuses count on from (`_replay_properties`)."""

QUORUM_READS_WARNING = 10
"""Reads of one message on a quorum job.dead-letter after which `dead-letters` warns (below)."""


class RabbitMQDeadLetters(DeadLetters):
    """`job.dead-letter`, read with `basic.get` and manual acks on a connection of its own.

    What is read and not removed stays unacknowledged until the end, then goes back with one
    `basic.nack(requeue)` for everything outstanding, in the order it was read, to the place
    it had; a process that dies first has its channel closed, which returns them the same
    way. Messages that arrive meanwhile queue up behind them and are not read: each call reads
    at most the depth the queue had when it began. `basic.get` rather than a consumer, so that
    holding any number of unselected messages never stalls a prefetch window.

    On a quorum queue every return counts a delivery (`x-delivery-count`), whether by nack or
    by a closed channel, up to RabbitMQ 4.2; 4.3 counts a nack no more. 4.0 to 4.2 drop a
    message once it passes the queue's delivery limit (20 by default), so a message read
    that often is named in a warning (docs/operations.md says how to lift the limit).
    """

    def __init__(self, config: BrokerConfig) -> None:
        self._config = config

    def count(self) -> int:
        with self._channel() as channel:
            return self._depth(channel)

    def list(self, limit: int) -> Sequence[DeadLetteredMessage]:
        with self._channel() as channel:
            copies = [
                read.message for read in self._read(channel, min(limit, self._depth(channel)))
            ]
            self._hand_back(channel)
        return merge_copies(copies)

    def find(self, key: str) -> Sequence[DeadLetteredMessage]:
        with self._channel() as channel:
            copies = [read.message for read in self._read(channel, self._depth(channel))]
            self._hand_back(channel)
        return [message for message in merge_copies(copies) if message.answers_to(key)]

    def requeue(self, selection: DeadLetterSelection) -> RequeueReport:
        plan = RequeuePlan(selection, JOB_QUEUES, DEAD_LETTER_QUEUE)
        with self._channel() as channel:
            channel.confirm_delivery()
            try:
                for read in self._read(channel, self._depth(channel)):
                    step = plan.step(read.message)
                    if step is Step.DROP_COPY:
                        # Its body is back on its queue already, confirmed.
                        channel.basic_ack(read.tag)
                    elif step is Step.PUT_BACK:
                        problem = self._put_back(channel, read)
                        if problem is None:
                            # Only now: until the confirm, this was the only copy.
                            channel.basic_ack(read.tag)
                            plan.moved(read.message)
                        else:
                            plan.refused(read.message, problem)
            except (pika.exceptions.AMQPError, OSError) as exc:
                raise DeadLettersUnavailable(
                    f"stopped after {plan.report.moved} message(s) were put back, the rest are "
                    f"still on {DEAD_LETTER_QUEUE} ({self._config.where()}): {describe(exc)}"
                ) from exc
            self._hand_back(channel)
        return plan.finish()

    def purge(self) -> int:
        with self._channel() as channel:
            try:
                return int(channel.queue_purge(DEAD_LETTER_QUEUE).method.message_count)
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code == NOT_FOUND:
                    return 0
                raise

    # -- reading ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _channel(self) -> Iterator[Any]:
        where = self._config.where()
        try:
            connection = connect(self._config)
        except (pika.exceptions.AMQPError, OSError) as exc:
            problem, fix = describe_network_error(exc, "the broker")
            raise DeadLettersUnavailable(f"broker at {where}: {problem} ({fix})") from exc
        try:
            yield connection.channel()
        except pika.exceptions.ChannelClosedByBroker as exc:
            raise DeadLettersUnavailable(
                f"broker at {where} refused: {exc.reply_code} {exc.reply_text}"
            ) from exc
        except (pika.exceptions.AMQPError, OSError) as exc:
            raise DeadLettersUnavailable(f"lost the broker at {where}: {describe(exc)}") from exc
        finally:
            close_quietly(connection)

    def _depth(self, channel: Any) -> int:
        try:
            declared = channel.queue_declare(DEAD_LETTER_QUEUE, passive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == NOT_FOUND:
                # Not declared yet: no worker ever ran here, so nothing was dead-lettered.
                return 0
            raise
        return int(declared.method.message_count)

    def _read(self, channel: Any, at_most: int) -> Iterator["_Read"]:
        """Each message (one copy), oldest first, left unacknowledged."""
        warned = False
        for _ in range(at_most):
            method, properties, body = channel.basic_get(DEAD_LETTER_QUEUE, auto_ack=False)
            if method is None:
                return
            headers = properties.headers or {}
            reads = headers.get("x-delivery-count")
            # Only a message read before can have been counted by this queue; on a classic
            # queue the header is a stale copy from the job queue it came from.
            counted = reads if method.redelivered and isinstance(reads, int) else 0
            if counted >= QUORUM_READS_WARNING and not warned:
                warned = True
                log.warning(
                    "a message on %s has x-delivery-count %d: on a quorum queue every read "
                    "counts one, and RabbitMQ 4.0 to 4.2 drop a message once it passes the "
                    "queue's delivery limit (20 unless a policy sets one); requeue or purge "
                    "what you have looked at, or lift the limit (docs/operations.md)",
                    DEAD_LETTER_QUEUE,
                    counted,
                )
            yield _Read(_describe(body, headers), method.delivery_tag, properties)

    def _hand_back(self, channel: Any) -> None:
        # Delivery tag 0 with `multiple`: every message this channel holds unacknowledged.
        # A nack rather than a closed channel, because RabbitMQ 4.3 counts no delivery for it
        # on a quorum queue; both return the messages in order, to their places.
        if channel.is_open:
            channel.basic_nack(0, multiple=True, requeue=True)

    def _put_back(self, channel: Any, read: "_Read") -> str | None:
        """Publish the message to its queue and wait for the broker's confirm; the problem if
        it was not taken."""
        message = read.message
        try:
            channel.basic_publish(
                EXCHANGE,
                message.queue,
                message.body,
                properties=_replay_properties(read),
                mandatory=True,
            )
        except pika.exceptions.UnroutableError:
            return f"{message.queue} is not bound"
        except pika.exceptions.NackError:
            return f"{message.queue} refused it (nack)"
        return None


@dataclass(frozen=True)
class _Read:
    """One copy read and not yet settled: what it says, its tag, its AMQP properties."""

    message: DeadLetteredMessage
    tag: int
    properties: Any


def _describe(body: bytes, headers: Mapping[str, Any]) -> DeadLetteredMessage:
    """One copy as the worker (x-worker-*) or the broker alone (x-death) left it."""
    deaths = [death for death in _as_list(headers.get("x-death")) if isinstance(death, Mapping)]
    died = sum(_as_int(death.get("count"), 0) for death in deaths)
    earlier = _as_int(headers.get(EARLIER_DEATHS_HEADER), 0)
    reason = _text(headers.get(REASON_HEADER))
    if reason is not None:
        return dead_lettered_message(
            body,
            queue=_text(headers.get(ORIGINAL_QUEUE_HEADER)),
            reason=reason,
            dead_lettered_at=_text(headers.get(DEAD_LETTERED_AT_HEADER)),
            worker_id=_text(headers.get(WORKER_HEADER)),
            # x-death here is from before the worker's copy: the broker had dead-lettered the
            # message earlier, and something other than a requeue brought it back.
            times=earlier + died + 1,
            headers=plain(headers),
        )
    # Rejected by an older worker, or by one whose confirmed copy failed, or given up on by
    # the broker (a quorum queue's delivery limit): RabbitMQ's x-death, most recent first.
    latest = deaths[0] if deaths else {}
    when = latest.get("time")
    return dead_lettered_message(
        body,
        queue=_text(latest.get("queue")),
        reason=f"{_text(latest.get('reason')) or 'dead-lettered'} (x-death; no reason recorded)",
        dead_lettered_at=iso_utc(when) if isinstance(when, datetime) else None,
        worker_id=None,
        times=earlier + max(died, 1),
        headers=plain(headers),
    )


def _replay_properties(read: _Read) -> pika.BasicProperties:
    """A fresh first delivery, persistent, saying how often it was dead-lettered before."""
    original = read.properties
    headers = {
        name: value for name, value in (original.headers or {}).items() if name not in SPENT_HEADERS
    }
    headers[EARLIER_DEATHS_HEADER] = read.message.times
    headers[EARLIER_ATTEMPTS_HEADER] = _attempts_so_far(original.headers or {})
    return pika.BasicProperties(
        content_type=original.content_type,
        delivery_mode=2,
        message_id=original.message_id,
        correlation_id=original.correlation_id,
        headers=headers,
    )


def _attempts_so_far(headers: Mapping[str, Any]) -> int:
    """Attempts at the job before this replay: the statuses of the replay count on from them,
    so an API that drops repeated idempotency keys (`<id>:<status>:<attempt>`) keeps them.

    The worker's own count when it dead-lettered the message; for a copy from an older worker
    or from the broker (x-death only), the deliveries its headers show."""
    recorded = headers.get(ATTEMPTS_HEADER)
    if isinstance(recorded, int) and recorded >= 1:
        return recorded
    earlier = max(_as_int(headers.get(EARLIER_ATTEMPTS_HEADER), 0), 0)
    return earlier + delivery_attempt(headers, redelivered=False)


def _as_list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _as_int(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    return value if isinstance(value, str) and value else None
