"""Tests of the private-RabbitMQ fixture itself: AMQP works, restarts keep data, kills recover."""

from __future__ import annotations

import contextlib
import time

import pika
import pika.exceptions
import pytest

from tests.support.rabbitmq_node import Broker, QueueCounts, RabbitMQNode, requires_private_node

pytestmark = pytest.mark.broker

QUEUE = "job.low"


def _publish_persistent(broker: Broker, body: bytes) -> None:
    with contextlib.closing(broker.connect()) as conn:
        channel = conn.channel()
        channel.confirm_delivery()  # the broker has the message before we go on
        channel.queue_declare(QUEUE, durable=True)
        channel.basic_publish(
            "", QUEUE, body, pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
        )


def _get_one(broker: Broker) -> bytes | None:
    with contextlib.closing(broker.connect()) as conn:
        _method, _props, body = conn.channel().basic_get(QUEUE, auto_ack=True)
        return body


def test_publish_and_consume_round_trip(broker: Broker) -> None:
    with contextlib.closing(broker.connect()) as conn:
        channel = conn.channel()
        channel.queue_declare(QUEUE, durable=True)
        channel.basic_publish("", QUEUE, b"hello")
        received: list[bytes] = []

        def on_message(ch, method, _props, body: bytes) -> None:  # type: ignore[no-untyped-def]
            received.append(body)
            ch.basic_ack(method.delivery_tag)
            ch.stop_consuming()

        channel.basic_consume(QUEUE, on_message)
        conn.call_later(5, channel.stop_consuming)  # never hang the suite on a lost message
        channel.start_consuming()
    assert received == [b"hello"]


def test_each_test_starts_without_project_queues(broker: Broker) -> None:
    # The `broker` fixture deleted job.* before this test, whatever earlier tests left behind.
    assert broker.queue_counts(QUEUE) is None


@requires_private_node
def test_list_queues_reports_ready_unacked_and_consumers(controllable_node: RabbitMQNode) -> None:
    _publish_persistent(controllable_node, b"a")
    _publish_persistent(controllable_node, b"b")
    with contextlib.closing(controllable_node.connect()) as conn:
        channel = conn.channel()
        channel.basic_qos(prefetch_count=1)
        channel.basic_consume(QUEUE, lambda *_: None)  # holds one message unacked
        conn.process_data_events(time_limit=0.5)
        assert controllable_node.list_queues()[QUEUE] == QueueCounts(1, 1, 1)


@requires_private_node
def test_restart_keeps_durable_queue_and_persistent_message(
    controllable_node: RabbitMQNode,
) -> None:
    _publish_persistent(controllable_node, b"survives restart")

    controllable_node.restart()

    assert controllable_node.list_queues()[QUEUE].messages_ready == 1
    assert _get_one(controllable_node) == b"survives restart"


@requires_private_node
def test_kill_then_start_recovers_the_node(controllable_node: RabbitMQNode) -> None:
    _publish_persistent(controllable_node, b"survives crash")
    # The message is on disk once confirmed, but a queue declared a moment ago may still sit in
    # Mnesia's write buffer: a SIGKILL then loses the queue (seen once in CI). In production a
    # queue exists long before a crash; here, flush its record the way time would.
    controllable_node.rabbitmqctl("eval", "mnesia:sync_log().", check=False)
    pid = controllable_node.pid

    controllable_node.kill()

    assert not controllable_node.process_alive()
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        controllable_node.connect()
    controllable_node.start()
    assert controllable_node.pid not in (None, pid)
    # Persistent + confirmed means fsynced, so even a SIGKILL must not lose it.
    assert _get_one(controllable_node) == b"survives crash"


@requires_private_node
def test_close_all_connections_drops_client(controllable_node: RabbitMQNode) -> None:
    conn = controllable_node.connect()
    try:
        controllable_node.close_all_connections("test says bye")
        deadline = time.monotonic() + 10
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
            while time.monotonic() < deadline:
                conn.process_data_events(time_limit=0.2)
        assert closed.value.reply_code == 320  # CONNECTION_FORCED
        assert "test says bye" in closed.value.reply_text
        assert conn.is_closed
    finally:
        if conn.is_open:
            conn.close()


@requires_private_node
def test_stop_app_then_start_app(controllable_node: RabbitMQNode) -> None:
    controllable_node.stop_app()
    assert controllable_node.process_alive()
    assert not controllable_node.is_running()
    controllable_node.start_app()
    controllable_node.connect().close()
