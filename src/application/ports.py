"""The ports the core depends on. Adapters implement them; the contract tests hold them to it."""

import abc
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
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
    this message, 1 on the first. `earlier_attempts` counts those of the same job before it
    was dead-lettered and put back (`dead-letters requeue`): a replay starts again at attempt
    1, but its statuses go on counting (`job_attempt`), so their idempotency keys are new.
    """

    body: bytes
    priority: Priority
    handle: Any = None
    attempt: int = 1
    redelivered: bool = False
    earlier_attempts: int = 0
    received_at: float | None = None
    """`time.monotonic()` when the adapter got it from the broker, if it buffers deliveries."""

    @property
    def queue(self) -> str:
        return self.priority.queue

    @property
    def job_attempt(self) -> int:
        """Which attempt at the job this is, counting those before a replay: what statuses say."""
        return self.earlier_attempts + self.attempt

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
    def publish(
        self,
        messages: Iterable[tuple[Priority, bytes]],
        on_confirmed: Callable[[int], None] | None = None,
    ) -> PublishReport:
        """Send each (tier, body), as a persistent message; raises `PublishFailed` when the
        broker cannot be reached at all, and reports a message it refused as a failure.

        `on_confirmed(i)` is called as soon as the broker confirmed the i-th message (from 0),
        so a caller can say which ones made it without holding them all."""


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


@dataclass(frozen=True)
class DeadLetteredMessage:
    """One message on the dead-letter queue, as an operator looks at it; copies of one body
    (at-least-once dead-lettering can leave two) are one message, counted in `times`.

    `key` is what `dead-letters show` and `requeue --id` take: the job id when the body names a
    printable one, else `handle`. `handle` is `sha256:` and the first 16 hex digits of the
    body's SHA-256: every message has one, and it stays the same from one listing to the next,
    where a position would not. `queue` is where a requeue puts it back (None: unknown);
    `headers` are plain values (text, numbers, lists, mappings), whatever the broker's types.
    """

    key: str
    handle: str
    job_id: str | None
    job_type: str | None
    queue: str | None
    reason: str
    dead_lettered_at: str | None
    """When, as recorded (ISO 8601, UTC); None when nothing recorded it."""
    worker_id: str | None
    times: int
    body: bytes
    headers: Mapping[str, Any] = field(default_factory=dict)

    def answers_to(self, key: str) -> bool:
        """Whether `key` names this message: its key, its handle or its job id."""
        return key in (self.key, self.handle, self.job_id)


@dataclass(frozen=True)
class DeadLetterSelection:
    """Which dead-lettered messages a requeue moves: those answering to one of `keys`, those
    whose reason contains `reason_contains` (ignoring case), or all of them."""

    keys: frozenset[str] = frozenset()
    reason_contains: str | None = None
    everything: bool = False

    def matches(self, message: DeadLetteredMessage) -> bool:
        if self.everything or any(message.answers_to(key) for key in self.keys):
            return True
        wanted = self.reason_contains
        return wanted is not None and wanted.casefold() in message.reason.casefold()


@dataclass
class RequeueReport:
    """What a requeue did: put back (each confirmed before it left the dead-letter queue),
    further copies of those dropped, left where they were, and why some could not move."""

    moved: int = 0
    merged: int = 0
    left: int = 0
    problems: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    """Keys of the selection that named no message."""


class DeadLettersUnavailable(Exception):
    """Raised when the dead-letter queue cannot be reached or read right now."""


class DeadLetters(abc.ABC):
    """The dead-letter queue: what the worker refused and why; read it, replay it, empty it.

    Reading loses nothing and reorders nothing: a message read and not removed is back in its
    place when the call returns, or when the process dies. Each call reads what was there when
    it began, oldest first; messages that arrive meanwhile wait behind them. Every method
    raises `DeadLettersUnavailable` when the broker cannot be reached.
    """

    @abc.abstractmethod
    def count(self) -> int:
        """Messages on the dead-letter queue now (copies counted one by one)."""

    @abc.abstractmethod
    def list(self, limit: int) -> Sequence[DeadLetteredMessage]:
        """The messages among the first `limit` on the queue, oldest first."""

    @abc.abstractmethod
    def find(self, key: str) -> Sequence[DeadLetteredMessage]:
        """Every message that answers to `key` (usually one; a job id may name several)."""

    @abc.abstractmethod
    def requeue(self, selection: DeadLetterSelection) -> RequeueReport:
        """Put each selected message back on the queue it came from, as a fresh first delivery.

        Each is published, and confirmed by the broker, before it leaves the dead-letter queue:
        a crash in between leaves it in both, never in neither. Copies of one body go back
        once. A message whose queue is unknown stays, named in `problems`.
        """

    @abc.abstractmethod
    def purge(self) -> int:
        """Delete every message on the dead-letter queue for good; returns how many."""


class Broker(abc.ABC):
    """One message broker: the source the worker consumes, the publisher, the preflight, the
    dead-letter queue.

    A broker is one adapter folder implementing this; the composition root picks one by
    `WORKER_BROKER` (the README's "Adding a broker" lists what a new one touches).
    """

    @abc.abstractmethod
    def describe(self) -> str:
        """Which broker, where, for the start-up banner: nodes and names, never a secret."""

    @abc.abstractmethod
    def source(self) -> MessageSource:
        """The message source `run` consumes (made once, on first use)."""

    @abc.abstractmethod
    def publisher(self) -> JobPublisher:
        """A publisher for `publish`."""

    @abc.abstractmethod
    def preflight(self) -> Preflight:
        """The broker's checks for `check`: every node, the topology, the permissions."""

    @abc.abstractmethod
    def dead_letters(self) -> DeadLetters:
        """The dead-letter queue, for `dead-letters`: list, show, requeue, purge."""
