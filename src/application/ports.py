"""The ports the core depends on. Adapters implement them; the contract tests hold them to it."""

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any
from urllib.parse import quote

from python_worker.domain.jobs import JobStatus, Priority


class Settlement(Enum):
    """How a delivery ends at its source."""

    ACK = "ack"
    """Done: the broker forgets the message."""
    DEAD_LETTER = "dead-letter"
    """Rejected without requeue: the message moves to `job.dead-letter`."""
    REQUEUE = "requeue"
    """Handed back unstarted: another consumer (or this one, later) gets it again."""


@dataclass(frozen=True, eq=False)
class Delivery:
    """One message handed out by a `MessageSource`; settle it exactly once.

    `handle` is the adapter's own bookkeeping (a delivery tag and channel, a list index...);
    the core never looks inside it. `attempt` counts deliveries of this message, 1 on the first.
    """

    body: bytes
    priority: Priority
    handle: Any = None
    attempt: int = 1
    headers: Mapping[str, Any] = field(default_factory=dict)
    redelivered: bool = False
    received_at: float | None = None
    """`time.monotonic()` when the adapter got it from the broker, if it buffers deliveries."""

    @property
    def queue(self) -> str:
        return self.priority.queue

    @property
    def is_redelivery(self) -> bool:
        """The broker handed this message out before (to us or another worker)."""
        return self.redelivered or self.attempt > 1


class SourceUnavailable(Exception):
    """Raised when a message source cannot reach its broker right now (it keeps trying)."""


class MessageSource(abc.ABC):
    """Hands out deliveries, highest priority first; each is settled exactly once.

    Priority: `receive` never returns a delivery from a lower tier while one from a higher tier
    is waiting at this source. A delivery that is never settled is not lost: the broker gives it
    to someone again once this source is gone. `receive` and `settle` may be called from any
    thread; an adapter that needs a single I/O thread marshals the calls itself.
    """

    @abc.abstractmethod
    def receive(self, timeout: float) -> Delivery | None:
        """Next delivery to start, or None when nothing arrived within `timeout` seconds."""

    @abc.abstractmethod
    def settle(self, delivery: Delivery, outcome: Settlement, reason: str | None = None) -> None:
        """Acknowledge, or reject to the dead-letter queue (with `reason`), or hand back.

        Settling a delivery whose connection has since been lost is a no-op: the broker will
        redeliver it. Never raises for that.
        """

    @abc.abstractmethod
    def stop_receiving(self) -> None:
        """Take no more deliveries from the broker; hand back those received but not started.

        After this `receive` returns None at once; deliveries already handed out can still be
        settled until `close`.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Release the connection. Unsettled deliveries go back to the broker."""

    def status(self) -> "SourceStatus":
        """What the heartbeat and readiness checks show about the connection."""
        return SourceStatus(connected=True, consuming=True)


@dataclass(frozen=True)
class SourceStatus:
    """Connection state as the worker reports it."""

    connected: bool
    consuming: bool
    reconnects: int = 0


_KEY_SAFE = "".join(chr(code) for code in range(0x21, 0x7F) if chr(code) != "%")
"""What a job id keeps as-is in an idempotency key: printable ASCII but space and `%`."""


@dataclass(frozen=True)
class StatusUpdate:
    """One status change of one job, as posted to the status API."""

    job_id: str
    status: JobStatus
    worker_id: str
    timestamp: datetime
    worker_type: str = "python"
    job_type: str | None = None
    queue: str | None = None
    attempt: int = 1
    result: Mapping[str, Any] | None = None
    error_message: str | None = None
    progress: int | None = None
    duration_ms: float | None = None

    @property
    def idempotency_key(self) -> str:
        """`<jobId>:<status>:<attempt>`; the id percent-encoded (UTF-8) beyond printable ASCII.

        It travels in an HTTP header, which holds Latin-1 text without line breaks, while a job
        id may hold any character: encoded, every id gives a sendable key, and distinct ids
        distinct keys. An id of printable ASCII without `%` (the usual kind) stays as it is.
        """
        return f"{quote(self.job_id, safe=_KEY_SAFE)}:{self.status.value}:{self.attempt}"

    def to_json(self) -> dict[str, Any]:
        """The SPEC §6 body: camelCase, optional fields only where they apply."""
        body: dict[str, Any] = {
            "jobId": self.job_id,
            "status": self.status.value,
            "workerId": self.worker_id,
            "workerType": self.worker_type,
            "timestamp": _iso(self.timestamp),
            "attempt": self.attempt,
        }
        optional = {
            "jobType": self.job_type,
            "queue": self.queue,
            "result": self.result,
            "errorMessage": self.error_message,
            "progress": self.progress,
            "durationMs": self.duration_ms,
        }
        body.update({key: value for key, value in optional.items() if value is not None})
        return body

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> "StatusUpdate":
        """The update back from its `to_json()` body (as kept in local state)."""
        return cls(
            job_id=body["jobId"],
            status=JobStatus(body["status"]),
            worker_id=body["workerId"],
            worker_type=body.get("workerType", "python"),
            timestamp=datetime.fromisoformat(body["timestamp"]),
            job_type=body.get("jobType"),
            queue=body.get("queue"),
            attempt=body.get("attempt", 1),
            result=body.get("result"),
            error_message=body.get("errorMessage"),
            progress=body.get("progress"),
            duration_ms=body.get("durationMs"),
        )


