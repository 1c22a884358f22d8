"""The job-processing use case: one delivery in, its statuses reported, the delivery settled."""

import logging
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from python_worker.application.job_types import JOB_TYPES, job_table
from python_worker.application.messages import job_id_of, parse_job
from python_worker.application.ports import (
    Clock,
    Delivery,
    JobMemory,
    JobMemoryUnavailable,
    JobObserver,
    MessageSource,
    Settlement,
    StatusReporter,
    StatusUpdate,
)
from python_worker.application.stats import WorkerStats
from python_worker.domain.errors import InvalidMessage, JobError, UnknownJobType
from python_worker.domain.jobs import Job, JobStatus

log = logging.getLogger(__name__)

JobRunner = Callable[[str, Mapping[str, Any]], dict[str, Any]]


def broker_delivery_limit(max_attempts: int) -> int:
    """Deliveries of one message, as the broker counts them, after which it is given up.

    The worker counts starts in its job memory (`MAX_DELIVERY_ATTEMPTS`); the broker's count
    is the backstop, at twice that, for a job that crashes workers on several hosts in turn or
    whose host lost its memory. Broker adapters use it for their own last resort (a quorum
    queue's `x-delivery-limit` is one more).
    """
    return 2 * max_attempts


@dataclass(frozen=True)
class WorkerIdentity:
    """Who reports: sent with every status update and heartbeat."""

    worker_id: str
    worker_type: str = "python"


