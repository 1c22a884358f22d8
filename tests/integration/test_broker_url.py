"""A worker configured by RABBITMQ_URL alone: two nodes, each with its own port."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from devtools.stand_in_api import StandInApi
from python_worker.adapters.rabbitmq.settings import parse_broker_url
from tests.integration.worker_fixtures import Publish, StartWorker, sum_job
from tests.support.rabbitmq_node import Broker, free_port


def two_node_url(broker: Broker, spelling: str, down: int) -> str:
    """A RABBITMQ_URL whose first node is a port nobody listens on and whose second is `broker`."""
    # The suite's broker may be an external one (RABBITMQ_URL): keep its login and vhost.
    login = parse_broker_url(broker.amqp_url)
    userinfo = f"{quote(login.username, safe='')}:{quote(login.password, safe='')}"
    vhost = quote(login.vhost, safe="")
    if spelling == "host list":
        return f"amqp://{userinfo}@127.0.0.1:{down},{broker.host}:{broker.port}/{vhost}"
    return (
        f"amqp://{userinfo}@127.0.0.1:{down}/{vhost};"
        f"amqp://{userinfo}@{broker.host}:{broker.port}/{vhost}"
    )


@pytest.mark.parametrize("spelling", ["host list", "semicolon-separated URLs"])
def test_processes_a_job_via_the_second_node_when_the_first_in_rabbitmq_url_is_down(
    broker: Broker, api: StandInApi, start_worker: StartWorker, publish: Publish, spelling: str
):
    down = free_port()
    url = two_node_url(broker, spelling, down)
    user, vhost = parse_broker_url(url).username, parse_broker_url(url).vhost.lstrip("/")

    worker = start_worker(rabbitmq_url=url)
    publish([("job.high", sum_job("via-the-second-node"))])

    assert api.wait_for(lambda: "via-the-second-node" in api.final_statuses(), 60), worker.log()
    final = api.final_statuses()["via-the-second-node"].body
    assert (final["status"], final["result"]["value"]) == ("completed", 6)
    log = worker.log()
    assert f"broker node amqp://{user}@127.0.0.1:{down}/{vhost} unreachable" in log
    assert f"connected to amqp://{user}@{broker.host}:{broker.port}/{vhost};" in log
