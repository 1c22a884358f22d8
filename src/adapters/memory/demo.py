"""The `demo` command's show: the bundled jobs onto the embedded broker, then what happened."""

from collections.abc import Sequence
from importlib import resources
from typing import Any, TextIO

import orjson

from python_worker.adapters.memory.source import InMemorySource
from python_worker.adapters.memory.status_reporter import InMemoryStatusReporter
from python_worker.application.ports import StatusUpdate
from python_worker.application.stats import StatsSnapshot
from python_worker.domain.jobs import JobStatus, Priority


def bundled_jobs() -> list[str]:
    """The lines of the bundled sample jobs (every job type, all three priorities)."""
    bundled = resources.files("python_worker.adapters.memory").joinpath("demo_jobs.jsonl")
    return bundled.read_text("utf-8").splitlines()


def publish_low_first(source: InMemorySource, jobs: Sequence[tuple[Priority, bytes]]) -> None:
    """Every low job first, high last: the start order then shows the priority rule at work."""
    for priority in reversed(Priority.by_rank()):
        for job_priority, body in jobs:
            if job_priority is priority:
                source.publish(priority, body)


def render(
    out: TextIO,
    source: InMemorySource,
    reporter: InMemoryStatusReporter,
    snapshot: StatsSnapshot,
) -> None:
    """One line per job in the order they started, then the start order by queue and metrics."""
    finals = {update.job_id: update for update in reporter.final_updates()}
    out.write(f"{'#':>3}  {'queue':<10} {'job':<24} {'status':<10} result\n")
    for order, (queue, body) in enumerate(source.started, start=1):
        job_id = str(orjson.loads(body).get("id", "?"))
        final = finals.get(job_id)
        status = final.status.value if final else "?"
        out.write(f"{order:>3}  {queue:<10} {job_id:<24} {status:<10} {_detail(final)}\n")
    started_queues = [queue for queue, _ in source.started]
    out.write(
        f"\nstart order by queue: {_runs(started_queues)}\n"
        f"metrics: processed={snapshot.processed} failed={snapshot.failed} "
        f"success_rate={snapshot.success_rate:.0%} "
        f"avg_job_time={snapshot.average_job_time_ms:.2f}ms "
        f"dead_lettered={len(source.dead_lettered)}\n"
    )


def _detail(update: StatusUpdate | None) -> str:
    if update is None:
        return ""
    if update.status is JobStatus.FAILED:
        text = f"error: {update.error_message}"
    else:
        text = orjson.dumps(update.result).decode()
    return text if len(text) <= 90 else text[:87] + "..."


def _runs(items: Sequence[str]) -> str:
    runs: list[list[Any]] = []
    for item in items:
        if runs and runs[-1][0] == item:
            runs[-1][1] += 1
        else:
            runs.append([item, 1])
    return " -> ".join(f"{name} x{count}" for name, count in runs)
