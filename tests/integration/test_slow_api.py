"""A status API 50 ms away: many status requests wait on it at once, each job's in order.

The stand-in answers every status POST 50 ms after it arrived (`api.delay`) and counts the
requests it holds at the same moment (`api.peak_waiting`). A reporter with a few delivery lanes
would keep that at the number of lanes; one event loop with STATUS_MAX_IN_FLIGHT requests
keeps many more in flight, and never more than that setting allows.
"""

from __future__ import annotations

import itertools
from collections import Counter

from devtools.stand_in_api import StandInApi
from tests.integration.worker_fixtures import Publish, StartWorker, settled, sum_job
from tests.support.rabbitmq_node import Broker

API_DELAY = 0.05
HEARTBEAT_INTERVAL = 0.5
OLD_LANES = 4
JOBS = 1500  # two seconds or more of load even at the peak: time for several heartbeats


def assert_each_job_reported_running_then_completed_once(
    api: StandInApi, job_ids: list[str]
) -> None:
    for job_id in job_ids:
        keys = [s.idempotency_key for s in api.statuses_for(job_id)]
        assert keys == [f"{job_id}:running:1", f"{job_id}:completed:1"], keys
    repeated = [
        key for key, seen in Counter(s.idempotency_key for s in api.statuses).items() if seen > 1
    ]
    assert repeated == []


def test_keeps_many_status_requests_in_flight_in_order_per_job_when_the_api_is_slow(
    broker: Broker, api: StandInApi, start_worker: StartWorker, publish: Publish
) -> None:
    api.delay(API_DELAY)
    worker = start_worker(heartbeat_interval=HEARTBEAT_INTERVAL)
    assert worker.wait_for_log("consuming job.high", 60), worker.log()[-3000:]
    job_ids = [f"slow-{n}" for n in range(JOBS)]

    publish(("job.medium", sum_job(job_id)) for job_id in job_ids)

    assert api.wait_for(lambda: set(job_ids) <= set(api.final_statuses()), 180)
    assert api.wait_for(lambda: settled(broker), 60)
    assert_each_job_reported_running_then_completed_once(api, job_ids)
    print(f"peak of status requests waiting at the API at once: {api.peak_waiting}")
    assert api.peak_waiting > 2 * OLD_LANES
    statuses = api.statuses
    started, ended = statuses[0].at, statuses[-1].at
    beats = [beat.at for beat in api.heartbeats]
    during = [at for at in beats if started <= at <= ended]
    around = (
        [at for at in beats if at < started][-1:] + during + [at for at in beats if at > ended][:1]
    )
    gaps = [later - earlier for earlier, later in itertools.pairwise(around)]
    duration = ended - started
    print(f"run {duration:.2f}s, {len(during)} heartbeats during it, gaps {gaps}")
    # Heartbeats have their own thread and connection: a busy status path must not starve
    # them. A quarter of the nominal rate, and no silence of ten intervals, on a shared box.
    assert len(during) >= int(duration / (4 * HEARTBEAT_INTERVAL))
    assert max(gaps) < 10 * HEARTBEAT_INTERVAL
    assert worker.running()


def test_never_has_more_status_requests_in_flight_than_allowed_when_the_limit_is_three(
    broker: Broker, api: StandInApi, start_worker: StartWorker, publish: Publish
) -> None:
    api.delay(API_DELAY)
    worker = start_worker(status_max_in_flight=3)
    assert worker.wait_for_log("consuming job.high", 60), worker.log()[-3000:]
    job_ids = [f"limited-{n}" for n in range(150)]

    publish(("job.low", sum_job(job_id)) for job_id in job_ids)

    assert api.wait_for(lambda: set(job_ids) <= set(api.final_statuses()), 180)
    assert api.wait_for(lambda: settled(broker), 60)
    assert_each_job_reported_running_then_completed_once(api, job_ids)
    print(f"peak of status requests waiting at the API at once: {api.peak_waiting}")
    assert 1 <= api.peak_waiting <= 3
    assert worker.running()
