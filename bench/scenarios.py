"""Real worker processes against pre-published jobs: throughput, cost, priority, guarantees."""

from __future__ import annotations

import bisect
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pika

from bench.raw import publish_fast, redis_publish_fast
from bench.stand_in import Arrival, StandInProcess
from python_worker.adapters.rabbitmq.connection import (
    DEAD_LETTER_QUEUE,
    EXCHANGE,
    JOB_QUEUES,
    declare_topology,
)
from python_worker.adapters.redis.connection import BODY_FIELD
from python_worker.bootstrap import load_settings
from tests.support.rabbitmq_node import Broker
from tests.support.redis_server import RedisServer

AnyBroker = Broker | RedisServer
"""What a scenario runs against: a RabbitMQ broker, or a private Redis (WORKER_BROKER=redis)."""

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_ALL_QUEUES = (*JOB_QUEUES, DEAD_LETTER_QUEUE)
_FINAL = ("completed", "failed")
TRICKLE_JOBS = 50
TRICKLE_GAP_SECONDS = 0.02


def sum_job(job_id: str) -> bytes:
    return orjson.dumps({"id": job_id, "type": "sum", "payload": {"numbers": [1, 2, 3]}})


# ------------------------------------------------------------------ the process under test


@dataclass(frozen=True)
class OtherCode:
    """Another checkout's worker: the directory to put on PYTHONPATH and the module to run."""

    path: Path
    module: str

    @classmethod
    def of(cls, tree: Path, scratch: Path) -> OtherCode:
        """The code of checkout `tree`; `scratch` is a directory it may keep a link in."""
        src = tree / "src"
        if (src / "__main__.py").exists():
            # One `python_worker` package, installed from src/ under that name: a link makes
            # it importable by that name from this checkout's interpreter.
            path = scratch / "import-path"
            path.mkdir(exist_ok=True)
            (path / "python_worker").symlink_to(src, target_is_directory=True)
            return cls(path, "python_worker")
        return cls(src, "bootstrap")  # before: top-level packages under src/


def worker_command(kind: str, other: OtherCode | None = None) -> list[str]:
    """`python-worker run`, the reference worker, or (`baseline`) another checkout's worker
    (its code on PYTHONPATH, see UnderTest), all with this interpreter's venv."""
    if kind == "reference":
        return [sys.executable, "-m", "bench.reference_worker"]
    if kind == "baseline":
        assert other is not None
        return [sys.executable, "-P", "-m", other.module, "run"]
    script = Path(sys.executable).with_name("python-worker")
    if script.exists():
        return [str(script), "run"]
    return [sys.executable, "-P", "-m", "python_worker", "run"]


def _tree(pid: int) -> list[int]:
    """`pid` and its live descendants (the worker's processes under WORKER_PROCESSES)."""
    pids = [pid]
    for parent in pids:
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            continue
        pids.extend(int(child) for child in children)
    return pids


