"""A full disk under the outbox and the job memory, on a real (small) filesystem.

Each test mounts an 8 MiB tmpfs, puts STATUS_OUTBOX_DIR and JOB_MEMORY_DIR on it, and fills it
to the last byte with a filler file while the status API is down, so SQLite really answers
"database or disk is full". The worker must then keep every status in memory, take no new job
(and say why: log, /readyz, heartbeats), acknowledge nothing whose status is not safe, and
finish every job once there is room again; a SIGTERM meanwhile must not hang it.

Mounting needs root (CI runs as root); elsewhere the tests skip with the reason.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devtools.stand_in_api import StandInApi
from tests.integration.worker_fixtures import StartWorker, sum_job
from tests.support.ledger import FINAL, Ledger
from tests.support.rabbitmq_node import Broker, free_port
from tests.support.waiting import wait_until
from tests.support.worker_process import WorkerProcess

DISK_SIZE = "8m"
GRACE = 10
EXIT_MARGIN = 30  # beyond the grace period: closing the reporter and the job memory, a busy box
SETTLE_TIMEOUT = 150  # the replayer probes a returning API at most 30 s apart
PAUSED_WITHIN = 120
JOBS = 500


@dataclass
class SmallDisk:
    """A tmpfs mounted at `path`: `fill` takes every byte left, `free` gives them back."""

    path: Path

    @property
    def filler(self) -> Path:
        return self.path / "filler"

    def fill(self) -> int:
        """Write the filler until the filesystem says ENOSPC; returns the bytes written."""
        written = 0
        descriptor = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for chunk in (1 << 20, 1 << 12, 1):
                block = b"\0" * chunk
                while True:
                    try:
                        written += os.write(descriptor, block)
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
        finally:
            os.close(descriptor)
        return written

    def free(self) -> None:
        self.filler.unlink()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    """An 8 MiB tmpfs. Ask for it before `start_worker`, so it is unmounted after the workers
    are gone."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs these tests as root)")
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs at {mount_point} (exit {mounted.returncode}): "
            f"{mounted.stderr.strip() or mounted.stdout.strip()}"
        )
    try:
        yield SmallDisk(mount_point)
    finally:
        unmounted = subprocess.run(["umount", str(mount_point)], capture_output=True, check=False)
        if unmounted.returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.fixture
def orchestrator() -> Iterator[StandInApi]:
    """An orchestrator apart from the status API, so heartbeats arrive while that one is down."""
    with StandInApi() as stand_in:
        yield stand_in


@pytest.fixture
def ledger(broker: Broker, api: StandInApi) -> Iterator[Ledger]:
    book = Ledger(broker, api, prefix="disk")
    yield book
    book.close()


