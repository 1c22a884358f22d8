"""The RabbitMQ message source: one consumer per priority queue, a tiered buffer, one I/O thread."""

import collections
import contextlib
import functools
import itertools
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pika
import pika.exceptions

from python_worker.adapters.backoff import full_jitter
from python_worker.adapters.rabbitmq.connection import (
    DEAD_LETTER_QUEUE,
    EARLIER_ATTEMPTS_HEADER,
    EXCHANGE,
    JOB_QUEUES,
    BrokerConfig,
    close_quietly,
    connect,
    dead_letter_headers,
    declare_topology,
    describe,
)
from python_worker.application.ports import Delivery, MessageSource, Settlement, SourceStatus
from python_worker.domain.jobs import Priority

log = logging.getLogger(__name__)

RECONNECT_BASE_SECONDS = 1.0
RECONNECT_CAP_SECONDS = 30.0
IO_POLL_SECONDS = 0.2
REFILL_GRACE_SECONDS = 0.2
"""How long a tier counts as "more on the way" after an ack freed a slot in its full window:
ample for the broker's next delivery, short enough that an emptied tier stops blocking soon."""
"""Longest the I/O thread sleeps in pika before it looks at its own flags again."""


@dataclass(frozen=True)
class _Handle:
    """Which connection a delivery came on (a tag means nothing on any other channel), and the
    message's properties, which a dead-lettered copy carries on."""

    generation: int
    delivery_tag: int
    priority: Priority
    properties: Any
    job_attempt: int = 1


ATTEMPT_HEADER = "x-attempt"
"""Our own count of deliveries, carried by the copy we republish on a classic queue."""


def delivery_attempt(headers: Mapping[str, Any], redelivered: bool) -> int:
    """Which delivery of the message this is (1 for the first), from every count we can see.

    Our `x-attempt` header (classic queues, see `_on_message`), the quorum queue's
    `x-delivery-count` (earlier deliveries) and `x-death` (times dead-lettered and brought
    back): the highest wins. A redelivery counts one more than the copy's own number.
    """
    ours = _as_int(headers.get(ATTEMPT_HEADER), default=1)
    quorum = _as_int(headers.get("x-delivery-count"), default=0) + 1
    deaths = headers.get("x-death")
    died = 0
    if isinstance(deaths, list):
        died = sum(_as_int(d.get("count"), 0) for d in deaths if isinstance(d, Mapping))
    return max(ours + (1 if redelivered else 0), quorum, died + 1)


