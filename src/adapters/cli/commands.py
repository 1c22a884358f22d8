"""The commands' own work, each given the parts it drives by the composition root."""

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from types import FrameType
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import orjson

from python_worker.adapters.cli.job_lines import (
    BadJobs,
    JobLine,
    checked_jobs,
    encode_line,
    job_file_lines,
    one_job,
    parse_jobs,
    read_lines,
)
from python_worker.adapters.memory import demo
from python_worker.adapters.memory.source import InMemorySource
from python_worker.adapters.memory.status_reporter import InMemoryStatusReporter
from python_worker.application.ports import (
    CheckResult,
    JobPublisher,
    Outcome,
    Preflight,
    PublishFailed,
    PublishReport,
)
from python_worker.application.worker import Worker
from python_worker.domain.jobs import Priority

log = logging.getLogger(__name__)

EXIT_USAGE = 2
SUPERVISED = "PYTHON_WORKER_SUPERVISED"
"""Set by the supervisor in each child's environment: it already logged the start-up banner."""
PUBLISH = "python-worker publish"


class Closable(Protocol):
    def close(self) -> None: ...


@dataclass(frozen=True)
class Banner:
    """What `run` says first: which release, where it takes jobs from, where it reports."""

    version: str
    broker: str
    worker_id: str
    capacity: int
    processes: int
    status_url: str
    orchestrator_url: str

    def log(self) -> None:
        log.info(
            "python-worker %s starting: %s; queues %s; worker %s, capacity %d per process, "
            "%d process(es); statuses to %s; heartbeats to %s",
            self.version,
            self.broker,
            ", ".join(priority.queue for priority in Priority.by_rank()),
            self.worker_id,
            self.capacity,
            self.processes,
            without_password(self.status_url),
            without_password(self.orchestrator_url),
        )


