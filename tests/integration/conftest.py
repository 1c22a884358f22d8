"""Integration fixtures: one private RabbitMQ node per session, cleaned before every test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.integration.worker_fixtures import api, publish, start_worker
from tests.support.rabbitmq_node import (
    EXTERNAL_BROKER_REASON,
    Broker,
    RabbitMQNode,
    RabbitMQNotInstalledError,
)

__all__ = ["api", "broker", "controllable_node", "publish", "rabbitmq_node", "start_worker"]

# Everything the worker declares; deleted before each test so no state leaks between tests.
PROJECT_QUEUES = ("job.high", "job.medium", "job.low", "job.dead-letter")
PROJECT_EXCHANGES = ("jobs.exchange",)


@pytest.fixture(scope="session")
def rabbitmq_node() -> Iterator[Broker]:
    """The session's broker: a private RabbitMQNode, or the RABBITMQ_URL broker if that is set."""
    url = os.environ.get("RABBITMQ_URL")
    if url:
        yield Broker(url)
        return
    try:
        node = RabbitMQNode()
    except RabbitMQNotInstalledError as exc:
        # Fail, never skip: a silently skipped integration suite looks green on CI.
        pytest.fail(f"{exc}\nRun `sudo scripts/ensure-rabbitmq.sh` first.", pytrace=False)
    try:
        node.start()
        yield node
    finally:
        node.close()


def _clean(broker: Broker) -> None:
    # A previous test may have killed/stopped the node (or stop_app'd it) and failed before
    # bringing it back; repair that here rather than failing every later test.
    broker.ensure_running()
    broker.reset(queues=PROJECT_QUEUES, exchanges=PROJECT_EXCHANGES)


@pytest.fixture
def broker(rabbitmq_node: Broker) -> Broker:
    """The running broker with the project's queues and exchange deleted (clean slate)."""
    _clean(rabbitmq_node)
    return rabbitmq_node


@pytest.fixture
def controllable_node(rabbitmq_node: Broker) -> Iterator[RabbitMQNode]:
    """The private node for tests that stop/kill/restart it; running again afterwards.

    Skips (with the reason) when RABBITMQ_URL points at an external broker we must not touch.
    """
    if not isinstance(rabbitmq_node, RabbitMQNode):
        pytest.skip(EXTERNAL_BROKER_REASON)
    _clean(rabbitmq_node)
    yield rabbitmq_node
    rabbitmq_node.ensure_running()