class JobProcessor:
    """Decode → report `running` → run the handler → report the outcome → settle.

    A message is settled only from the reporter's `on_handled` callback, i.e. once its final
    status is delivered or durably stored: a crash at any point before leaves the message
    unacknowledged, and the broker redelivers it (contract §4, at least once).
    A job that fails — bad envelope, unknown type, bad payload, handler error — is rejected
    without requeue, so it lands in `job.dead-letter` instead of looping.
    """

    def __init__(
        self,
        source: MessageSource,
        reporter: StatusReporter,
        identity: WorkerIdentity,
        clock: Clock,
        stats: WorkerStats,
        memory: JobMemory,
        runner: JobRunner | None = None,
        observers: Sequence[JobObserver] = (),
        max_attempts: int = 5,
        job_types: Collection[str] = JOB_TYPES,
    ) -> None:
        self._source = source
        self._reporter = reporter
        self._identity = identity
        self._clock = clock
        self._stats = stats
        self._run = runner or job_table(with_test_jobs=False)[1]
        self._observers = tuple(observers)
        self._memory = memory
        self._max_attempts = max_attempts
        self._job_types = job_types

    def process(self, delivery: Delivery) -> bool:
        """Handle one delivery completely; never raises. False when something escaped.

        Whatever escapes the steps below (a reporter that cannot write, a bug) hands the
        delivery back to the broker, unless its settlement is already on its way, and is
        logged with the job id: the broker redelivers it, and the job thread carries on.
        """
        settlement = _SettleOnce(self._source, delivery)
        try:
            self._process(delivery, settlement)
        except BaseException as exc:
            try:
                handed_back = settlement(Settlement.REQUEUE, None)
            except Exception:  # the source is broken too; the broker redelivers on reconnect
                handed_back = False
            log.error(
                "job %s from %s: %s escaped its processing; %s",
                job_id_of(delivery.body) or "(no readable id)",
                delivery.queue,
                type(exc).__name__,
                "handed it back to the broker" if handed_back else "its settlement was on its way",
                exc_info=exc,
                extra={"job_id": job_id_of(delivery.body), "queue": delivery.queue},
            )
            return False
        return True

    def _process(self, delivery: Delivery, settle: "_SettleOnce") -> None:
        started = self._clock.monotonic()
        if delivery.received_at is not None:
            for observer in self._observers:
                observer.job_started(delivery.queue, max(0.0, started - delivery.received_at))
        try:
            job = parse_job(delivery.body)
        except InvalidMessage as exc:
            self._reject_message(delivery, settle, exc, started)
            return
        if job.type not in self._job_types:
            error = str(UnknownJobType.naming(job.type, JOB_TYPES))
            self._reject_message(delivery, settle, InvalidMessage(error, job_id=job.id), started)
            return
        if delivery.is_redelivery and self._rereport(job, delivery, settle):
            return
        try:
            give_up = self._poison_verdict(job, delivery)
        except JobMemoryUnavailable as exc:
            # Its start could not be counted: running it could loop a crashing job forever.
            log.warning("job %s handed back unstarted: %s", job.id, exc, extra={"job_id": job.id})
            settle(Settlement.REQUEUE, None)
            return
        if give_up is not None:
            self._finish(job, delivery, settle, started, error=give_up)
            return
        self._report(job, delivery, JobStatus.RUNNING, progress=0)
        try:
            result = self._run(job.type, job.payload)
        except JobError as exc:
            self._finish(job, delivery, settle, started, error=str(exc))
        except Exception as exc:  # a handler bug must fail the job, not the worker
            log.exception("job %s (%s) crashed its handler", job.id, job.type)
            self._finish(
                job, delivery, settle, started, error=f"internal error: {type(exc).__name__}"
            )
        else:
            self._finish(job, delivery, settle, started, result=result)

    def close(self) -> None:
        """Finish keeping outcomes still queued, so their messages get settled."""
        self._memory.close()

    def _poison_verdict(self, job: Job, delivery: Delivery) -> str | None:
        """Why a job must not run again, if it keeps ending without an outcome.

        Counted where it is certain: starts recorded here (a prefetched message that never
        started does not count, so innocent neighbours of a crashing job survive). Only
        redeliveries are recorded — a first delivery is assumed to have started — so the happy
        path costs no write. The broker's delivery count is the backstop, at twice the limit,
        for a job that crashes workers on several hosts in turn or whose host lost its state.
        """
        if not delivery.is_redelivery:
            return None
        starts = self._memory.record_start(job.id) + 1
        limit = self._max_attempts
        if starts > limit:
            return (
                f"gave up after {starts - 1} starts without an outcome (the job may crash the "
                f"worker); the limit is MAX_DELIVERY_ATTEMPTS={limit}"
            )
        if delivery.attempt > broker_delivery_limit(limit):
            return (
                f"gave up after {delivery.attempt - 1} deliveries without an outcome (the job "
                f"may crash the workers); the limit is twice MAX_DELIVERY_ATTEMPTS={limit}"
            )
        return None

    def _rereport(self, job: Job, delivery: Delivery, settle: "_SettleOnce") -> bool:
        """A redelivered job that already finished here: report its stored outcome again."""
        previous = self._memory.recall(job.id)
        if previous is None:
            return False
        log.info(
            "job %s was redelivered after it had %s here; re-reporting that, not running it again",
            job.id,
            previous.status.value,
            extra={"job_id": job.id, "queue": delivery.queue, "attempt": delivery.attempt},
        )
        failed = previous.status is JobStatus.FAILED
        settlement = Settlement.DEAD_LETTER if failed else Settlement.ACK
        reason = previous.error_message
        self._reporter.report(previous, settle.later(settlement, reason))
        return True

    def _reject_message(
        self, delivery: Delivery, settle: "_SettleOnce", exc: InvalidMessage, started: float
    ) -> None:
        duration_ms = self._elapsed_ms(started)
        self._stats.record(failed=True, duration_ms=duration_ms)
        log.warning(
            "dead-lettering message from %s: %s",
            delivery.queue,
            exc.reason,
            extra={"job_id": exc.job_id, "queue": delivery.queue, "attempt": delivery.attempt},
        )
        for observer in self._observers:
            observer.job_finished("invalid", "dead-lettered", duration_ms / 1000, delivery.queue)
        if exc.job_id is None:
            settle(Settlement.DEAD_LETTER, exc.reason)
            return
        update = self._update(
            Job(id=exc.job_id, type=""), delivery, JobStatus.FAILED, error_message=exc.reason
        )
        self._reporter.report(update, settle.later(Settlement.DEAD_LETTER, exc.reason))

    def _finish(
        self,
        job: Job,
        delivery: Delivery,
        settle: "_SettleOnce",
        started: float,
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        duration_ms = self._elapsed_ms(started)
        failed = error is not None
        status = JobStatus.FAILED if failed else JobStatus.COMPLETED
        self._stats.record(failed=failed, duration_ms=duration_ms)
        log.log(
            logging.WARNING if failed else logging.INFO,
            "job %s type=%s queue=%s status=%s duration=%.1fms attempt=%d%s",
            job.id,
            job.type,
            delivery.queue,
            status.value,
            duration_ms,
            delivery.attempt,
            f" error={error!r}" if failed else "",
            extra={
                "job_id": job.id,
                "job_type": job.type,
                "queue": delivery.queue,
                "status": status.value,
                "duration_ms": round(duration_ms, 3),
                "attempt": delivery.attempt,
            },
        )
        # Only known types become a label: a client's typos must not grow the metric forever.
        job_type = job.type if job.type in JOB_TYPES else "unknown"
        for observer in self._observers:
            observer.job_finished(job_type, status.value, duration_ms / 1000, delivery.queue)
        settlement = Settlement.DEAD_LETTER if failed else Settlement.ACK
        update = self._update(
            job,
            delivery,
            status,
            result=result,
            error_message=error,
            progress=100,
            duration_ms=round(duration_ms, 3),
        )
        # Remembered before the ack: if we die in between, the redelivery is recognised.
        self._reporter.report(
            update, lambda: self._memory.remember(update, settle.later(settlement, error))
        )

    def _report(self, job: Job, delivery: Delivery, status: JobStatus, **fields: Any) -> None:
        self._reporter.report(self._update(job, delivery, status, **fields))

    def _update(
        self, job: Job, delivery: Delivery, status: JobStatus, **fields: Any
    ) -> StatusUpdate:
        return StatusUpdate(
            job_id=job.id,
            status=status,
            worker_id=self._identity.worker_id,
            worker_type=self._identity.worker_type,
            timestamp=self._clock.now(),
            job_type=job.type or None,
            queue=delivery.queue,
            attempt=delivery.job_attempt,
            **fields,
        )

    def _elapsed_ms(self, started: float) -> float:
        return (self._clock.monotonic() - started) * 1000


class _SettleOnce:
    """Settles one delivery at most once, whichever thread asks first."""

    __slots__ = ("_claim", "_delivery", "_source")

    def __init__(self, source: MessageSource, delivery: Delivery) -> None:
        self._source = source
        self._delivery = delivery
        self._claim = threading.Lock()  # acquired once, never released: a one-shot flag

    def __call__(self, outcome: Settlement, reason: str | None) -> bool:
        """Settle with `outcome`; False (and nothing sent) if it was settled already."""
        if not self._claim.acquire(blocking=False):
            return False
        self._source.settle(self._delivery, outcome, reason)
        return True

    def later(self, outcome: Settlement, reason: str | None) -> Callable[[], None]:
        """A callback that settles with `outcome` when it is called (once a status is safe)."""

        def settle() -> None:
            self(outcome, reason)

        return settle