def cpu_seconds(pid: int) -> float:
    """utime + stime so far of a process, its live descendants and its reaped children."""
    total = 0
    for member in _tree(pid):
        try:
            stat = Path(f"/proc/{member}/stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        # After the command name: utime, stime, cutime, cstime are fields 14-17 of stat(5).
        total += sum(int(value) for value in fields[11:15])
    return total / _CLOCK_TICKS


def peak_rss_mb(pid: int) -> float:
    """Largest VmHWM (peak resident set) among the process and its descendants, in MiB."""
    peak = 0.0
    for member in _tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peak = max(peak, int(line.split()[1]) / 1024)
    return peak


class UnderTest:
    """One worker process (ours, the reference, or a baseline) with the benchmark's environment.

    `baseline` is another checkout's code (kind `baseline`): the same environment, but only
    that code importable and a working directory outside both trees.
    """

    def __init__(
        self,
        kind: str,
        broker: AnyBroker,
        api: StandInProcess,
        work_dir: Path,
        capacity: int,
        baseline: OtherCode | None = None,
    ) -> None:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("WORKER_", "RABBITMQ_", "STATUS_", "ORCHESTRATOR_"))
        }
        env.update(
            **broker_env(broker),
            STATUS_UPDATE_URL=api.status_url,
            ORCHESTRATOR_URL=api.url,
            WORKER_CAPACITY=str(capacity),
            # Set by `bench.run --processes`; the reference worker ignores it.
            WORKER_PROCESSES=os.environ.get("BENCH_WORKER_PROCESSES", "1"),
            WORKER_ID=f"bench-{kind}",
            HEARTBEAT_INTERVAL="5",
            METRICS_LOG_INTERVAL="3600",
            SHUTDOWN_GRACE_SECONDS="20",
            STATUS_OUTBOX_DIR=str(work_dir / f"outbox-{kind}"),
            # Logging is not what is measured: no line per job.
            LOG_LEVEL="WARNING",
        )
        # `bench.run --worker-env NAME=VALUE`: settings of the worker under test to try out.
        env.update(orjson.loads(os.environ.get("BENCH_WORKER_ENV", "{}")))
        # The reference worker is `bench.reference_worker`: the repo root must be importable.
        root = Path(__file__).resolve().parents[1]
        env["PYTHONPATH"] = str(root)
        cwd = root
        if kind == "baseline":
            if baseline is None:
                raise ValueError("kind 'baseline' needs the baseline's code")
            env["PYTHONPATH"] = str(baseline.path)
            # `-m` puts the working directory first on sys.path: keep this repo off it.
            cwd = work_dir / "cwd-baseline"
            cwd.mkdir(exist_ok=True)
        self.log_path = work_dir / f"{kind}.log"
        with self.log_path.open("ab") as log:
            self.started_at = time.time()
            self._process = subprocess.Popen(
                worker_command(kind, baseline),
                env=env,
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        return self._process.pid

    def alive(self) -> bool:
        return self._process.poll() is None

    def stop(self, timeout: float = 60) -> int | None:
        """SIGTERM and wait; SIGKILL if it will not go. Returns the exit status."""
        if self.alive():
            self._process.send_signal(signal.SIGTERM)
            try:
                return self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
        return self._process.returncode

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


# ------------------------------------------------------------------ broker helpers


def broker_env(broker: AnyBroker) -> dict[str, str]:
    """The variables that point the worker at `broker`."""
    if isinstance(broker, RedisServer):
        return {"WORKER_BROKER": "redis", "REDIS_URL": broker.url}
    return {"RABBITMQ_HOST": broker.host, "RABBITMQ_PORT": str(broker.port)}


def reset_job_queues(broker: AnyBroker) -> None:
    """Declare the project's topology as the worker would, and empty its queues."""
    if isinstance(broker, RedisServer):
        client = broker.client()
        try:
            client.delete(*_ALL_QUEUES)
        finally:
            client.close()
        broker.create_topology()
        return
    # The worker's own settings class, so queue arguments match what the worker will declare.
    settings = load_settings(rabbitmq_host=broker.host, rabbitmq_port=broker.port)
    config = settings.broker_config(settings.max_delivery_attempts)
    with broker.connect() as connection:
        declare_topology(connection, config)
        channel = connection.channel()
        for queue in _ALL_QUEUES:
            channel.queue_purge(queue)


def publish_jobs(broker: AnyBroker, queue: str, ids: Sequence[str]) -> float:
    """Pre-publish `sum` jobs to a job queue; returns seconds taken."""
    if isinstance(broker, RedisServer):
        return redis_publish_fast(broker, queue, (sum_job(i) for i in ids))
    return publish_fast(broker, EXCHANGE, queue, (sum_job(i) for i in ids), len(ids))


def queue_leftovers(broker: AnyBroker) -> dict[str, list[int]]:
    """Queues holding anything: name -> [ready, unacked]. Unacked is exact on a RabbitMQNode.

    On Redis: per job stream [not yet delivered, pending]; job.dead-letter [entries, 0].
    """
    list_queues = getattr(broker, "list_queues", None)
    if isinstance(broker, RedisServer):
        rows = {name: list(counts) for name, counts in broker.stream_counts().items()}
        rows[DEAD_LETTER_QUEUE] = [len(broker.dead_letters()), 0]
    elif list_queues is not None:
        counts = list_queues()
        rows = {name: [c.messages_ready, c.messages_unacknowledged] for name, c in counts.items()}
    else:
        rows = {}
        for name in _ALL_QUEUES:
            found = broker.queue_counts(name)
            if found is not None:
                rows[name] = [found.messages_ready, found.messages_unacknowledged]
    return {name: row for name, row in rows.items() if name in _ALL_QUEUES and any(row)}


def wait_settled(broker: AnyBroker, timeout: float) -> dict[str, list[int]]:
    """Wait until no project queue holds ready or unacked messages; returns what is left."""
    deadline = time.monotonic() + timeout
    while True:
        left = queue_leftovers(broker)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


# ------------------------------------------------------------------ measurements


@dataclass
class _Progress:
    cpu_start: float | None = None
    timed_out: bool = False


def _wait_for_statuses(
    api: StandInProcess, proc: UnderTest, expected: int, timeout: float, progress: _Progress
) -> None:
    # The CPU baseline is read when the first status arrives: the work has started, the
    # process's start-up (imports, connecting) is behind it. Polled every 10 ms.
    deadline = time.monotonic() + timeout
    while True:
        count = api.status_count()
        if progress.cpu_start is None and count > 0:
            progress.cpu_start = cpu_seconds(proc.pid)
        if count >= expected:
            return
        if not proc.alive():
            raise RuntimeError(f"process under test exited early:\n{proc.log_tail()}")
        if time.monotonic() > deadline:
            progress.timed_out = True
            return
        time.sleep(0.01)


def check_guarantees(
    arrivals: Sequence[Arrival], job_ids: Sequence[str], leftovers: dict[str, list[int]]
) -> dict[str, Any]:
    """Every job exactly one final status, `running` before it, and nothing left in the queues."""
    finals = Counter(a.job_id for a in arrivals if a.status in _FINAL)
    wanted = set(job_ids)
    missing = sum(1 for job_id in wanted if finals[job_id] == 0)
    duplicated = sum(1 for job_id in wanted if finals[job_id] > 1)
    unexpected = sum(1 for job_id in finals if job_id not in wanted)
    failed = sum(1 for a in arrivals if a.status == "failed")
    seen_running: set[str] = set()
    out_of_order = 0
    for arrival in arrivals:
        if arrival.status == "running":
            seen_running.add(arrival.job_id)
        elif arrival.status in _FINAL and arrival.job_id not in seen_running:
            out_of_order += 1
    ok = not (missing or duplicated or unexpected or failed or out_of_order or leftovers)
    return {
        "guarantees_ok": ok,
        "missing_final": missing,
        "duplicate_final": duplicated,
        "unexpected_final": unexpected,
        "failed_jobs": failed,
        "final_before_running": out_of_order,
        "queue_leftovers": leftovers,
    }


def run_throughput(
    kind: str,
    broker: AnyBroker,
    api: StandInProcess,
    work_dir: Path,
    jobs: int,
    capacity: int,
    round_no: int,
    *,
    timeout: float | None = None,
    baseline: OtherCode | None = None,
) -> dict[str, Any]:
    """Pre-publish `jobs` sum jobs to job.low, run one process until all are final, measure.

    `timeout` (seconds until every final status; default from `jobs`) must allow for a slow
    stand-in; `baseline` as in UnderTest.
    """
    reset_job_queues(broker)
    api.clear()
    ids = [f"r{round_no}-{kind}-{n:06d}" for n in range(jobs)]
    publish_seconds = publish_jobs(broker, "job.low", ids)

    proc = UnderTest(kind, broker, api, work_dir, capacity, baseline)
    progress = _Progress()
    if timeout is None:
        timeout = max(60.0, jobs / 50)
    try:
        _wait_for_statuses(api, proc, 2 * jobs, timeout, progress)
        cpu_end = cpu_seconds(proc.pid)
        rss = peak_rss_mb(proc.pid)
    finally:
        exit_status, leftovers, arrivals = _stop_and_collect(proc, broker, api)
    result: dict[str, Any] = {
        "jobs": jobs,
        "capacity": capacity,
        "publish_s": publish_seconds,
        "exit_status": exit_status,
        "timed_out": progress.timed_out,
        "peak_rss_mb": rss,
    }
    result.update(check_guarantees(arrivals, ids, leftovers))
    finals = [a.at for a in arrivals if a.status in _FINAL]
    if not arrivals or not finals:
        return result | {"guarantees_ok": False, "jobs_per_s": 0.0}
    first, last = arrivals[0].at, max(finals)
    cpu_start = progress.cpu_start if progress.cpu_start is not None else 0.0
    result.update(
        seconds=last - first,
        jobs_per_s=jobs / (last - first),
        jobs_per_s_incl_startup=jobs / (last - proc.started_at),
        startup_s=first - proc.started_at,
        cpu_ms_per_job=(cpu_end - cpu_start) * 1000 / jobs,
        cpu_cores_used=(cpu_end - cpu_start) / (last - first),
    )
    return result


def _percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def run_priority(
    broker: AnyBroker,
    api: StandInProcess,
    work_dir: Path,
    low_jobs: int,
    high_jobs: int,
    capacity: int,
    round_no: int,
    *,
    kind: str = "worker",
    baseline: OtherCode | None = None,
) -> dict[str, Any]:
    """A burst of high jobs into a worker busy with a low backlog: inversions and latency.

    `kind` and `baseline` as in UnderTest: the baseline runs the same scenario."""
    reset_job_queues(broker)
    api.clear()
    low_ids = [f"r{round_no}-low-{n:06d}" for n in range(low_jobs)]
    high_ids = [f"r{round_no}-high-{n:05d}" for n in range(high_jobs)]
    trickle_ids = [f"r{round_no}-single-{n:03d}" for n in range(TRICKLE_JOBS)]
    publish_jobs(broker, "job.low", low_ids)

    proc = UnderTest(kind, broker, api, work_dir, capacity, baseline)
    published: dict[str, float] = {}
    progress = _Progress()
    try:
        # "Getting going": a tenth of the low backlog is done, the worker is at full speed.
        _wait_for_statuses(api, proc, max(2, low_jobs // 5), 120, progress)
        with high_sender(broker) as send:

            def send_high(job_ids: Sequence[str]) -> None:
                published.update(send([(job_id, sum_job(job_id)) for job_id in job_ids]))

            send_high(high_ids)
            burst_published = time.time()
            # Then single high jobs, one at a time, while the low backlog is still there: how
            # long one urgent job waits behind it (the burst above measures its own queueing).
            _wait_until_started(api, set(high_ids), 120)
            for job_id in trickle_ids:
                send_high([job_id])
                time.sleep(TRICKLE_GAP_SECONDS)
        total = 2 * (low_jobs + high_jobs + len(trickle_ids))
        _wait_for_statuses(api, proc, total, max(60.0, total / 100), progress)
    finally:
        exit_status, leftovers, arrivals = _stop_and_collect(proc, broker, api)
    result: dict[str, Any] = {
        "low_jobs": low_jobs,
        "high_jobs": high_jobs,
        "single_high_jobs": len(trickle_ids),
        "capacity": capacity,
        "exit_status": exit_status,
        "timed_out": progress.timed_out,
    }
    result.update(check_guarantees(arrivals, low_ids + high_ids + trickle_ids, leftovers))
    high = set(high_ids) | set(trickle_ids)
    running = [a for a in arrivals if a.status == "running"]
    high_running = {a.job_id: a for a in running if a.job_id in high}
    high_final = {a.job_id: a for a in arrivals if a.job_id in high and a.status in _FINAL}
    if len(high_running) < len(high):
        return result | {"guarantees_ok": False}
    first_published = min(published.values())
    burst_running = [high_running[i] for i in high_ids]
    first_published_stamp = _iso(first_published)
    last_burst_stamp = max(a.timestamp for a in burst_running)
    # Started = its `running` status: by arrival at the stand-in (primary), and by the
    # worker's own timestamp in that status (millisecond resolution) as a cross-check.
    last_burst_start = max(a.at for a in burst_running)
    inversions = sum(
        1 for a in running if a.job_id not in high and first_published < a.at < last_burst_start
    )
    inversions_by_stamp = sum(
        1
        for a in running
        if a.job_id not in high and first_published_stamp < a.timestamp < last_burst_stamp
    )
    inversions_while_waiting = _lows_started_while_a_high_waited(
        [_epoch(a.timestamp) for a in running if a.job_id not in high],
        [published[i] for i in high_ids],
        [_epoch(high_running[i].timestamp) for i in high_ids],
    )
    trickle_waits = [(_epoch(high_running[i].timestamp) - published[i]) * 1000 for i in trickle_ids]
    to_running = [(high_running[i].at - published[i]) * 1000 for i in high_ids]
    to_final = [(high_final[i].at - published[i]) * 1000 for i in high_ids if i in high_final]
    result.update(
        priority_inversions=inversions,
        priority_inversions_by_worker_timestamp=inversions_by_stamp,
        priority_inversions_while_high_waiting=inversions_while_waiting,
        high_burst_publish_ms=(burst_published - first_published) * 1000,
        high_latency_running_ms_p50=statistics.median(to_running),
        high_latency_running_ms_p95=_percentile(to_running, 0.95),
        high_latency_running_ms_max=max(to_running),
        high_latency_final_ms_p50=statistics.median(to_final) if to_final else None,
        high_latency_final_ms_p95=_percentile(to_final, 0.95),
        high_latency_final_ms_max=max(to_final) if to_final else None,
        single_high_start_ms_p50=statistics.median(trickle_waits) if trickle_waits else None,
        single_high_start_ms_p95=_percentile(trickle_waits, 0.95),
        single_high_start_ms_max=max(trickle_waits) if trickle_waits else None,
        low_done_before_burst=sum(
            1 for a in arrivals if a.status in _FINAL and a.at < first_published
        ),
    )
    return result


HighSender = Callable[[Sequence[tuple[str, bytes]]], dict[str, float]]
"""Puts (job id, body) pairs on job.high; returns when (`time.time()`) each one left."""


@contextlib.contextmanager
def high_sender(broker: AnyBroker) -> Iterator[HighSender]:
    """Sends to job.high as fast as the broker takes it: unconfirmed AMQP publishes, each
    stamped as it leaves, or on Redis one pipeline of XADDs (every reply read), all stamped
    when the pipeline leaves. One XADD at a time would wait a round trip and an fsync each, and
    a burst spread over that time lets low jobs start between high ones that are not yet sent."""
    if isinstance(broker, RedisServer):
        client = broker.client()

        def add(jobs: Sequence[tuple[str, bytes]]) -> dict[str, float]:
            pipe = client.pipeline(transaction=False)
            for _job_id, body in jobs:
                pipe.xadd("job.high", {BODY_FIELD: body})
            sent = dict.fromkeys((job_id for job_id, _body in jobs), time.time())
            pipe.execute()
            return sent

        try:
            yield add
        finally:
            client.close()
        return
    properties = pika.BasicProperties(delivery_mode=2, content_type="application/json")
    with broker.connect() as connection:
        channel = connection.channel()

        def publish(jobs: Sequence[tuple[str, bytes]]) -> dict[str, float]:
            sent = {}
            for job_id, body in jobs:
                sent[job_id] = time.time()
                channel.basic_publish(EXCHANGE, "job.high", body, properties=properties)
            return sent

        yield publish


def _lows_started_while_a_high_waited(
    low_starts: Sequence[float], high_published: Sequence[float], high_starts: Sequence[float]
) -> int:
    """Low jobs started while some high job was published and not started yet (worker clock).

    The burst's own count above also takes in lows started while no high job existed yet to be
    started — e.g. while a slow publisher was still sending the burst. This one counts only the
    starts that jumped a high job already waiting. Worker timestamps have millisecond
    resolution (truncated), so a start counts only if the wait is clear by a millisecond.
    """
    published = sorted(high_published)
    started = sorted(high_starts)
    count = 0
    for moment in low_starts:
        waiting = bisect.bisect_left(published, moment - 0.001) - bisect.bisect_right(
            started, moment + 0.001
        )
        count += waiting > 0
    return count


def _stop_and_collect(
    proc: UnderTest, broker: AnyBroker, api: StandInProcess
) -> tuple[int | None, dict[str, list[int]], list[Arrival]]:
    """Let the queues settle, stop the process, then take what is left and what arrived."""
    leftovers = wait_settled(broker, 30)
    exit_status = proc.stop()
    # After the process has gone, anything it left unacked is back to ready: check once more.
    leftovers = leftovers or wait_settled(broker, 0)
    return exit_status, leftovers, api.arrivals()


def _wait_until_started(api: StandInProcess, job_ids: set[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        started = {a.job_id for a in api.arrivals() if a.status == "running"}
        if job_ids <= started:
            return
        time.sleep(0.2)


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _iso(epoch: float) -> str:
    # Same shape as the worker's timestamps, so plain string comparison orders them.
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
