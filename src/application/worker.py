"""The worker: job threads up to capacity, heartbeats, a metrics line, and a clean stop."""

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from python_worker.application.ports import (
    Clock,
    Heartbeat,
    HeartbeatFailed,
    HeartbeatSink,
    JobMemory,
    MessageSource,
    Settlement,
    StatusReporter,
)
from python_worker.application.process_job import JobProcessor, WorkerIdentity
from python_worker.application.stats import WorkerStats

log = logging.getLogger(__name__)

RECEIVE_POLL_SECONDS = 0.25
"""How long a job thread waits for a delivery before it looks at the stop flag again."""

PAUSE_POLL_SECONDS = 0.5
"""How often a paused job thread looks again whether it may take jobs."""


@dataclass(frozen=True)
class WorkerConfig:
    """The knobs of one worker process."""

    capacity: int
    heartbeat_interval: float
    shutdown_grace: float
    metrics_log_interval: float
    hostname: str
    version: str


class Worker:
    """Runs up to `capacity` jobs at once until stopped, then drains.

    Each of the `capacity` job threads takes the next delivery straight from the source — the
    source hands out the highest priority first, so a free thread always starts the most urgent
    job waiting, and no dispatcher thread sits between broker and handler.
    """

    def __init__(
        self,
        source: MessageSource,
        reporter: StatusReporter,
        heartbeats: HeartbeatSink,
        processor: JobProcessor,
        stats: WorkerStats,
        identity: WorkerIdentity,
        config: WorkerConfig,
        clock: Clock,
        memory: JobMemory,
    ) -> None:
        self._source = source
        self._reporter = reporter
        self._heartbeats = heartbeats
        self._memory = memory
        self._processor = processor
        self._stats = stats
        self._identity = identity
        self._config = config
        self._clock = clock
        self._stop = threading.Event()
        self._draining = False
        self._pause_lock = threading.Lock()
        self._paused_for: str | None = None
        self._heartbeat_failing = False

    @property
    def stats(self) -> WorkerStats:
        return self._stats

    def stop(self) -> None:
        """Ask the worker to stop taking jobs and drain; safe from a signal handler."""
        self._stop.set()

    def run(self, until: Callable[[], bool] | None = None) -> None:
        """Work until `stop()` is called (or `until()` turns true), then drain and return."""
        log.info(
            "worker %s starting: capacity=%d heartbeat every %ss",
            self._identity.worker_id,
            self._config.capacity,
            self._config.heartbeat_interval,
        )
        threads = [
            threading.Thread(target=self._job_loop, name=f"job-{n}", daemon=True)
            for n in range(self._config.capacity)
        ]
        ticker = threading.Thread(target=self._tick_loop, name="heartbeat", daemon=True)
        for thread in [*threads, ticker]:
            thread.start()
        try:
            while not self._stop.wait(0.05 if until else 1.0):
                if until is not None and until():
                    break
        finally:
            self._stop.set()
            self._drain(threads, ticker)

    def heartbeat(self) -> Heartbeat:
        """The heartbeat this worker would send now."""
        snapshot = self._stats.snapshot()
        status = "busy" if snapshot.in_flight else "idle"
        if self._draining:
            status = "draining"
        return Heartbeat(
            worker_id=self._identity.worker_id,
            worker_type=self._identity.worker_type,
            status=status,
            capacity=self._config.capacity,
            current_load=snapshot.in_flight,
            processed_count=snapshot.processed,
            failed_count=snapshot.failed,
            success_rate=snapshot.success_rate,
            average_job_time_ms=snapshot.average_job_time_ms,
            timestamp=self._clock.now(),
            hostname=self._config.hostname,
            version=self._config.version,
            broker_connected=self._source.status().connected,
            outbox_depth=self._reporter.backlog(),
            accepting_jobs=self.pause_reason() is None,
            problems=tuple(self.readiness()),
        )

    def pause_reason(self) -> str | None:
        """Why no new job may start now (its status or its memory could not be kept), or None."""
        return self._reporter.pause_reason() or self._memory.pause_reason()

    def readiness(self) -> list[str]:
        """What keeps this worker from doing its work now; empty when it is ready."""
        problems = []
        status = self._source.status()
        if not status.connected:
            problems.append("not connected to the broker")
        elif not status.consuming:
            problems.append("not consuming")
        for reason in (self._reporter.pause_reason(), self._memory.pause_reason()):
            if reason is not None:
                problems.append(reason)
        return problems

    def _job_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._take_one_job()
            except BaseException:
                # `process` settles its own delivery whatever happens; this is for the source,
                # the reporter or the stats failing between jobs. The thread carries on, so the
                # worker keeps its capacity; the pause keeps a lasting fault from spinning.
                log.exception(
                    "job thread %s hit an error between jobs", threading.current_thread().name
                )
                self._stop.wait(PAUSE_POLL_SECONDS)

    def _take_one_job(self) -> None:
        # Give the GIL away before choosing the next job, so the broker's thread can hand over
        # what has arrived: with every job thread busy, a new high-priority delivery otherwise
        # waits behind all of them, first to be read off the socket, then to be picked up.
        # bench/ priority scenario, one process at full speed: one high job published behind a
        # 20,000-job low backlog started after p95 37 ms without this, 8 ms with it, and low
        # jobs started while a high one waited went from 89 to 0; it costs a quarter of the
        # top rate at 0 ms (5,600 -> 3,700 jobs/s, still twice 7b39d27's).
        time.sleep(0)
        reason = self.pause_reason()
        if reason is not None:
            self._pause(reason)
            return
        if self._paused_for is not None:
            self._resume()
        delivery = self._source.receive(RECEIVE_POLL_SECONDS)
        if delivery is None:
            return
        if self._stop.is_set():
            # Stop came while this thread was waiting: the job has not started, hand it back.
            self._source.settle(delivery, Settlement.REQUEUE)
            return
        self._stats.started()
        try:
            completed = self._processor.process(delivery)
        finally:
            self._stats.finished()
        if not completed:
            # Something escaped and the delivery went back: if that keeps happening (a
            # reporter that cannot write at all), don't hand the same job back in a hot loop.
            self._stop.wait(PAUSE_POLL_SECONDS)

    def _pause(self, reason: str) -> None:
        with self._pause_lock:
            first = self._paused_for is None
            self._paused_for = reason
        if first:
            log.warning("not taking new jobs: %s", reason)
        self._stop.wait(PAUSE_POLL_SECONDS)

    def _resume(self) -> None:
        with self._pause_lock:
            # Another thread may have paused since this one looked: only a fresh look resumes.
            if self.pause_reason() is not None:
                return
            reason, self._paused_for = self._paused_for, None
        if reason is not None:
            log.info("taking jobs again (was paused: %s)", reason)

    def _tick_loop(self) -> None:
        interval = self._config.heartbeat_interval
        next_metrics = self._clock.monotonic() + self._config.metrics_log_interval
        self._send_heartbeat()
        while not self._stop.wait(interval):
            self._send_heartbeat()
            if self._clock.monotonic() >= next_metrics:
                next_metrics += self._config.metrics_log_interval
                self._log_metrics()

    def _send_heartbeat(self) -> None:
        try:
            self._heartbeats.send(self.heartbeat())
        except HeartbeatFailed as exc:
            # Once per outage: a dead orchestrator should not flood the log every tick.
            if not self._heartbeat_failing:
                log.warning("heartbeat failed (will keep trying every tick): %s", exc)
            self._heartbeat_failing = True
        except Exception:  # the heartbeat thread must outlive any sink bug
            log.exception("heartbeat sink crashed")
        else:
            if self._heartbeat_failing:
                log.info("heartbeats are getting through again")
            self._heartbeat_failing = False

    def _log_metrics(self) -> None:
        snapshot = self._stats.snapshot()
        log.info(
            "metrics load=%d/%d processed=%d failed=%d success_rate=%.1f%% avg_job_time=%.1fms "
            "outbox=%d",
            snapshot.in_flight,
            self._config.capacity,
            snapshot.processed,
            snapshot.failed,
            snapshot.success_rate * 100,
            snapshot.average_job_time_ms,
            self._reporter.backlog(),
            extra={
                "load": snapshot.in_flight,
                "capacity": self._config.capacity,
                "processed": snapshot.processed,
                "failed": snapshot.failed,
                "success_rate": snapshot.success_rate,
                "average_job_time_ms": snapshot.average_job_time_ms,
            },
        )

    def _drain(self, threads: list[threading.Thread], ticker: threading.Thread) -> None:
        self._draining = True
        log.info(
            "stopping: no new jobs; waiting up to %ss for running ones", self._config.shutdown_grace
        )
        self._source.stop_receiving()
        self._send_heartbeat()
        deadline = self._clock.monotonic() + self._config.shutdown_grace
        for thread in threads:
            thread.join(max(0.0, deadline - self._clock.monotonic()))
        unfinished = self._stats.snapshot().in_flight
        if unfinished:
            log.warning(
                "grace period over with %d job(s) still running; the broker will redeliver them",
                unfinished,
            )
        if not self._reporter.flush(max(1.0, deadline - self._clock.monotonic())):
            log.warning(
                "%d status update(s) not delivered yet; they stay in the outbox",
                self._reporter.backlog(),
            )
        self._processor.close()
        ticker.join(timeout=1.0)
        self._log_metrics()
        self._send_heartbeat()
        self._source.close()
        self._reporter.close()
        self._heartbeats.close()
        log.info("worker %s stopped", self._identity.worker_id)