def without_password(url: str) -> str:
    """`url` with the password of its user info, if any, left out."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}@{host}"))


def run_worker(worker: Worker, serve_health: Callable[[], Closable | None]) -> int:
    """`run`, one process: work until a signal, then drain."""
    _install_signal_handlers(worker)
    health = serve_health()
    try:
        worker.run()
    finally:
        if health is not None:
            health.close()
    return 0


def _install_signal_handlers(worker: Worker) -> None:
    received: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        if len(received) == 1:
            log.info(
                "%s received: draining (send it again to stop at once)", signal.Signals(signum).name
            )
            worker.stop()
        else:
            # Unacknowledged messages go back to the broker when the connection drops.
            os._exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def process_file(path: str, source: InMemorySource, worker: Worker, backlog_bound: int) -> int:
    """`process FILE`: every line through the use case on the embedded broker, in order."""
    lines_by_body: dict[bytes, list[int]] = {}
    feeding_done = threading.Event()
    failures: list[BaseException] = []

    def feed() -> None:
        try:
            for number, line in enumerate(read_lines(path), start=1):
                body = encode_line(line)
                if not body:
                    continue
                lines_by_body.setdefault(body, []).append(number)
                # Backpressure: a file of millions of lines never sits in memory at once.
                while source.pending() >= backlog_bound:
                    threading.Event().wait(0.005)
                source.publish(Priority.MEDIUM, body)
        except (OSError, UnicodeDecodeError) as exc:
            failures.append(exc)
        finally:
            feeding_done.set()

    feeder = threading.Thread(target=feed, name="feeder", daemon=True)
    feeder.start()
    worker.run(until=lambda: feeding_done.is_set() and source.is_drained())
    if failures:
        print(f"python-worker process: cannot read {path}: {failures[0]}", file=sys.stderr)
        return 1
    for dead in source.dead_lettered:
        numbers = lines_by_body.get(dead.body, [])
        where = "line " + ",".join(map(str, numbers)) if numbers else "a line"
        print(f"dead-lettered {where}: {dead.reason}", file=sys.stderr)
    snapshot = worker.stats.snapshot()
    print(
        f"handled {snapshot.processed} job(s): {snapshot.processed - snapshot.failed} completed, "
        f"{snapshot.failed} failed ({len(source.dead_lettered)} dead-lettered)",
        file=sys.stderr,
    )
    return 0


def run_demo(
    jobs_path: str | None,
    source: InMemorySource,
    reporter: InMemoryStatusReporter,
    worker: Worker,
    capacity: int,
    version: str,
) -> int:
    """`demo`: the sample jobs (or `jobs_path`'s) on the embedded broker, and what happened."""
    if "LOG_LEVEL" not in {name.upper() for name in os.environ}:
        # The table below is the show; per-job log lines would bury it.
        logging.getLogger().setLevel(logging.WARNING)
    try:
        lines = job_file_lines(jobs_path) if jobs_path else demo.bundled_jobs()
        jobs = [(job.priority, job.body) for job in parse_jobs(lines, jobs_path or "demo jobs")]
    except BadJobs as exc:
        print(f"python-worker demo: {exc}", file=sys.stderr)
        return EXIT_USAGE
    demo.publish_low_first(source, jobs)
    sys.stdout.write(
        f"python-worker {version} demo: {len(jobs)} jobs published to the embedded broker "
        f"(low first, high last); capacity {capacity}\n\n"
    )
    worker.run(until=source.is_drained)
    demo.render(sys.stdout, source, reporter, worker.stats.snapshot())
    return 0


def publish(
    publisher: JobPublisher,
    file: str | None,
    queue: str | None,
    job_type: str | None,
    job_id: str | None,
    payload: str | None,
) -> int:
    """`publish`: one job from flags, or every line of FILE. Prints the id of each job the
    broker confirmed (generated ones too) as it comes, and the count at the end.

    Every line is checked before anything is sent: bad JSON or an unknown `priority` is one
    line and exit 2, whether or not the broker is up."""
    tier = Priority(queue) if queue else None
    try:
        with contextlib.ExitStack() as stack:
            if file is not None:
                jobs = stack.enter_context(checked_jobs(file, queue=tier, give_ids=True))
            elif job_type:
                one = one_job(job_type, job_id, payload)
                jobs = iter([replace(one, priority=tier or one.priority)])
            else:
                print(f"{PUBLISH}: give --type (one job) or a FILE of JSON lines", file=sys.stderr)
                return EXIT_USAGE
            report = _publish_reporting_ids(publisher, jobs)
    except BadJobs as exc:
        print(f"{PUBLISH}: {exc}; nothing published", file=sys.stderr)
        return EXIT_USAGE
    except PublishFailed as exc:
        print(f"{PUBLISH}: {exc}", file=sys.stderr)
        return 1
    for failure in report.failures:
        print(f"not confirmed: {failure}", file=sys.stderr)
    print(f"published {report.confirmed} job(s), confirmed by the broker", file=sys.stderr)
    return 0 if not report.failures else 1


def _publish_reporting_ids(publisher: JobPublisher, jobs: Iterator[JobLine]) -> PublishReport:
    """Publish, printing each confirmed job's id at once. Only the jobs sent and not yet
    confirmed are held (one on RabbitMQ, a pipeline's batch on Redis): any file size works."""
    unconfirmed: dict[int, str] = {}

    def sent() -> Iterator[tuple[Priority, bytes]]:
        for position, job in enumerate(jobs):
            unconfirmed[position] = _printable(job.job_id)
            yield job.priority, job.body

    def confirmed(position: int) -> None:
        # Sent before this one and still unconfirmed: the broker refused them.
        for earlier in [key for key in unconfirmed if key < position]:
            print(f"not confirmed: {unconfirmed.pop(earlier)}", file=sys.stderr)
        print(unconfirmed.pop(position))

    report = publisher.publish(sent(), on_confirmed=confirmed)
    for job_id in unconfirmed.values():
        print(f"not confirmed: {job_id}", file=sys.stderr)
    return report


def _printable(job_id: str | None) -> str:
    if job_id is None:
        return "(no id)"
    return (
        job_id
        if job_id.isprintable() and job_id.strip() == job_id
        else orjson.dumps(job_id).decode()
    )


def check(preflights: Iterable[Preflight], secrets: Iterable[str | None], strict: bool) -> int:
    """`check`: every preflight's results, one line each; exit 1 if any failed."""
    print("ok   settings valid", flush=True)
    hidden = [secret for secret in secrets if secret]
    problems = 0
    for preflight in preflights:
        for result in preflight.checks():
            print(_redacted(result, hidden).line(), flush=True)
            problems += result.failed or (strict and result.outcome is Outcome.WARN)
    print(f"preflight: {problems} problem(s)" if problems else "preflight: all checks passed")
    return 1 if problems else 0


def _redacted(result: CheckResult, secrets: list[str]) -> CheckResult:
    """Last line of defence: no secret reaches a printed line, whatever an error message held."""
    what, fix = result.what, result.fix
    for secret in secrets:
        if len(secret) < 4:
            continue  # "***" for every "a" in the text would hide more than it protects
        what, fix = what.replace(secret, "***"), fix.replace(secret, "***")
    return replace(result, what=what, fix=fix)
