"""The TCP proxy in front of the broker: pass, delay, black-hole and reset behave as advertised."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pika
import pika.exceptions
import pytest
from pika.adapters.utils.connection_workflow import AMQPConnectorException

from tests.support.rabbitmq_node import Broker
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.broker

# pika raises the connector's own exception (not an AMQPError) when the handshake times out.
CONNECT_FAILED = (pika.exceptions.AMQPConnectionError, AMQPConnectorException)


@pytest.fixture
def proxy(broker: Broker) -> Iterator[TcpProxy]:
    with TcpProxy.for_broker(broker) as running:
        yield running


def _connect(proxy: TcpProxy, timeout: float = 5) -> pika.BlockingConnection:
    params = pika.URLParameters(proxy.amqp_url)
    params.connection_attempts = 1
    params.socket_timeout = timeout
    params.stack_timeout = timeout
    return pika.BlockingConnection(params)


def test_pass_through_carries_amqp(proxy: TcpProxy) -> None:
    with contextlib.closing(_connect(proxy)) as conn:
        channel = conn.channel()
        channel.queue_declare("job.low", durable=True)
        channel.basic_publish("", "job.low", b"via proxy")
        _method, _props, body = channel.basic_get("job.low", auto_ack=True)
    assert body == b"via proxy"


def test_delay_slows_the_handshake(proxy: TcpProxy) -> None:
    proxy.delay(0.3)
    began = time.monotonic()
    _connect(proxy).close()
    # The AMQP handshake is several round trips, each delayed at least once.
    assert time.monotonic() - began >= 0.6


def test_black_hole_stalls_new_connections(proxy: TcpProxy) -> None:
    proxy.black_hole()
    with pytest.raises(CONNECT_FAILED):
        _connect(proxy, timeout=1)
    proxy.pass_through()
    _connect(proxy).close()


def test_reset_drops_open_connections(proxy: TcpProxy) -> None:
    conn = _connect(proxy)
    proxy.reset()
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        conn.channel().queue_declare("job.low", durable=True)
    assert conn.is_closed
    with pytest.raises(CONNECT_FAILED):
        _connect(proxy, timeout=1)
    proxy.pass_through()
    _connect(proxy).close()