OnHandled = Callable[[], None]


class StatusReporter(abc.ABC):
    """Carries job status updates to whoever tracks jobs; never loses one it has accepted.

    Per job, updates are delivered in the order they were reported. `report` returns quickly;
    `on_handled` (if given) is called exactly once, from any thread, when the update has been
    delivered, durably stored for later delivery, or refused for good by the receiver (a 4xx,
    logged) — after that the message it came from may be acknowledged.
    """

    @abc.abstractmethod
    def report(self, update: StatusUpdate, on_handled: OnHandled | None = None) -> None:
        """Accept `update` for delivery."""

    def pause_reason(self) -> str | None:
        """Why the worker must take no new jobs now (outbox full or unwritable), or None.

        Updates already reported are still carried; the worker resumes once this is None.
        """
        return None

    def backlog(self) -> int:
        """Updates accepted but not yet delivered (in memory or in the outbox)."""
        return 0

    def delivery_failures(self) -> int:
        """Delivery attempts that failed so far (each was retried or stored)."""
        return 0

    def flush(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for accepted updates to be handled; True if all were."""
        return True

    def close(self) -> None:  # noqa: B027 - optional hook, most reporters hold nothing
        """Release resources; updates not yet delivered stay in the durable outbox."""


class JobMemoryUnavailable(Exception):
    """Raised when the job memory cannot write what it must keep (a full or failing disk)."""


class JobMemory(abc.ABC):
    """What a worker remembers of recent jobs, across its own restarts where it can.

    Two things, both about messages the broker may deliver again: how often a job was started
    without reaching an outcome (a job that crashes the worker every time must not loop), and
    the final status of a finished job (a redelivery after the status but before the ack is
    re-reported, not run again). Bounded: only the most recent jobs are remembered.
    """

    @abc.abstractmethod
    def record_start(self, job_id: str) -> int:
        """Note that `job_id` starts now; returns its starts without an outcome, this one too.

        Raises `JobMemoryUnavailable` when the start cannot be kept: the job must not start.
        """

    @abc.abstractmethod
    def remember(self, update: StatusUpdate, then: Callable[[], None]) -> None:
        """Keep `update` (a final status) for its job, ending its count of starts; call `then`
        once it is kept (maybe later, from another thread). If it cannot be kept now, `then`
        is still called (the status itself is safe) and the update is kept once it can be."""

    def pause_reason(self) -> str | None:
        """Why the worker must take no new jobs now (the memory cannot write), or None."""
        return None

    @abc.abstractmethod
    def recall(self, job_id: str) -> StatusUpdate | None:
        """The final status kept for `job_id`, if it is still remembered."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Keep what is queued (calling its `then`), then release resources."""


@dataclass(frozen=True)
class Heartbeat:
    """The worker's liveness report (SPEC §7)."""

    worker_id: str
    worker_type: str
    status: str
    capacity: int
    current_load: int
    processed_count: int
    failed_count: int
    success_rate: float
    average_job_time_ms: float
    timestamp: datetime
    hostname: str
    version: str
    broker_connected: bool = True
    outbox_depth: int = 0
    accepting_jobs: bool = True
    problems: tuple[str, ...] = ()
    """What keeps the worker from its work (as `/readyz` lists it); empty when all is well."""

    def to_json(self) -> dict[str, Any]:
        return {
            "workerId": self.worker_id,
            "workerType": self.worker_type,
            "status": self.status,
            "capacity": self.capacity,
            "currentLoad": self.current_load,
            "processedCount": self.processed_count,
            "failedCount": self.failed_count,
            "successRate": self.success_rate,
            "averageJobTimeMs": self.average_job_time_ms,
            "timestamp": _iso(self.timestamp),
            "hostname": self.hostname,
            "version": self.version,
            "brokerConnected": self.broker_connected,
            "outboxDepth": self.outbox_depth,
            "acceptingJobs": self.accepting_jobs,
            "problems": list(self.problems),
        }


class HeartbeatFailed(Exception):
    """Raised when a heartbeat could not be delivered; the worker logs it and tries next tick."""


class HeartbeatSink(abc.ABC):
    """Receives the worker's heartbeats; a failure never blocks jobs."""

    @abc.abstractmethod
    def send(self, heartbeat: Heartbeat) -> None:
        """Deliver one heartbeat now or raise `HeartbeatFailed`; must return within seconds."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""


class JobObserver(abc.ABC):
    """Told of every job as it starts and ends (metrics); must be fast and must not raise."""

    @abc.abstractmethod
    def job_started(self, queue: str, waited_s: float) -> None:
        """A job thread took a delivery that had waited `waited_s` seconds at this worker."""

    @abc.abstractmethod
    def job_finished(self, job_type: str, outcome: str, duration_s: float, queue: str) -> None:
        """One job ended with `outcome` (completed, failed, dead-lettered)."""


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
