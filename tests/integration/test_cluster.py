"""The documented deployment, a 3-node cluster with quorum queues: nodes die under load.

Two `python-worker run` processes with QUEUE_TYPE=quorum, each given every node in RABBITMQ_URL
(in its own order), work through the ledger's mixed jobs while the node both are connected to
is SIGKILLed and restarted, then every node in turn. The ledger must hold: nothing lost,
nothing unexpected. The cluster boots once for this module (~20 s); timeouts are generous on
purpose, other suites share this 2-core machine.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.stand_in_api import StandInApi
from python_worker.adapters.rabbitmq.connection import JOB_QUEUES, BrokerConfig, declare_topology
from tests.integration.conftest import PROJECT_EXCHANGES, PROJECT_QUEUES
from tests.integration.worker_fixtures import StartWorker
from tests.support.ledger import Ledger, publish_bad_messages, settle_and_check, wait_for_finals
from tests.support.rabbitmq_cluster import RabbitMQCluster
from tests.support.rabbitmq_node import RabbitMQNode, RabbitMQNotInstalledError
from tests.support.waiting import wait_until
from tests.support.worker_process import WorkerProcess

pytestmark = pytest.mark.broker

CONNECTED = re.compile(r"connected to amqp://[^@\s]+@[^:\s]+:(\d+)/")


def connection_name(worker: WorkerProcess) -> str:
    """The connection_name a worker gives the broker: `python-worker <WORKER_ID>`."""
    return f"python-worker {worker.setting('WORKER_ID')}"


@pytest.fixture(scope="module")
def cluster() -> Iterator[RabbitMQCluster]:
    try:
        nodes = RabbitMQCluster(size=3)
    except RabbitMQNotInstalledError as exc:
        if os.environ.get("RABBITMQ_URL"):
            pytest.skip(f"a cluster needs private nodes of a local RabbitMQ: {exc}")
        pytest.fail(f"{exc}\nRun `sudo scripts/ensure-rabbitmq.sh` first.", pytrace=False)
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.close()


@pytest.fixture
def broker(cluster: RabbitMQCluster) -> RabbitMQCluster:
    """The suite's `broker`, here the cluster: `start_worker` and the ledger use it."""
    cluster.ensure_running()
    cluster.reset(queues=PROJECT_QUEUES, exchanges=PROJECT_EXCHANGES)
    return cluster


@pytest.fixture
def ledger(broker: RabbitMQCluster, api: StandInApi) -> Iterator[Ledger]:
    book = Ledger(broker, api, prefix="job")
    yield book
    book.close()


def serving_node(cluster: RabbitMQCluster, worker: WorkerProcess) -> RabbitMQNode | None:
    """The node the worker consumes from now: the one its last `connected to` line names."""
    ports = CONNECTED.findall(worker.log())
    return cluster.node_on_port(int(ports[-1])) if ports else None


def connects(worker: WorkerProcess) -> int:
    return len(CONNECTED.findall(worker.log()))


def name(node: RabbitMQNode | None) -> str:
    return node.nodename.partition("@")[0] if node is not None else "(none)"


def tail(worker: WorkerProcess) -> str:
    return worker.log()[-3000:]


def kill_and_restart(
    cluster: RabbitMQCluster, node: RabbitMQNode, workers: list[WorkerProcess], ledger: Ledger
) -> None:
    """SIGKILL `node` under load; its workers must move on and jobs go on finishing meanwhile."""
    cluster.wait_until_safe_to_stop(node)
    on_it = [worker for worker in workers if serving_node(cluster, worker) is node]
    served = cluster.client_connections(node)
    assert all(served[connection_name(worker)] >= 1 for worker in on_it), served
    before = [(worker, connects(worker)) for worker in on_it]

    node.kill()

    reconnected = wait_until(lambda: all(connects(w) > seen for w, seen in before), 90)
    assert reconnected, "\n".join(tail(worker) for worker in on_it)
    for worker in on_it:
        assert serving_node(cluster, worker) not in (node, None), tail(worker)
    wait_for_finals(ledger, len(ledger.api.final_statuses()) + 30, timeout=90)
    took = node.start(timeout=120)
    cluster.wait_until_running()
    moved = [name(serving_node(cluster, worker)) for worker in on_it]
    print(f"killed {name(node)}: its workers went to {moved}; back in {took:.1f} s")
    assert all(worker.running() for worker in workers), "a worker exited instead of healing"


# 4 node kills, each with its restart, under load: more than the suite's default 300 s on a
# busy box is possible, and a timeout there would hide the ledger's report.
@pytest.mark.timeout(600)
def test_two_workers_lose_no_job_when_their_node_and_then_every_node_is_killed(
    cluster: RabbitMQCluster, ledger: Ledger, start_worker: StartWorker, tmp_path: Path
) -> None:
    first, second, third = cluster.nodes
    # Two workers at once, so each its own outbox (one directory would refuse the second).
    workers = [
        start_worker(
            rabbitmq_url=cluster.url(nodes),
            queue_type="quorum",
            status_outbox_dir=tmp_path / f"outbox-{n}",
        )
        for n, nodes in enumerate([[first, second, third], [first, third, second]])
    ]
    for worker in workers:
        assert worker.wait_for_log("consuming job.high", 60), tail(worker)
    types = cluster.queue_types()
    assert {queue: types.get(queue) for queue in PROJECT_QUEUES} == dict.fromkeys(
        PROJECT_QUEUES, "quorum"
    )
    assert cluster.quorum_members("job.high") == {node.nodename for node in cluster.nodes}
    ledger.publish_jobs(300)
    publish_bad_messages(ledger)
    ledger.start_background(None, per_second=30)
    wait_for_finals(ledger, 100)

    assert {serving_node(cluster, worker) for worker in workers} == {first}
    kill_and_restart(cluster, first, workers, ledger)
    # Each went on to the next node of its own list.
    assert [serving_node(cluster, worker) for worker in workers] == [second, third]
    for node in cluster.nodes:
        kill_and_restart(cluster, node, workers, ledger)
    ledger.stop_background()

    settle_and_check(ledger)
    assert len(ledger.entries) >= 800, "too little load to say much"


def test_says_in_one_line_that_a_classic_queue_is_used_as_it_is_when_queue_type_is_quorum(
    broker: RabbitMQCluster, start_worker: StartWorker
) -> None:
    with contextlib.closing(broker.connect()) as connection:
        # The queues as a worker before QUEUE_TYPE=quorum declared them.
        declare_topology(connection, BrokerConfig(hosts=[broker.host], port=broker.port))

    worker = start_worker(rabbitmq_url=broker.url(), queue_type="quorum")

    assert worker.wait_for_log("consuming job.high", 60), tail(worker)
    lines = [line for line in worker.log().splitlines() if "queue job.high " in line]
    assert len(lines) == 1, lines
    assert "queue job.high is a classic queue, not quorum as QUEUE_TYPE=quorum says" in lines[0]
    assert "using it as it is" in lines[0]
    assert "Moving classic queues to quorum" in lines[0]
    assert broker.queue_types()["job.high"] == "classic"
    assert all(broker.queue_types()[queue] == "classic" for queue in JOB_QUEUES)