def readyz(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return 0, {}


def jobs_finished(port: int) -> int:
    """Jobs this worker ran to an outcome, by its /metrics, once none is running."""
    assert wait_until(lambda: _metric(port, "worker_jobs_in_flight") == 0, 30)
    return int(_metric(port, 'worker_jobs_total{outcome="completed",type="sum"}') or 0)


def _metric(port: int, name: str) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


def names_the_full_outbox(problems: list[str]) -> bool:
    return any("outbox" in problem and "disk is full" in problem for problem in problems)


def start_on_small_disk(
    start_worker: StartWorker, disk: SmallDisk, orchestrator: StandInApi, metrics_port: int
) -> WorkerProcess:
    worker = start_worker(
        status_outbox_dir=disk.path / "outbox",
        job_memory_dir=disk.path / "memory",
        metrics_port=metrics_port,
        metrics_host="127.0.0.1",
        orchestrator_url=orchestrator.url,
        worker_capacity=4,
        shutdown_grace_seconds=GRACE,
        heartbeat_interval=0.5,
    )
    assert worker.wait_for_log("consuming job.high", 60), worker.log()[-3000:]
    assert wait_until(lambda: readyz(metrics_port)[0] == 200, 30), readyz(metrics_port)
    return worker


def publish_sum_jobs(ledger: Ledger, count: int) -> list[str]:
    job_ids = [f"disk-{n}" for n in range(count)]
    for job_id in job_ids:
        assert ledger.publish_job("job.medium", sum_job(job_id), result={"value": 6})
    return job_ids


def jobs_held_by_broker(broker: Broker) -> int:
    counts = broker.queue_counts("job.medium")
    return 0 if counts is None else counts.messages_ready + counts.messages_unacknowledged


def assert_paused_for_the_full_disk(
    worker: WorkerProcess, orchestrator: StandInApi, metrics_port: int
) -> None:
    assert worker.wait_for_log("not taking new jobs", PAUSED_WITHIN), worker.log()[-4000:]
    assert wait_until(lambda: names_the_full_outbox(readyz(metrics_port)[1].get("problems", [])))
    status, body = readyz(metrics_port)
    assert status == 503
    assert body["ready"] is False
    assert names_the_full_outbox(body["problems"]), body
    assert orchestrator.wait_for(
        lambda: any(
            not beat.body["acceptingJobs"] and names_the_full_outbox(beat.body["problems"])
            for beat in orchestrator.heartbeats
        ),
        30,
    ), [beat.body for beat in orchestrator.heartbeats[-3:]]


def assert_one_final_key_per_job(api: StandInApi, job_ids: list[str]) -> None:
    for job_id in job_ids:
        keys = {s.idempotency_key for s in api.statuses_for(job_id) if s.status in FINAL}
        assert len(keys) == 1, (job_id, keys)


def test_keeps_every_status_and_finishes_every_job_when_the_disk_fills_while_the_api_is_down(
    small_disk: SmallDisk,
    broker: Broker,
    api: StandInApi,
    orchestrator: StandInApi,
    ledger: Ledger,
    start_worker: StartWorker,
) -> None:
    metrics_port = free_port()
    worker = start_on_small_disk(start_worker, small_disk, orchestrator, metrics_port)
    api.refuse()
    assert small_disk.fill() > 0

    job_ids = publish_sum_jobs(ledger, JOBS)

    assert_paused_for_the_full_disk(worker, orchestrator, metrics_port)
    # Nothing could be delivered or stored, so nothing may have been acknowledged.
    assert jobs_held_by_broker(broker) == JOBS
    assert worker.running()

    small_disk.free()
    api.resume()

    settled = ledger.wait_until_settled(SETTLE_TIMEOUT)
    assert settled, f"{ledger.report()}\n{worker.log()[-4000:]}"
    ledger.assert_holds()
    assert_one_final_key_per_job(api, job_ids)
    assert wait_until(lambda: readyz(metrics_port) == (200, {"ready": True, "problems": []}), 60)
    assert "taking jobs again" in worker.log()
    assert orchestrator.wait_for(
        lambda: (
            orchestrator.heartbeats[-1].body["acceptingJobs"]
            and orchestrator.heartbeats[-1].body["problems"] == []
        ),
        30,
    )

    try:
        returncode = worker.terminate(timeout=GRACE + EXIT_MARGIN)
    except subprocess.TimeoutExpired:
        pytest.fail(f"no exit within {GRACE + EXIT_MARGIN}s of SIGTERM\n{worker.log()[-4000:]}")
    assert returncode == 0


def test_exits_on_sigterm_in_time_and_loses_no_job_when_the_disk_is_full_and_the_api_down(
    small_disk: SmallDisk,
    broker: Broker,
    api: StandInApi,
    orchestrator: StandInApi,
    ledger: Ledger,
    start_worker: StartWorker,
) -> None:
    metrics_port = free_port()
    first = start_on_small_disk(start_worker, small_disk, orchestrator, metrics_port)
    api.refuse()
    assert small_disk.fill() > 0
    job_ids = publish_sum_jobs(ledger, 200)
    assert_paused_for_the_full_disk(first, orchestrator, metrics_port)

    try:
        returncode = first.terminate(timeout=GRACE + EXIT_MARGIN)
    except subprocess.TimeoutExpired:
        pytest.fail(f"no exit within {GRACE + EXIT_MARGIN}s of SIGTERM\n{first.log()[-4000:]}")

    assert returncode == 0, first.log()[-4000:]
    # What could be neither delivered nor stored was not acknowledged: the broker has it all.
    assert wait_until(lambda: jobs_held_by_broker(broker) == len(job_ids), 60)
    small_disk.free()
    api.resume()
    start_on_small_disk(start_worker, small_disk, orchestrator, free_port())
    settled = ledger.wait_until_settled(SETTLE_TIMEOUT)
    assert settled, ledger.report()
    ledger.assert_holds()
    assert_one_final_key_per_job(api, job_ids)


def test_takes_jobs_again_once_there_is_room_when_the_api_returned_while_the_disk_was_full(
    small_disk: SmallDisk,
    broker: Broker,
    api: StandInApi,
    orchestrator: StandInApi,
    ledger: Ledger,
    start_worker: StartWorker,
) -> None:
    metrics_port = free_port()
    worker = start_on_small_disk(start_worker, small_disk, orchestrator, metrics_port)
    api.refuse()
    assert small_disk.fill() > 0
    job_ids = publish_sum_jobs(ledger, JOBS)
    assert_paused_for_the_full_disk(worker, orchestrator, metrics_port)
    held = jobs_finished(metrics_port)

    api.resume()

    # The statuses waiting in memory reach the API though the disk is still full, and only
    # then are their messages acknowledged.
    assert api.wait_for(lambda: len(api.final_statuses()) >= held, 120), (
        held,
        len(api.final_statuses()),
    )
    assert wait_until(lambda: jobs_held_by_broker(broker) == JOBS - held, 60)
    assert worker.running()

    small_disk.free()

    settled = ledger.wait_until_settled(SETTLE_TIMEOUT)
    assert settled, f"{ledger.report()}\n/readyz: {readyz(metrics_port)}\n{worker.log()[-3000:]}"
    ledger.assert_holds()
    assert_one_final_key_per_job(api, job_ids)
    assert wait_until(lambda: readyz(metrics_port) == (200, {"ready": True, "problems": []}), 60)