def _as_int(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


class _ConsumerCancelled(Exception):
    """Raised on the I/O thread when the broker cancelled a consumer (queue deleted...)."""


class RabbitMQSource(MessageSource):
    """Consumes `job.high`, `job.medium` and `job.low`; hands out the highest tier first.

    pika's BlockingConnection is not thread-safe, so one I/O thread owns it: it consumes into
    three in-memory buffers (one per tier) and does every ack and reject. Job threads only
    read the buffers and post settlements back with `add_callback_threadsafe`.

    Priority bound: each queue has its own consumer with `prefetch` unacknowledged messages,
    so a new `job.high` message reaches the high buffer one network hop after it is published,
    however long the low backlog is, and the next free job thread takes it. The jobs that can
    start ahead of it are those taken by threads between its publication and its arrival
    here (a round trip), and at most `capacity` are running at any time.

    The connection heals itself: a lost connection, missed heartbeats or a broker-side cancel
    make the I/O thread reconnect with exponential backoff and jitter, forever. Deliveries of
    the lost connection are void — their buffered copies are dropped and their settlements
    ignored (acking them on the new channel would close it with PRECONDITION_FAILED); the
    broker redelivers them.
    """

    def __init__(self, config: BrokerConfig, prefetch: int, worker_id: str = "") -> None:
        self._config = config
        self._prefetch = prefetch
        self._worker_id = worker_id
        self._buffers: dict[Priority, collections.deque[Delivery]] = {
            priority: collections.deque() for priority in Priority
        }
        self._ready = threading.Condition()
        self._tiers = Priority.by_rank()
        self._lowest = self._tiers[-1]
        # Job threads waiting because a higher tier's window is full (see `receive`).
        self._held_back = 0
        # Deliveries of the live channel not settled yet, per tier: the consumer's window.
        self._in_window: dict[Priority, int] = dict.fromkeys(Priority, 0)
        # Until when a tier whose full window just got a free slot may still be refilled.
        self._refill_until: dict[Priority, float] = dict.fromkeys(Priority, 0.0)
        self._generation = 0
        # Delivery tags of the live channel not yet settled on the wire, oldest first; only
        # the I/O thread touches it.
        self._outstanding: dict[int, None] = {}
        self._settle_lock = threading.Lock()
        self._settlements: list[tuple[_Handle, Settlement, str | None, bytes]] = []
        self._drain_scheduled = False
        self._connection: pika.BlockingConnection | None = None
        self._channel: Any = None
        self._republish_channel: Any = None
        self._consumer_tags: list[str] = []
        self._receiving = True
        self._cancel_requested = False
        self._cancelled_by_broker = False
        self._closing = threading.Event()
        self._connected = threading.Event()
        self._reconnects = 0
        self._thread = threading.Thread(target=self._io_loop, name="rabbitmq-io", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ job-thread side

    def receive(self, timeout: float) -> Delivery | None:
        deadline = time.monotonic() + timeout
        with self._ready:
            while True:
                if not self._receiving:
                    return None
                now = time.monotonic()
                wake = deadline
                held_back = False
                for priority in self._tiers:
                    buffer = self._buffers[priority]
                    if buffer:
                        return buffer.popleft()
                    if priority is self._lowest:
                        break  # no tier below to keep from jumping the queue
                    if self._in_window[priority] >= self._prefetch:
                        # This tier's window is full, so the broker is likely holding more of
                        # it: starting a lower-tier job now would jump the queue. Wait for acks.
                        held_back = True
                        break
                    if self._refill_until[priority] > now:
                        # An ack just freed a slot in this tier's full window; its next message
                        # is on the way. Don't let a lower tier slip into that round trip.
                        wake = min(wake, self._refill_until[priority])
                        break
                if now >= deadline:
                    return None
                self._held_back += held_back
                try:
                    self._ready.wait(wake - now)
                finally:
                    self._held_back -= held_back

    def settle(self, delivery: Delivery, outcome: Settlement, reason: str | None = None) -> None:
        handle: _Handle = delivery.handle
        connection = self._connection
        if connection is None or handle.generation != self._generation:
            self._log_void_settlement(handle, outcome)
            return
        # Settlements queue up and one callback sends all that arrived meanwhile: one wake-up
        # of the I/O thread per batch instead of per message, and room for multiple-acks.
        with self._settle_lock:
            self._settlements.append((handle, outcome, reason, delivery.body))
            if self._drain_scheduled:
                return
            self._drain_scheduled = True
        try:
            connection.add_callback_threadsafe(self._send_settlements)
        except pika.exceptions.AMQPError:
            with self._settle_lock:
                self._drain_scheduled = False
            self._log_void_settlement(handle, outcome)

    def stop_receiving(self) -> None:
        with self._ready:
            self._receiving = False
            self._cancel_requested = True
            self._ready.notify_all()
        connection = self._connection
        if connection is not None:
            # If the connection is gone, the broker requeues everything anyway.
            with contextlib.suppress(pika.exceptions.AMQPError):
                connection.add_callback_threadsafe(self._cancel_consumers)

    def close(self) -> None:
        self.stop_receiving()
        self._closing.set()
        self._thread.join(timeout=15)

    def status(self) -> SourceStatus:
        with self._ready:
            waiting = sum(len(buffer) for buffer in self._buffers.values())
        return SourceStatus(
            connected=self._connected.is_set(),
            consuming=self._connected.is_set() and self._receiving,
            reconnects=self._reconnects,
            waiting=waiting,
        )

    def buffered(self) -> dict[Priority, int]:
        """Deliveries received from the broker and not yet handed out, per tier."""
        with self._ready:
            return {priority: len(buffer) for priority, buffer in self._buffers.items()}

    def wait_until_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def _log_void_settlement(self, handle: _Handle, outcome: Settlement) -> None:
        log.info(
            "not sending %s for delivery %d: its connection is gone, the broker redelivers it",
            outcome.value,
            handle.delivery_tag,
        )

    # ------------------------------------------------------------------ I/O thread side

    def _io_loop(self) -> None:
        attempt = 0
        while not self._closing.is_set():
            try:
                self._connect()
                attempt = 0
                self._pump_until_closing()
            except (pika.exceptions.AMQPError, OSError, _ConsumerCancelled) as exc:
                self._connection_lost(exc)
            except Exception as exc:  # never let the I/O thread die: that would stop the worker
                log.exception("unexpected error on the broker connection")
                self._connection_lost(exc)
            if self._closing.is_set():
                break
            attempt += 1
            delay = full_jitter(RECONNECT_BASE_SECONDS, attempt, RECONNECT_CAP_SECONDS)
            log.warning(
                "reconnecting to %s in %.1fs (attempt %d)", self._config.where(), delay, attempt
            )
            self._closing.wait(delay)
        self._close_connection()

    def _connect(self) -> None:
        log.info("connecting to %s", self._config.where())
        connection = connect(self._config)
        try:
            declare_topology(connection, self._config)
            channel = connection.channel()
            channel.basic_qos(prefetch_count=self._prefetch)
            channel.add_on_cancel_callback(self._on_cancelled_by_broker)
            republish_channel = connection.channel()
            republish_channel.confirm_delivery()
            with self._ready:
                self._generation += 1
                generation = self._generation
                self._connection = connection
                self._channel = channel
                self._republish_channel = republish_channel
                self._cancelled_by_broker = False
            self._consumer_tags = []
            if not self._cancel_requested:
                for queue in JOB_QUEUES:
                    callback = functools.partial(
                        self._on_message, generation, Priority.from_queue(queue)
                    )
                    self._consumer_tags.append(channel.basic_consume(queue, callback))
        except BaseException:
            close_quietly(connection)
            raise
        self._connected.set()
        params = connection._impl.params  # which node of the list answered
        log.info(
            "connected to %s; consuming %s with prefetch %d each",
            self._config.where(getattr(params, "host", "?"), getattr(params, "port", None)),
            ", ".join(JOB_QUEUES),
            self._prefetch,
        )

    def _pump_until_closing(self) -> None:
        assert self._connection is not None
        while not self._closing.is_set():
            if self._cancelled_by_broker:
                raise _ConsumerCancelled("the broker cancelled our consumer (queue deleted?)")
            self._connection.process_data_events(time_limit=IO_POLL_SECONDS)
            if self._settlements:
                # Safety net: a drain scheduled on a connection that died just before can
                # never run; sending from here keeps settlements flowing regardless.
                self._send_settlements()

    def _on_message(
        self,
        generation: int,
        priority: Priority,
        channel: Any,
        method: Any,
        properties: Any,
        body: bytes,
    ) -> None:
        if not self._receiving:
            channel.basic_reject(method.delivery_tag, requeue=True)
            return
        headers = properties.headers or {}
        attempt = delivery_attempt(headers, method.redelivered)
        # Classic queues only say "redelivered", not how often. To count attempts across
        # crashes, put a copy carrying the new count back on the queue (confirmed) and ack this
        # one; the copy comes back as a first delivery with its attempt header.
        if (
            method.redelivered
            and self._config.queue_type == "classic"
            and self._republish(priority, properties, body, attempt)
        ):
            channel.basic_ack(method.delivery_tag)
            return
        earlier = max(_as_int(headers.get(EARLIER_ATTEMPTS_HEADER), default=0), 0)
        delivery = Delivery(
            body=body,
            priority=priority,
            handle=_Handle(
                generation, method.delivery_tag, priority, properties, earlier + attempt
            ),
            attempt=attempt,
            redelivered=method.redelivered,
            received_at=time.monotonic(),
            earlier_attempts=earlier,
        )
        self._outstanding[method.delivery_tag] = None
        with self._ready:
            self._buffers[priority].append(delivery)
            self._in_window[priority] += 1
            self._ready.notify()

    def _republish(self, priority: Priority, properties: Any, body: bytes, attempt: int) -> bool:
        channel = self._republish_channel
        if channel is None or not channel.is_open:
            return False
        headers = dict(properties.headers or {})
        headers[ATTEMPT_HEADER] = attempt
        copy = pika.BasicProperties(
            content_type=properties.content_type,
            delivery_mode=properties.delivery_mode or 2,
            message_id=properties.message_id,
            correlation_id=properties.correlation_id,
            headers=headers,
        )
        try:
            channel.basic_publish(EXCHANGE, priority.queue, body, properties=copy, mandatory=True)
        except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as exc:
            log.warning("could not re-queue a redelivered message with its attempt count: %s", exc)
            return False
        return True

    def _send_settlements(self) -> None:
        with self._settle_lock:
            batch, self._settlements = self._settlements, []
            self._drain_scheduled = False
        channel = self._channel
        acks: set[int] = set()
        settled: list[Priority] = []
        for handle, outcome, reason, body in batch:
            if handle.generation != self._generation or channel is None or not channel.is_open:
                self._log_void_settlement(handle, outcome)
                continue
            settled.append(handle.priority)
            if outcome is Settlement.ACK:
                acks.add(handle.delivery_tag)
            elif outcome is Settlement.DEAD_LETTER and self._dead_letter(handle, body, reason):
                # Acked at once, not with the batch: the copy is confirmed, and every moment
                # until the ack is one in which a lost connection leaves two copies.
                channel.basic_ack(handle.delivery_tag)
                self._outstanding.pop(handle.delivery_tag, None)
            else:
                channel.basic_reject(handle.delivery_tag, requeue=outcome is Settlement.REQUEUE)
                self._outstanding.pop(handle.delivery_tag, None)
        # The oldest outstanding deliveries that are all being acked go in one multiple-ack
        # (it covers every unsettled tag up to it, so only a gap-free run qualifies).
        run_end = None
        for tag in self._outstanding:
            if tag not in acks:
                break
            run_end = tag
        if run_end is not None:
            assert channel is not None
            channel.basic_ack(run_end, multiple=True)
            for tag in list(itertools.takewhile(lambda t: t <= run_end, self._outstanding)):
                del self._outstanding[tag]
                acks.discard(tag)
        for tag in sorted(acks):
            assert channel is not None
            channel.basic_ack(tag)
            self._outstanding.pop(tag, None)
        if settled:
            self._left_window(settled)

    def _dead_letter(self, handle: _Handle, body: bytes, reason: str | None) -> bool:
        """Put a copy carrying why on job.dead-letter, confirmed; then the original is acked.

        A reject would have the broker dead-letter the message with `x-death` only: AMQP has no
        room for a reason in a reject. False (the caller rejects instead, and the reason is in
        the log) when the copy could not be published and confirmed. Like every move here it is
        at least once: a connection lost between the confirm and the ack brings the original
        back, and it is dead-lettered again (`dead-letters list` shows how many times).
        """
        channel = self._republish_channel
        if channel is None or not channel.is_open:
            return False
        properties = handle.properties
        headers = dict(properties.headers or {})
        headers.update(
            dead_letter_headers(
                reason,
                self._worker_id,
                handle.priority.queue,
                datetime.now(UTC),
                handle.job_attempt,
            )
        )
        copy = pika.BasicProperties(
            content_type=properties.content_type,
            delivery_mode=2,
            message_id=properties.message_id,
            correlation_id=properties.correlation_id,
            headers=headers,
        )
        try:
            channel.basic_publish(
                EXCHANGE, DEAD_LETTER_QUEUE, body, properties=copy, mandatory=True
            )
        except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as exc:
            log.warning(
                "could not put a message on %s with its reason (%s); rejecting it, so the broker "
                "dead-letters it without one. The reason was: %s",
                DEAD_LETTER_QUEUE,
                exc,
                reason,
            )
            return False
        return True

    def _cancel_consumers(self) -> None:
        channel = self._channel
        if channel is None or not channel.is_open:
            return
        for tag in self._consumer_tags:
            channel.basic_cancel(tag)
        self._consumer_tags = []
        with self._ready:
            unstarted = self._take_buffered()
        for delivery in unstarted:
            channel.basic_reject(delivery.handle.delivery_tag, requeue=True)
            self._outstanding.pop(delivery.handle.delivery_tag, None)
        self._left_window([delivery.priority for delivery in unstarted])
        if unstarted:
            log.info("handed %d unstarted job(s) back to the broker", len(unstarted))

    def _take_buffered(self) -> list[Delivery]:
        """Empty the tier buffers (caller holds `_ready`); returns what they held."""
        taken = [delivery for buffer in self._buffers.values() for delivery in buffer]
        for buffer in self._buffers.values():
            buffer.clear()
        return taken

    def _left_window(self, priorities: list[Priority]) -> None:
        with self._ready:
            reopened = False
            for priority in priorities:
                if self._in_window[priority] >= self._prefetch:
                    self._refill_until[priority] = time.monotonic() + REFILL_GRACE_SECONDS
                    reopened = True
                self._in_window[priority] -= 1
            if reopened and self._held_back:
                # Job threads held back by a full window re-check when its refill is overdue.
                # Only those: waking every idle thread per ack batch cost a fifth of the CPU.
                self._ready.notify_all()

    def _on_cancelled_by_broker(self, _frame: Any) -> None:
        self._cancelled_by_broker = True

    def _connection_lost(self, exc: BaseException) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        with self._ready:
            self._generation += 1
            dropped = len(self._take_buffered())
            self._in_window = dict.fromkeys(Priority, 0)
            self._outstanding.clear()
            self._ready.notify_all()
        with self._settle_lock:
            # Queued settlements belong to the dead channel, and a drain scheduled on the dead
            # connection will never run: start the next connection with a clean slate.
            self._settlements.clear()
            self._drain_scheduled = False
            connection, self._connection, self._channel = self._connection, None, None
        if was_connected:
            self._reconnects += 1
        log.warning(
            "broker connection to %s lost: %s%s",
            self._config.where(),
            describe(exc),
            f" ({dropped} unstarted job(s) left to the broker)" if dropped else "",
        )
        if connection is not None:
            close_quietly(connection)

    def _close_connection(self) -> None:
        connection = self._connection
        if connection is None or not connection.is_open:
            return
        try:
            # Run the settlements job threads posted just before close, then say goodbye.
            connection.process_data_events(time_limit=0)
            connection.process_data_events(time_limit=0)
            connection.close()
        except (pika.exceptions.AMQPError, OSError) as exc:
            log.info("broker connection closed uncleanly: %s", describe(exc))
        finally:
            self._connected.clear()
            self._connection = None
        log.info("broker connection closed")
