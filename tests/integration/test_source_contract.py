"""The MessageSource contract, held against the in-memory, the RabbitMQ and the Redis source."""

from collections.abc import Iterator
from typing import Protocol

import pika
import pytest

from python_worker.adapters.memory import InMemorySource
from python_worker.adapters.rabbitmq.connection import (
    EXCHANGE,
    ORIGINAL_QUEUE_HEADER,
    REASON_HEADER,
    BrokerConfig,
)
from python_worker.adapters.rabbitmq.source import RabbitMQSource
from python_worker.adapters.redis.connection import ORIGINAL_QUEUE_FIELD, REASON_FIELD
from python_worker.adapters.redis.source import RedisSource
from python_worker.application.ports import Delivery, MessageSource, Settlement
from python_worker.domain.jobs import Priority
from tests.integration.redis_fixtures import redis_instance, redis_server
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until

__all__ = ["redis_instance", "redis_server"]


class SourceHarness(Protocol):
    source: MessageSource

    def publish(self, queue: str, body: bytes) -> None: ...

    def start(self, expected: int) -> None: ...

    def dead_letters(self) -> list[bytes]: ...

    def dead_letter_reasons(self) -> list[tuple[bytes, str | None, str | None]]:
        """(body, reason, original queue) of each dead letter, taken off the dead-letter queue."""
        ...

    def remaining(self) -> int: ...

    def reopen(self) -> MessageSource: ...


class MemoryHarness:
    def __init__(self) -> None:
        self.source: MessageSource = InMemorySource()

    def publish(self, queue: str, body: bytes) -> None:
        assert isinstance(self.source, InMemorySource)
        self.source.publish(queue, body)

    def start(self, expected: int) -> None:
        """Everything published is ready at once."""

    def dead_letters(self) -> list[bytes]:
        assert isinstance(self.source, InMemorySource)
        return [d.body for d in self.source.dead_lettered]

    def dead_letter_reasons(self) -> list[tuple[bytes, str | None, str | None]]:
        assert isinstance(self.source, InMemorySource)
        return [(d.body, d.reason, d.queue) for d in self.source.dead_lettered]

    def remaining(self) -> int:
        assert isinstance(self.source, InMemorySource)
        return self.source.pending()

    def reopen(self) -> MessageSource:
        self.source.close()
        return self.source


class RabbitMQHarness:
    def __init__(self, broker: object) -> None:
        self._broker = broker
        self._config = BrokerConfig(hosts=[broker.host], port=broker.port, heartbeat=10)  # type: ignore[attr-defined]
        self._connection = broker.connect()  # type: ignore[attr-defined]
        self._channel = self._connection.channel()
        self._channel.confirm_delivery()
        # A first source declares the topology, so messages published before it consumes
        # are routed; it is closed at once so the test's source sees all of them.
        declaring = RabbitMQSource(self._config, prefetch=50)
        assert declaring.wait_until_connected(30)
        declaring.close()
        self.source: MessageSource = declaring

    def publish(self, queue: str, body: bytes) -> None:
        self._channel.basic_publish(
            EXCHANGE, queue, body, pika.BasicProperties(delivery_mode=2), mandatory=True
        )

    def start(self, expected: int) -> None:
        source = RabbitMQSource(self._config, prefetch=50)
        self.source = source
        assert wait_until(lambda: sum(source.buffered().values()) >= expected, timeout=20)

    def dead_letters(self) -> list[bytes]:
        return [body for body, _reason, _queue in self.dead_letter_reasons()]

    def dead_letter_reasons(self) -> list[tuple[bytes, str | None, str | None]]:
        found = []
        while True:
            method, properties, body = self._channel.basic_get("job.dead-letter", auto_ack=True)
            if method is None:
                return found
            headers = properties.headers or {}
            found.append((body, headers.get(REASON_HEADER), headers.get(ORIGINAL_QUEUE_HEADER)))

    def remaining(self) -> int:
        total = 0
        for queue in ("job.high", "job.medium", "job.low"):
            counts = self._broker.queue_counts(queue)  # type: ignore[attr-defined]
            total += counts.messages_ready + counts.messages_unacknowledged
        return total

    def reopen(self) -> MessageSource:
        self.source.close()
        self.start(expected=1)
        return self.source

    def close(self) -> None:
        self.source.close()
        self._connection.close()


