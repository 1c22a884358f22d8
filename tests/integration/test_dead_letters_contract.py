"""The DeadLetters contract, held against the in-memory, the RabbitMQ and the Redis dead letters."""

import contextlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Protocol

import pika
import pytest

from python_worker.adapters.memory import InMemorySource
from python_worker.adapters.memory.dead_letters import InMemoryDeadLetters
from python_worker.adapters.memory.source import DeadLetter
from python_worker.adapters.rabbitmq.connection import (
    DEAD_LETTER_QUEUE,
    EXCHANGE,
    BrokerConfig,
    connect,
    dead_letter_headers,
    declare_topology,
)
from python_worker.adapters.rabbitmq.dead_letters import RabbitMQDeadLetters
from python_worker.adapters.redis.connection import (
    BODY_FIELD,
    DEAD_LETTER_STREAM,
    dead_letter_fields,
    entries_of,
)
from python_worker.adapters.redis.dead_letters import RedisDeadLetters
from python_worker.application.ports import DeadLetters, DeadLetterSelection
from python_worker.domain.jobs import Priority
from tests.integration.redis_fixtures import redis_instance, redis_server
from tests.support.rabbitmq_node import Broker
from tests.support.redis_server import RedisServer

__all__ = ["redis_instance", "redis_server"]


class DeadLetterHarness(Protocol):
    port: DeadLetters

    def refuse(self, queue: str, body: bytes, reason: str) -> None:
        """Put `body` on the dead-letter queue as the worker does when it refuses it."""
        ...

    def back_on(self, queue: str) -> list[bytes]:
        """The bodies on a job queue, taken off it."""
        ...


class MemoryHarness:
    def __init__(self) -> None:
        self._source = InMemorySource()
        self.port: DeadLetters = InMemoryDeadLetters(self._source)

    def refuse(self, queue: str, body: bytes, reason: str) -> None:
        self._source.dead_lettered.append(DeadLetter(body, queue, reason))

    def back_on(self, queue: str) -> list[bytes]:
        bodies = []
        while (delivery := self._source.receive(0)) is not None:
            assert delivery.queue == queue
            bodies.append(delivery.body)
        return bodies


class RabbitMQHarness:
    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        config = BrokerConfig(hosts=[broker.host], port=broker.port)
        with contextlib.closing(connect(config)) as connection:
            declare_topology(connection, config)
        self.port = RabbitMQDeadLetters(config)

    def refuse(self, queue: str, body: bytes, reason: str) -> None:
        headers = dead_letter_headers(reason, "contract-worker", queue, datetime.now(UTC))
        with contextlib.closing(self._broker.connect()) as connection:
            channel = connection.channel()
            channel.confirm_delivery()
            properties = pika.BasicProperties(delivery_mode=2, headers=headers)
            channel.basic_publish(EXCHANGE, DEAD_LETTER_QUEUE, body, properties=properties)

    def back_on(self, queue: str) -> list[bytes]:
        bodies = []
        with contextlib.closing(self._broker.connect()) as connection:
            channel = connection.channel()
            while True:
                method, _properties, body = channel.basic_get(queue, auto_ack=True)
                if method is None:
                    return bodies
                bodies.append(body)


class RedisHarness:
    def __init__(self, server: RedisServer) -> None:
        server.create_topology()
        self._server = server
        self.port = RedisDeadLetters(server.config())

    def refuse(self, queue: str, body: bytes, reason: str) -> None:
        # What the source's dead-lettering adds: the entry's fields and the worker's account.
        fields: dict[Any, Any] = {BODY_FIELD: body}
        fields.update(
            dead_letter_fields(reason, "contract-worker", queue, "1-0", datetime.now(UTC))
        )
        with contextlib.closing(self._server.client()) as client:
            client.xadd(DEAD_LETTER_STREAM, fields)

    def back_on(self, queue: str) -> list[bytes]:
        with contextlib.closing(self._server.client()) as client:
            entries = entries_of(client.xrange(queue))
            if entries:
                client.xdel(queue, *[identity for identity, _fields in entries])
        return [fields[BODY_FIELD.encode()] for _identity, fields in entries]


@pytest.fixture(params=["memory", "rabbitmq", "redis"])
def harness(request: pytest.FixtureRequest) -> Iterator[DeadLetterHarness]:
    if request.param == "memory":
        yield MemoryHarness()
    elif request.param == "redis":
        yield RedisHarness(request.getfixturevalue("redis_server"))
    else:
        yield RabbitMQHarness(request.getfixturevalue("broker"))


def job(job_id: str) -> bytes:
    return json.dumps({"id": job_id, "type": "sum"}).encode()


def test_lists_messages_oldest_first_and_keeps_them_when_read(harness: DeadLetterHarness):
    for number in range(5):
        harness.refuse("job.low", job(f"j{number}"), f"reason {number}")

    first = harness.port.list(limit=10)
    second = harness.port.list(limit=10)

    assert [message.key for message in first] == ["j0", "j1", "j2", "j3", "j4"]
    assert [message.key for message in second] == [message.key for message in first]
    assert harness.port.count() == 5


def test_reads_only_the_first_messages_when_given_a_limit(harness: DeadLetterHarness):
    for number in range(5):
        harness.refuse("job.low", job(f"j{number}"), "refused")

    listed = harness.port.list(limit=2)

    assert [message.key for message in listed] == ["j0", "j1"]
    assert harness.port.count() == 5


def test_moves_only_the_selected_and_keeps_the_rest_in_order_when_requeueing(
    harness: DeadLetterHarness,
):
    for number in range(5):
        harness.refuse("job.medium", job(f"j{number}"), "refused")

    report = harness.port.requeue(DeadLetterSelection(keys=frozenset({"j1", "j3"})))

    assert (report.moved, report.left, report.missing) == (2, 3, [])
    assert harness.back_on(Priority.MEDIUM.queue) == [job("j1"), job("j3")]
    assert [message.key for message in harness.port.list(limit=10)] == ["j0", "j2", "j4"]


def test_puts_copies_of_one_body_back_once_when_it_was_dead_lettered_twice(
    harness: DeadLetterHarness,
):
    harness.refuse("job.high", job("twice"), "refused")
    harness.refuse("job.high", job("twice"), "refused")
    [message] = harness.port.list(limit=10)
    assert message.times == 2

    report = harness.port.requeue(DeadLetterSelection(everything=True))

    assert (report.moved, report.merged) == (1, 1)
    assert harness.back_on("job.high") == [job("twice")]
    assert harness.port.count() == 0


def test_names_the_keys_that_matched_nothing_when_requeueing_by_key(harness: DeadLetterHarness):
    harness.refuse("job.low", job("known"), "refused")

    report = harness.port.requeue(DeadLetterSelection(keys=frozenset({"known", "unknown"})))

    assert report.moved == 1
    assert report.missing == ["unknown"]


def test_finds_a_message_by_its_handle_when_its_body_names_no_id(harness: DeadLetterHarness):
    harness.refuse("job.low", b"\xff not utf-8", "not UTF-8")
    [listed] = harness.port.list(limit=1)

    found = harness.port.find(listed.handle)

    assert [message.body for message in found] == [b"\xff not utf-8"]
    assert found[0].key == listed.handle
    assert found[0].reason == "not UTF-8"


def test_deletes_every_message_and_says_how_many_when_purged(harness: DeadLetterHarness):
    for number in range(3):
        harness.refuse("job.low", job(f"j{number}"), "refused")

    purged = harness.port.purge()

    assert purged == 3
    assert harness.port.count() == 0
