"""Publishes jobs to the priority queues as persistent messages, with publisher confirms."""

import logging
from collections.abc import Callable, Iterable

import pika
import pika.exceptions

from python_worker.adapters.rabbitmq.connection import (
    EXCHANGE,
    BrokerConfig,
    connect,
    declare_topology,
)
from python_worker.application.ports import JobPublisher, PublishFailed, PublishReport
from python_worker.domain.jobs import Priority

log = logging.getLogger(__name__)


class RabbitMQPublisher(JobPublisher):
    """Sends job bodies to `jobs.exchange`; a message counts only once the broker confirmed it.

    `mandatory` makes an unroutable message (its queue missing) come back as a failure instead
    of vanishing; confirms make a message count only once the broker has taken responsibility.
    """

    def __init__(self, config: BrokerConfig) -> None:
        self._config = config

    def publish(
        self,
        messages: Iterable[tuple[Priority, bytes]],
        on_confirmed: Callable[[int], None] | None = None,
    ) -> PublishReport:
        report = PublishReport()
        try:
            connection = connect(self._config)
        except (pika.exceptions.AMQPError, OSError) as exc:
            raise PublishFailed(f"broker at {self._config.where()} unreachable: {exc!r}") from exc
        try:
            declare_topology(connection, self._config)
            channel = connection.channel()
            channel.confirm_delivery()
            properties = pika.BasicProperties(delivery_mode=2, content_type="application/json")
            for position, (priority, body) in enumerate(messages):
                try:
                    channel.basic_publish(
                        EXCHANGE, priority.queue, body, properties=properties, mandatory=True
                    )
                    report.confirmed += 1
                    if on_confirmed is not None:
                        on_confirmed(position)
                except pika.exceptions.UnroutableError:
                    report.failures.append(f"{priority.queue}: returned unroutable")
                except pika.exceptions.NackError:
                    report.failures.append(f"{priority.queue}: refused by the broker (nack)")
        finally:
            if connection.is_open:
                connection.close()
        return report