class RedisHarness:
    def __init__(self, server: RedisServer) -> None:
        self._server = server
        # The streams and the group first, so what is published before the source starts is
        # read (the group starts at the beginning of each stream).
        server.create_topology()
        self._client = server.client()
        self.source: MessageSource = InMemorySource()  # until `start`

    def publish(self, queue: str, body: bytes) -> None:
        self._client.xadd(queue, {"body": body})

    def start(self, expected: int) -> None:
        source = RedisSource(self._server.config(), prefetch=50)
        self.source = source
        assert wait_until(lambda: sum(source.buffered().values()) >= expected, timeout=20)

    def dead_letters(self) -> list[bytes]:
        return [body for body, _reason, _queue in self.dead_letter_reasons()]

    def dead_letter_reasons(self) -> list[tuple[bytes, str | None, str | None]]:
        found = []
        for identity, fields in self._client.xrange("job.dead-letter"):
            self._client.xdel("job.dead-letter", identity)
            reason, queue = (
                fields.get(REASON_FIELD.encode()),
                fields.get(ORIGINAL_QUEUE_FIELD.encode()),
            )
            found.append(
                (
                    fields[b"body"],
                    reason.decode() if reason else None,
                    queue.decode() if queue else None,
                )
            )
        return found

    def remaining(self) -> int:
        return self._server.remaining()

    def reopen(self) -> MessageSource:
        self.source.close()
        self.start(expected=1)
        return self.source

    def close(self) -> None:
        self.source.close()
        self._client.close()


@pytest.fixture(params=["memory", "rabbitmq", "redis"])
def harness(request: pytest.FixtureRequest) -> Iterator[SourceHarness]:
    if request.param == "memory":
        yield MemoryHarness()
        return
    if request.param == "redis":
        redis_harness = RedisHarness(request.getfixturevalue("redis_server"))
        yield redis_harness
        redis_harness.close()
        return
    broker = request.getfixturevalue("broker")
    rabbit = RabbitMQHarness(broker)
    yield rabbit
    rabbit.close()


def receive(source: MessageSource) -> Delivery:
    delivery = source.receive(timeout=10)
    assert delivery is not None
    return delivery


def test_receive_returns_none_when_nothing_is_waiting(harness: SourceHarness):
    harness.start(expected=0)

    assert harness.source.receive(timeout=0.2) is None


def test_hands_out_high_then_medium_then_low_when_all_are_waiting(harness: SourceHarness):
    for n in range(3):
        for queue in ("job.low", "job.medium", "job.high"):
            harness.publish(queue, f"{queue}-{n}".encode())
    harness.start(expected=9)

    bodies = [receive(harness.source).body.decode() for _ in range(9)]

    assert bodies == [f"{q}-{n}" for q in ("job.high", "job.medium", "job.low") for n in range(3)]


def test_delivery_names_its_queue_and_first_attempt(harness: SourceHarness):
    harness.publish("job.medium", b"one")
    harness.start(expected=1)

    delivery = receive(harness.source)

    assert delivery.queue == "job.medium"
    assert delivery.priority is Priority.MEDIUM
    assert delivery.attempt == 1
    assert not delivery.redelivered


def test_acknowledged_message_is_gone(harness: SourceHarness):
    harness.publish("job.low", b"done")
    harness.start(expected=1)

    harness.source.settle(receive(harness.source), Settlement.ACK)

    assert wait_until(lambda: harness.remaining() == 0, timeout=20)
    assert harness.dead_letters() == []


def test_dead_lettered_message_lands_in_dead_letter_queue(harness: SourceHarness):
    harness.publish("job.high", b"poison")
    harness.start(expected=1)

    harness.source.settle(receive(harness.source), Settlement.DEAD_LETTER, "bad job")

    assert wait_until(lambda: harness.remaining() == 0, timeout=20)
    assert harness.dead_letters() == [b"poison"]


def test_dead_lettered_message_carries_its_reason_and_queue_when_settled_with_one(
    harness: SourceHarness,
):
    harness.publish("job.medium", b"not a job")
    harness.start(expected=1)

    harness.source.settle(
        receive(harness.source), Settlement.DEAD_LETTER, "message body is not valid UTF-8 JSON"
    )

    assert wait_until(lambda: harness.remaining() == 0, timeout=20)
    assert harness.dead_letter_reasons() == [
        (b"not a job", "message body is not valid UTF-8 JSON", "job.medium")
    ]


def test_requeued_message_comes_back_as_the_next_attempt(harness: SourceHarness):
    harness.publish("job.low", b"again")
    harness.start(expected=1)

    harness.source.settle(receive(harness.source), Settlement.REQUEUE)
    again = receive(harness.source)
    harness.source.settle(again, Settlement.REQUEUE)
    third = receive(harness.source)

    assert (again.body, again.attempt) == (b"again", 2)
    assert (third.body, third.attempt) == (b"again", 3)


def test_unsettled_message_is_redelivered_after_close(harness: SourceHarness):
    harness.publish("job.low", b"unsettled")
    harness.start(expected=1)
    receive(harness.source)

    reopened = harness.reopen()

    again = receive(reopened)
    assert again.body == b"unsettled"
    assert again.attempt == 2


def test_receives_nothing_after_stop_receiving_and_hands_back_unstarted(harness: SourceHarness):
    for n in range(4):
        harness.publish("job.low", f"m{n}".encode())
    harness.start(expected=4)
    started = receive(harness.source)

    harness.source.stop_receiving()

    assert harness.source.receive(timeout=0.2) is None
    harness.source.settle(started, Settlement.ACK)
    assert wait_until(lambda: harness.remaining() == 3, timeout=20)
