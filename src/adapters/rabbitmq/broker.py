"""RabbitMQ as the worker's broker: its message source, publisher and preflight in one place."""

from dataclasses import replace
from typing import TYPE_CHECKING

from python_worker.adapters.rabbitmq.connection import BrokerConfig
from python_worker.adapters.rabbitmq.preflight import RabbitMQPreflight
from python_worker.adapters.rabbitmq.publisher import RabbitMQPublisher
from python_worker.adapters.rabbitmq.source import RabbitMQSource
from python_worker.application.ports import Broker

if TYPE_CHECKING:
    from python_worker.adapters.rabbitmq.dead_letters import RabbitMQDeadLetters


class RabbitMQBroker(Broker):
    """One RabbitMQ deployment (a node or a cluster) as `config` describes it.

    The source is made on first use and then kept: it opens the connection and starts its
    I/O thread, which `publish` and `check` never need.
    """

    def __init__(self, config: BrokerConfig, prefetch: int, worker_id: str) -> None:
        # Named after the worker, so the broker's connection list tells the VMs apart.
        self._config = replace(config, connection_name=f"python-worker {worker_id}")
        self._prefetch = prefetch
        self._worker_id = worker_id
        self._source: RabbitMQSource | None = None

    def describe(self) -> str:
        return f"RabbitMQ {self._config.where()} ({self._config.queue_type} queues)"

    def source(self) -> RabbitMQSource:
        if self._source is None:
            self._source = RabbitMQSource(self._config, self._prefetch, self._worker_id)
        return self._source

    def publisher(self) -> RabbitMQPublisher:
        return RabbitMQPublisher(self._config)

    def preflight(self) -> RabbitMQPreflight:
        return RabbitMQPreflight(self._config)

    def dead_letters(self) -> "RabbitMQDeadLetters":
        # Imported when asked for: a worker never reads its dead letters (bench/: RSS).
        from python_worker.adapters.rabbitmq.dead_letters import RabbitMQDeadLetters

        return RabbitMQDeadLetters(self._config)
