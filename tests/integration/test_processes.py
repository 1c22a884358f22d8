"""`python-worker run` with several worker processes under one supervisor."""

import os
import signal
import time
from pathlib import Path

from devtools.stand_in_api import StandInApi
from tests.integration.worker_fixtures import Publish, StartWorker, settled, sum_job
from tests.support.rabbitmq_node import Broker


def child_pids(parent: int) -> list[int]:
    with open(f"/proc/{parent}/task/{parent}/children") as handle:
        return [int(pid) for pid in handle.read().split()]


def test_runs_several_processes_restarts_a_crashed_one_and_drains_all_on_sigterm(
    broker: Broker, api: StandInApi, start_worker: StartWorker, publish: Publish
):
    supervisor = start_worker(worker_processes=2, worker_id="vm1")
    assert api.wait_for(
        lambda: {"vm1-p0", "vm1-p1"} <= {h.body["workerId"] for h in api.heartbeats}, 60
    )
    job_ids = [f"job-{n}" for n in range(400)]
    publish(("job.medium", sum_job(job_id)) for job_id in job_ids[:200])
    assert api.wait_for(lambda: len(api.final_statuses()) >= 50, 60)

    victim = child_pids(supervisor.pid)[0]
    os.kill(victim, signal.SIGKILL)
    assert supervisor.wait_for_log("restarting in", 30)
    deadline = time.monotonic() + 60
    while len(child_pids(supervisor.pid)) < 2 or victim in child_pids(supervisor.pid):
        assert time.monotonic() < deadline, "the crashed process was not replaced"
        time.sleep(0.1)
    publish(("job.medium", sum_job(job_id)) for job_id in job_ids[200:])

    assert api.wait_for(lambda: set(job_ids) <= set(api.final_statuses()), 120)
    assert api.wait_for(lambda: settled(broker), 30)
    workers = {s.body["workerId"] for s in api.statuses}
    assert workers == {"vm1-p0", "vm1-p1"}
    assert supervisor.terminate(timeout=60) == 0
    assert "all worker processes stopped" in supervisor.log()


def malloc_arenas(pid: int) -> int:
    """glibc arenas besides the main one: each is a 64 MiB-aligned anonymous heap mapping
    whose first part, the heap header, is read-write. A thread's stack region can start at
    such an address too, but with its guard page (no access): those are not arenas."""
    heap = 64 << 20
    starts = set()
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            fields = line.split()
            start, end = (int(x, 16) for x in fields[0].split("-"))
            heap_header = fields[1].startswith("rw")
            if len(fields) == 5 and heap_header and start % heap == 0 and end - start <= heap:
                starts.add(start)
    return len(starts)


def test_worker_processes_run_with_two_malloc_arenas_unless_told_otherwise(
    api: StandInApi, start_worker: StartWorker, tmp_path: Path
):
    supervisor = start_worker(worker_processes=2, worker_id="vm1")
    # A worker of its own: its own outbox and job memory, as on another VM.
    uncapped = start_worker(
        worker_id="uncapped", malloc_arena_max=8, status_outbox_dir=tmp_path / "uncapped"
    )
    assert api.wait_for(lambda: len({h.body["workerId"] for h in api.heartbeats}) == 3, 60)

    assert [malloc_arenas(pid) for pid in child_pids(supervisor.pid)] == [1, 1]
    assert malloc_arenas(uncapped.pid) > 1  # the job threads would each get one
    assert supervisor.terminate(timeout=60) == 0


def test_worker_processes_run_our_code_when_the_working_directory_holds_packages_named_like_ours(
    api: StandInApi, start_worker: StartWorker, tmp_path: Path
):
    cwd = tmp_path / "cwd"
    imported = tmp_path / "impostors-imported"
    for name in ("python_worker", "domain", "application", "adapters", "bootstrap"):
        package = cwd / name
        package.mkdir(parents=True)
        (package / "__init__.py").write_text(
            f"open({str(imported)!r}, 'a').write({name!r} + '\\n')\n"
            f"raise SystemExit('the impostor {name} was imported')\n"
        )

    supervisor = start_worker(cwd=cwd, worker_processes=2, worker_id="vm1")

    assert api.wait_for(lambda: len({h.body["workerId"] for h in api.heartbeats}) == 2, 60)
    assert not imported.exists(), imported.read_text()
    assert supervisor.terminate(timeout=60) == 0
