"""Faults under load: the worker, the broker, the network and the APIs fail; the ledger must hold.

Every test runs a real `python-worker run` process against the private RabbitMQ node while the
ledger publishes a few hundred mixed jobs (some before, most during the fault) plus a handful
of bad messages, and passes only if afterwards nothing is lost, duplicated or left behind.
Timeouts are generous on purpose: other suites share this 2-core machine.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterator

import pytest

from devtools.stand_in_api import StandInApi
from tests.integration.worker_fixtures import StartWorker
from tests.support.ledger import Ledger, publish_bad_messages, settle_and_check, wait_for_finals
from tests.support.rabbitmq_node import Broker, RabbitMQNode
from tests.support.tcp_proxy import TcpProxy
from tests.support.worker_process import WorkerProcess

LOST_LINE = re.compile(r"broker connection to \S+ lost: (.*)")


@pytest.fixture
def ledger(broker: Broker, api: StandInApi) -> Iterator[Ledger]:
    book = Ledger(broker, api, prefix="job")
    yield book
    book.close()


def lost_lines(worker: WorkerProcess) -> list[str]:
    return LOST_LINE.findall(worker.log())


# -- the worker dies ---------------------------------------------------------------------------


def test_kill_9_at_three_random_moments_loses_no_job(
    ledger: Ledger, start_worker: StartWorker
) -> None:
    rng = random.Random()
    seed = rng.randrange(1_000_000)
    rng.seed(seed)
    print(f"random seed {seed}")
    ledger.publish_jobs(100)
    publish_bad_messages(ledger)
    worker = start_worker()
    ledger.start_background(300, per_second=25)
    wait_for_finals(ledger, 20)

    for _ in range(3):
        assert worker.wait_for_log("consuming job.high", 60), worker.log()[-3000:]
        time.sleep(rng.uniform(0.2, 3.0))
        assert worker.running(), worker.log()[-3000:]
        worker.kill()
        worker = start_worker()

    settle_and_check(ledger)


def test_sigterm_mid_load_exits_0_and_the_next_worker_finishes_the_rest(
    ledger: Ledger, start_worker: StartWorker
) -> None:
    ledger.publish_jobs(200)
    publish_bad_messages(ledger)
    first = start_worker()
    ledger.start_background(200, per_second=30)
    wait_for_finals(ledger, 50)

    assert first.terminate(timeout=60) == 0
    assert "stopped" in first.log()
    start_worker()

    settle_and_check(ledger)


# -- the broker goes away ----------------------------------------------------------------------


@pytest.mark.parametrize("outage", ["stop_app for 20 s", "node killed and restarted", "close_all"])
def test_same_worker_process_recovers_from_a_broker_outage_under_load(
    outage: str, controllable_node: RabbitMQNode, ledger: Ledger, start_worker: StartWorker
) -> None:
    ledger.publish_jobs(100)
    publish_bad_messages(ledger)
    worker = start_worker()
    ledger.start_background(300, per_second=30)
    wait_for_finals(ledger, 50)

    if outage.startswith("stop_app"):
        controllable_node.stop_app()
        time.sleep(20)
        controllable_node.start_app()
    elif outage.startswith("node killed"):
        controllable_node.kill()
        time.sleep(2)
        controllable_node.start()
    else:
        controllable_node.close_all_connections()

    settle_and_check(ledger)
    assert worker.running(), "the worker process must heal itself, not exit"
    assert lost_lines(worker), "the lost connection was not logged"


def test_silent_network_cut_is_noticed_by_heartbeats_and_healed(
    broker: Broker, ledger: Ledger, start_worker: StartWorker
) -> None:
    heartbeat = 2
    with TcpProxy.for_broker(broker) as proxy:
        worker = start_worker(
            rabbitmq_host=proxy.host, rabbitmq_port=proxy.port, rabbitmq_heartbeat=heartbeat
        )
        ledger.publish_jobs(100)
        publish_bad_messages(ledger)
        ledger.start_background(300, per_second=30)
        wait_for_finals(ledger, 50)

        before = len(lost_lines(worker))
        proxy.black_hole()
        cut = time.monotonic()
        bound = 2 * (heartbeat + 5) + 10  # pika checks every heartbeat + 5 s; see the report
        while len(lost_lines(worker)) == before and time.monotonic() - cut < bound:
            time.sleep(0.1)
        noticed = time.monotonic() - cut
        print(f"network cut noticed after {noticed:.1f}s: {lost_lines(worker)[before:][:1]}")
        assert len(lost_lines(worker)) > before, f"cut not noticed within {bound}s"
        time.sleep(2)
        proxy.pass_through()

        settle_and_check(ledger)
        assert worker.running()


# -- the APIs misbehave ------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["down for 30 s", "5 s per answer", "answers 500 for 20 s"])
def test_jobs_complete_and_every_status_arrives_when_the_status_api_misbehaves(
    fault: str, ledger: Ledger, api: StandInApi, start_worker: StartWorker
) -> None:
    start_worker()
    ledger.publish_jobs(100)
    publish_bad_messages(ledger)
    wait_for_finals(ledger, 50)
    ledger.start_background(300, per_second=30)

    if fault.startswith("down"):
        api.refuse()
        time.sleep(30)
        api.resume()
    elif fault.startswith("5 s"):
        api.hang(seconds=5)
        time.sleep(20)
        api.reset()
    else:
        api.answer(500)
        time.sleep(20)
        api.reset()

    settle_and_check(ledger)


def test_outbox_of_a_worker_killed_while_the_api_was_down_is_replayed_by_the_next(
    broker: Broker, ledger: Ledger, api: StandInApi, start_worker: StartWorker
) -> None:
    first = start_worker()
    ledger.publish_jobs(50)
    wait_for_finals(ledger, 20)
    api.refuse()
    publish_bad_messages(ledger)
    ledger.start_background(250, per_second=40)
    assert first.wait_for_log("keeping updates in the outbox", 60)
    time.sleep(4)

    first.kill()
    api.resume()
    second = start_worker()

    settle_and_check(ledger)
    assert second.wait_for_log("from an earlier run; replaying them first", 5)


def test_jobs_and_statuses_are_unaffected_while_the_orchestrator_is_down(
    ledger: Ledger, start_worker: StartWorker
) -> None:
    with StandInApi() as orchestrator:
        orchestrator.refuse()
        worker = start_worker(orchestrator_url=orchestrator.url, heartbeat_interval=0.3)
        ledger.publish_jobs(100)
        publish_bad_messages(ledger)
        ledger.start_background(250, per_second=40)

        settle_and_check(ledger)
        assert worker.wait_for_log("heartbeat failed", 10)
        orchestrator.resume()
        assert orchestrator.wait_for(lambda: len(orchestrator.heartbeats) >= 2, 30)
        assert worker.wait_for_log("heartbeats are getting through again", 10)
