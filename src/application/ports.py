"""The ports the core depends on. Adapters implement them; the contract tests hold them to it."""

import abc
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

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

    `handle` is the adapter's own bookkeeping (a delivery tag and channel, the message's
    headers, a list index...); the core never looks inside it. `attempt` counts deliveries of
    this message, 1 on the first.
    """

    body: bytes
    priority: Priority
    handle: Any = None
    attempt: int = 1
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
    waiting: int = 0
    """Deliveries this source holds for the worker that no job thread has taken yet."""


@dataclass(frozen=True)
class StatusUpdate:
    """One status change of one job (contract §6); adapters/wire.py writes it as JSON."""

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
    """The worker's liveness report (contract §7); adapters/wire.py writes it as JSON."""

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


class Clock(abc.ABC):
    """Wall time for timestamps, monotonic time for durations; tests pass one they can move."""

    @abc.abstractmethod
    def now(self) -> datetime:
        """Now, timezone-aware, in UTC."""

    @abc.abstractmethod
    def monotonic(self) -> float:
        """Seconds from an arbitrary start that never goes back."""


@dataclass
class PublishReport:
    """What happened to each message of a `JobPublisher.publish`: confirmed, or why not."""

    confirmed: int = 0
    failures: list[str] = field(default_factory=list)


class PublishFailed(Exception):
    """Raised when the broker cannot be reached to publish at all."""


class JobPublisher(abc.ABC):
    """Puts job messages on the priority queues; a message counts once the broker confirmed it.

    What `publish` and `dead-letters requeue` drive; each broker adapter implements it.
    """

    @abc.abstractmethod
    def publish(self, messages: Iterable[tuple[Priority, bytes]]) -> PublishReport:
        """Send each (tier, body), as a persistent message; raises `PublishFailed` when the
        broker cannot be reached at all, and reports a message it refused as a failure."""


class Outcome(Enum):
    """How one preflight check went; only FAIL makes `python-worker check` exit non-zero."""

    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"
    SKIP = "skip"


@dataclass(frozen=True)
class CheckResult:
    """One preflight check: what was checked and how it went, and for a problem, how to fix it."""

    outcome: Outcome
    what: str
    fix: str = ""

    @property
    def failed(self) -> bool:
        return self.outcome is Outcome.FAIL

    def line(self) -> str:
        """`ok   broker node rabbit1:5672 (vhost /) reachable` or `FAIL … — fix: …`."""
        text = f"{self.outcome.value:<4} {self.what}"
        return f"{text} — fix: {self.fix}" if self.fix else text


class Preflight(abc.ABC):
    """Proves, before a start, that one thing the worker needs is there and usable.

    Every check is harmless: it takes no job, creates none and changes nothing that matters.
    Results name no secret.
    """

    @abc.abstractmethod
    def checks(self) -> Iterator[CheckResult]:
        """Each check, yielded as soon as it is done (a slow one shows where it waits)."""


class Broker(abc.ABC):
    """One message broker: the source the worker consumes, the publisher, the preflight.

    A broker is one adapter folder implementing this; the composition root picks one by
    `WORKER_BROKER` (the README's "Adding a broker" lists what a new one touches).
    """

    @abc.abstractmethod
    def source(self) -> MessageSource:
        """The message source `run` consumes (made once, on first use)."""

    @abc.abstractmethod
    def publisher(self) -> JobPublisher:
        """A publisher for `publish`."""

    @abc.abstractmethod
    def preflight(self) -> Preflight:
        """The broker's checks for `check`: every node, the topology, the permissions."""
