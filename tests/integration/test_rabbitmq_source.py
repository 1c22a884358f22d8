"""RabbitMQ-specific behaviour of the source: topology quirks, cancels, reconnects, node lists."""

import logging
from collections.abc import Callable, Iterator

import pika
import pytest

from python_worker.adapters.rabbitmq.connection import EXCHANGE, BrokerConfig
from python_worker.adapters.rabbitmq.source import RabbitMQSource
from python_worker.application.ports import Delivery, Settlement
from tests.support.rabbitmq_node import Broker, RabbitMQNode
from tests.support.waiting import wait_until


def publish(broker: Broker, queue: str, body: bytes) -> None:
    connection = broker.connect()
    channel = connection.channel()
    channel.confirm_delivery()
    channel.basic_publish(
        EXCHANGE, queue, body, pika.BasicProperties(delivery_mode=2), mandatory=True
    )
    connection.close()


@pytest.fixture
def open_source(broker: Broker) -> Iterator[Callable[..., RabbitMQSource]]:
    sources: list[RabbitMQSource] = []

    def open_(hosts: list[str] | None = None, **config: object) -> RabbitMQSource:
        source = RabbitMQSource(
            BrokerConfig(hosts=hosts or [broker.host], port=broker.port, heartbeat=5, **config),  # type: ignore[arg-type]
            prefetch=10,
        )
        sources.append(source)
        assert source.wait_until_connected(30)
        return source

    yield open_
    for source in sources:
        source.close()


def receive(source: RabbitMQSource) -> Delivery:
    delivery = source.receive(timeout=20)
    assert delivery is not None
    return delivery


def test_uses_an_existing_queue_with_other_arguments_and_says_which_differ(
    broker: Broker, open_source, caplog: pytest.LogCaptureFixture
):
    connection = broker.connect()
    connection.channel().queue_declare("job.high", durable=True, arguments={"x-max-length": 500})
    connection.close()
    caplog.set_level(logging.WARNING, logger="python_worker.adapters.rabbitmq")

    source = open_source()
    publish(broker, "job.high", b"still served")

    assert receive(source).body == b"still served"
    warning = next(
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("python_worker.adapters.rabbitmq") and "job.high" in r.getMessage()
    )
    assert "exists with different arguments" in warning
    assert "x-dead-letter-exchange" in warning


def test_tries_the_next_listed_node_when_the_first_cannot_be_reached(broker: Broker, open_source):
    source = open_source(hosts=["nonexistent.invalid", broker.host])
    publish(broker, "job.low", b"via the second node")

    assert receive(source).body == b"via the second node"


def test_drops_an_ack_meant_for_a_lost_connection_and_gets_the_message_again(
    controllable_node: RabbitMQNode, open_source
):
    source = open_source()
    publish(controllable_node, "job.medium", b"ack me")
    first = receive(source)

    controllable_node.close_all_connections("test: connection lost mid-job")
    assert wait_until(lambda: source.status().reconnects == 1 and source.status().connected)
    source.settle(first, Settlement.ACK)  # meant for the dead channel: must not be sent
    again = receive(source)
    source.settle(again, Settlement.ACK)

    assert again.body == b"ack me"
    assert again.attempt == 2
    assert wait_until(lambda: controllable_node.queue_counts("job.medium").messages_ready == 0)
    assert source.status().connected  # a stray ack would have closed the channel
    assert source.status().reconnects == 1


def test_resumes_consuming_when_the_broker_cancels_the_consumer(broker: Broker, open_source):
    source = open_source()
    connection = broker.connect()
    connection.channel().queue_delete("job.low")  # the broker sends basic.cancel
    connection.close()

    assert wait_until(lambda: source.status().reconnects >= 1 and source.status().connected)
    publish(broker, "job.low", b"after the cancel")

    assert receive(source).body == b"after the cancel"
