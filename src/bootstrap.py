"""Settings, the DI container and the `python-worker` CLI: the one module naming classes."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import random
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from importlib import metadata, resources
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn, TextIO
from urllib.parse import urlsplit

import orjson
from dependency_injector import containers, providers
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from python_worker.adapters.http.heartbeat_sink import HttpHeartbeatSink
from python_worker.adapters.http.status_reporter import HttpStatusReporter
from python_worker.adapters.memory import (
    InMemoryHeartbeatSink,
    InMemoryJobMemory,
    InMemorySource,
    InMemoryStatusReporter,
    JsonLinesStatusReporter,
)
from python_worker.adapters.rabbitmq.connection import BrokerConfig
from python_worker.adapters.rabbitmq.source import RabbitMQSource
from python_worker.adapters.sqlite_store import SqliteJobMemory
from python_worker.application.clock import SystemClock
from python_worker.application.job_types import JOB_TYPES, run_job
from python_worker.application.ports import JobObserver, MessageSource, StatusReporter
from python_worker.application.process_job import JobProcessor, JobRunner, WorkerIdentity
from python_worker.application.stats import WorkerStats
from python_worker.application.worker import Worker, WorkerConfig
from python_worker.domain.jobs import JobStatus, Priority

if TYPE_CHECKING:
    from python_worker.adapters.observability.prometheus import HealthServer, PrometheusMetrics

# The preflight check, the publisher, the supervisor and the JSON log formatter are imported
# inside the commands that use them: a worker process never does, and skips their memory.

log = logging.getLogger("python_worker")

EXIT_CONFIG_ERROR = 2
PREFETCH_SPARE = 10
"""Deliveries a consumer's default window holds beyond those running or awaiting a status."""


def _version() -> str:
    try:
        return metadata.version("python-worker")
    except metadata.PackageNotFoundError:
        return "0+unknown"


VERSION = _version()


# --------------------------------------------------------------------------- settings


def _generated_worker_id() -> str:
    return f"{socket.gethostname()}-{secrets.token_hex(3)}"


class Settings(BaseSettings):
    """Every setting, read from the environment and validated before anything connects.

    Each field's `examples[0]` is the good value shown when a bad one stops start-up.
    """

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", validate_default=True)

    rabbitmq_host: str = Field(
        "localhost",
        min_length=1,
        description="broker host; a comma-separated list means cluster nodes tried in turn",
        examples=["rabbit1.internal,rabbit2.internal"],
    )
    rabbitmq_port: int = Field(5672, ge=1, le=65535, description="broker port", examples=[5672])
    rabbitmq_username: str = Field(
        "guest", min_length=1, description="broker user", examples=["worker"]
    )
    rabbitmq_password: SecretStr = Field(
        SecretStr("guest"), description="broker password (never logged)", examples=["s3cret"]
    )
    rabbitmq_vhost: str = Field("/", min_length=1, description="virtual host", examples=["/jobs"])
    rabbitmq_heartbeat: int = Field(
        30,
        ge=1,
        le=3600,
        description="AMQP heartbeat (s); a silent dead link is noticed within 2 x (this + 5) s",
        examples=[30],
    )
    rabbitmq_tls: bool = Field(False, description="connect with TLS (amqps)", examples=["true"])
    rabbitmq_ca_file: Path | None = Field(
        None,
        description="CA bundle to verify the broker's certificate (TLS)",
        examples=["/etc/ssl/rabbit-ca.pem"],
    )
    rabbitmq_tls_server_name: str | None = Field(
        None,
        description="name to verify in the broker's certificate, when it differs from the host",
        examples=["rabbit.internal"],
    )
    rabbitmq_prefetch: int | None = Field(
        None,
        ge=1,
        le=10_000,
        description=(
            "unacknowledged messages per queue consumer; default WORKER_CAPACITY + "
            "STATUS_MAX_IN_FLIGHT + 10 (see Priority)"
        ),
        examples=[120],
    )
    queue_type: Literal["classic", "quorum"] = Field(
        "classic",
        description="type of job queues this worker declares (quorum for new deployments)",
        examples=["quorum"],
    )
    max_delivery_attempts: int = Field(
        5,
        ge=1,
        le=100,
        description="starts of one job without an outcome before it is failed and dead-lettered",
        examples=[5],
    )
    job_memory_size: int = Field(
        100_000,
        ge=100,
        le=10_000_000,
        description="recent jobs remembered on disk (redeliveries, crash loops); see Guarantees",
        examples=[100000],
    )
    worker_test_handlers: bool = Field(
        False,
        description="for tests only: enable job types test.crash, test.sleep and test.escape",
        examples=["false"],
    )
    worker_broker: Literal["rabbitmq", "memory"] = Field(
        "rabbitmq",
        description="message source for `run`: RabbitMQ, or the embedded in-memory broker",
        examples=["rabbitmq"],
    )
    worker_id: str = Field(
        default_factory=_generated_worker_id,
        min_length=1,
        max_length=128,
        description="fixed identity; otherwise hostname + a short random suffix, once per process",
        examples=["vm1-worker"],
    )
    worker_type: str = Field(
        "python",
        min_length=1,
        max_length=64,
        description="label sent in heartbeats and statuses",
        examples=["python"],
    )
    worker_capacity: int = Field(
        10, ge=1, le=1000, description="most jobs in flight at once, per process", examples=[10]
    )
    worker_processes: Annotated[int, Field(ge=1, le=64)] | Literal["auto"] = Field(
        1,
        description="worker processes run side by side by `run` (`auto`: one per core)",
        examples=["auto"],
    )
    orchestrator_url: str = Field(
        "http://localhost:8081",
        description="base URL; heartbeats go to ${ORCHESTRATOR_URL}/api/workers/heartbeat",
        examples=["http://orchestrator.internal:8081"],
    )
    orchestrator_token: SecretStr | None = Field(
        None, description="bearer token for the orchestrator (never logged)", examples=["hb-token"]
    )
    status_update_url: str = Field(
        "http://localhost:8080/api/jobs/status",
        description="full URL for job status updates",
        examples=["http://api.internal:8080/api/jobs/status"],
    )
    status_max_in_flight: int = Field(
        450,
        ge=1,
        le=10_000,
        description=(
            "status requests in flight at once, each on its own connection to the status API; "
            "bounds jobs/s to STATUS_MAX_IN_FLIGHT / (2 x the API's latency)"
        ),
        examples=[450],
    )
    status_api_token: SecretStr | None = Field(
        None, description="bearer token for the status API (never logged)", examples=["api-token"]
    )
    heartbeat_interval: float = Field(
        10,
        gt=0,
        le=3600,
        description="seconds between heartbeats (fractions allowed)",
        examples=[10],
    )
    shutdown_grace_seconds: float = Field(
        30,
        ge=0,
        le=86400,
        description="how long running jobs may finish after SIGTERM",
        examples=[30],
    )
    status_outbox_dir: Path = Field(
        Path("status-outbox"),
        description="where undelivered status updates are kept durably",
        examples=["/var/lib/python-worker/outbox"],
    )
    job_memory_dir: Path | None = Field(
        None,
        description="where the memory of recent jobs is kept; default STATUS_OUTBOX_DIR",
        examples=["/var/lib/python-worker"],
    )
    status_outbox_max_items: int = Field(
        100_000,
        ge=100,
        description="outbox bound; when it is full the worker stops taking new jobs",
        examples=[100000],
    )
    metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="port for /metrics (Prometheus), /healthz and /readyz; off when unset",
        examples=[9100],
    )
    metrics_host: str = Field(
        "0.0.0.0",
        min_length=1,
        description="address the metrics and health endpoints listen on",
        examples=["127.0.0.1"],
    )
    metrics_log_interval: float = Field(
        60, gt=0, description="seconds between metrics log lines", examples=[60]
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="log line format", examples=["json"]
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="least severe level logged", examples=["INFO"]
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("rabbitmq_host")
    @classmethod
    def _some_host(cls, value: str) -> str:
        if not any(host.strip() for host in value.split(",")):
            raise ValueError("must name at least one host")
        return value

    @field_validator("orchestrator_url", "status_update_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value

    def broker_config(self) -> BrokerConfig:
        return BrokerConfig(
            hosts=[host.strip() for host in self.rabbitmq_host.split(",") if host.strip()],
            port=self.rabbitmq_port,
            username=self.rabbitmq_username,
            password=self.rabbitmq_password.get_secret_value(),
            vhost=self.rabbitmq_vhost,
            heartbeat=self.rabbitmq_heartbeat,
            tls=self.rabbitmq_tls,
            ca_file=self.rabbitmq_ca_file,
            tls_server_name=self.rabbitmq_tls_server_name,
            queue_type=self.queue_type,
            max_delivery_attempts=self.max_delivery_attempts,
        )

    @property
    def prefetch(self) -> int:
        # A job holds its slot in the window until its final status is delivered: besides the
        # running ones, up to STATUS_MAX_IN_FLIGHT may be waiting on the API, and a few more
        # keep the next job at hand (README: Priority).
        return self.rabbitmq_prefetch or (
            self.worker_capacity + self.status_max_in_flight + PREFETCH_SPARE
        )

    @property
    def heartbeat_url(self) -> str:
        return self.orchestrator_url.rstrip("/") + "/api/workers/heartbeat"


class ConfigurationError(Exception):
    """Raised when a setting is bad; the message is the one line shown to the operator."""


def load_settings(**overrides: Any) -> Settings:
    """Read the environment; a bad value becomes one `ConfigurationError` line."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigurationError(_describe_setting_error(exc)) from None


def _describe_setting_error(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    field = str(error["loc"][0]) if error["loc"] else "?"
    name = field.upper()
    info = Settings.model_fields.get(field)
    secret = info is not None and "SecretStr" in repr(info.annotation)
    value = "" if secret else f"={error['input']!r}"
    problem = error["msg"]
    if problem.startswith("Value error, "):
        problem = problem.removeprefix("Value error, ")
    example = ""
    if info is not None and info.examples:
        example = f" (example: {name}={info.examples[0]})"
    return f"configuration error: {name}{value}: {problem[:1].lower()}{problem[1:]}{example}"


# --------------------------------------------------------------------------- logging


class _TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S%z")


def configure_logging(settings: Settings, stream: TextIO | None = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    if settings.log_format == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(
            JsonFormatter(
                "{asctime}{levelname}{name}{message}",
                style="{",
                rename_fields={"levelname": "level", "name": "logger", "asctime": "time"},
                json_default=str,
            )
        )
    else:
        handler.setFormatter(_TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    if settings.log_level != "DEBUG":
        # pika logs every connection step, and each failure again with a traceback; our
        # adapter reports each one once, with the context an operator needs (which node,
        # which queue, what happens next).
        logging.getLogger("pika").setLevel(logging.CRITICAL)


# --------------------------------------------------------------------------- container


TEST_JOB_TYPES = frozenset({"test.crash", "test.sleep", "test.escape"})


class EscapingJobError(BaseException):
    """Raised by the test job type `test.escape`: a fault no handler error stands for."""


def _job_runner(test_handlers: bool) -> JobRunner | None:
    """The built-in handlers, plus two test-only job types when the setting asks for them."""
    if not test_handlers:
        return None

    def run(job_type: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        if job_type == "test.crash":
            # Stands in for a job that takes the process down (a segfault in a C extension...).
            os._exit(70)
        if job_type == "test.sleep":
            seconds = min(float(payload.get("seconds", 1)), 60.0)
            time.sleep(seconds)
            return {"slept": seconds}
        if job_type == "test.escape":
            # Stands in for a fault outside the handlers' own errors (a bug in the worker, a
            # library raising what it should not): it escapes the processing of the delivery.
            raise EscapingJobError("test.escape escapes the job's processing on purpose")
        return run_job(job_type, payload, rng_factory=random.Random)

    return run


def _job_types(test_handlers: bool) -> frozenset[str]:
    return JOB_TYPES | TEST_JOB_TYPES if test_handlers else JOB_TYPES


def _prometheus_metrics() -> PrometheusMetrics:
    from python_worker.adapters.observability.prometheus import PrometheusMetrics

    return PrometheusMetrics()


def _observers(
    metrics_port: int | None, metrics: Callable[[], PrometheusMetrics]
) -> list[JobObserver]:
    """The job observers: Prometheus metrics, only when METRICS_PORT lets someone read them.

    Without a port nobody could scrape them, so the worker does not pay for them: 1.4 MiB of
    resident memory for prometheus_client, and two histogram updates per job.
    """
    return [metrics()] if metrics_port is not None else []


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


class Container(containers.DeclarativeContainer):
    """Names every concrete part once; `settings` picks among adapters."""

    settings = providers.Dependency(instance_of=Settings)
    reporter_kind = providers.Object("http")
    heartbeat_kind = providers.Object("http")

    clock = providers.Singleton(SystemClock)
    stats = providers.Singleton(WorkerStats)
    identity = providers.Singleton(
        WorkerIdentity,
        worker_id=settings.provided.worker_id,
        worker_type=settings.provided.worker_type,
    )

    message_source = providers.Selector(
        settings.provided.worker_broker,
        memory=providers.Singleton(InMemorySource),
        rabbitmq=providers.Singleton(
            RabbitMQSource,
            config=providers.Callable(lambda settings: settings.broker_config(), settings),
            prefetch=settings.provided.prefetch,
        ),
    )
    status_reporter = providers.Selector(
        reporter_kind,
        memory=providers.Singleton(InMemoryStatusReporter),
        stdout=providers.Singleton(
            JsonLinesStatusReporter, stream=providers.Callable(lambda: sys.stdout)
        ),
        http=providers.Singleton(
            HttpStatusReporter,
            url=settings.provided.status_update_url,
            outbox_dir=settings.provided.status_outbox_dir,
            token=providers.Callable(_secret, settings.provided.status_api_token),
            max_in_flight=settings.provided.status_max_in_flight,
            outbox_max_items=settings.provided.status_outbox_max_items,
        ),
    )
    heartbeat_sink = providers.Selector(
        heartbeat_kind,
        memory=providers.Singleton(InMemoryHeartbeatSink),
        http=providers.Singleton(
            HttpHeartbeatSink,
            orchestrator_url=settings.provided.orchestrator_url,
            token=providers.Callable(_secret, settings.provided.orchestrator_token),
        ),
    )

    job_memory = providers.Selector(
        settings.provided.worker_broker,
        memory=providers.Singleton(InMemoryJobMemory, capacity=settings.provided.job_memory_size),
        rabbitmq=providers.Singleton(
            SqliteJobMemory,
            directory=providers.Callable(
                lambda settings: settings.job_memory_dir or settings.status_outbox_dir, settings
            ),
            capacity=settings.provided.job_memory_size,
        ),
    )
    metrics = providers.Singleton(_prometheus_metrics)
    processor = providers.Singleton(
        JobProcessor,
        source=message_source,
        reporter=status_reporter,
        identity=identity,
        clock=clock,
        stats=stats,
        observers=providers.Callable(_observers, settings.provided.metrics_port, metrics.provider),
        memory=job_memory,
        max_attempts=settings.provided.max_delivery_attempts,
        runner=providers.Callable(_job_runner, settings.provided.worker_test_handlers),
        job_types=providers.Callable(_job_types, settings.provided.worker_test_handlers),
    )
    worker_config = providers.Singleton(
        WorkerConfig,
        capacity=settings.provided.worker_capacity,
        heartbeat_interval=settings.provided.heartbeat_interval,
        shutdown_grace=settings.provided.shutdown_grace_seconds,
        metrics_log_interval=settings.provided.metrics_log_interval,
        hostname=providers.Callable(socket.gethostname),
        version=VERSION,
    )
    worker = providers.Singleton(
        Worker,
        source=message_source,
        reporter=status_reporter,
        heartbeats=heartbeat_sink,
        processor=processor,
        stats=stats,
        identity=identity,
        config=worker_config,
        clock=clock,
        memory=job_memory,
    )


def build_container(
    settings: Settings, *, reporter: str = "http", heartbeats: str = "http"
) -> Container:
    container = Container(settings=settings)
    container.reporter_kind.override(reporter)
    container.heartbeat_kind.override(heartbeats)
    return container


# --------------------------------------------------------------------------- commands


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    processes = args.processes or settings.worker_processes
    count = (os.cpu_count() or 1) if processes == "auto" else int(processes)
    if count > 1:
        from python_worker.adapters.supervisor import Supervisor, child_command

        return Supervisor(count, child_command(), lambda index: _child_env(settings, index)).run()
    _cap_malloc_arenas()
    container = build_container(settings)
    worker = container.worker()
    _install_signal_handlers(worker)
    health = _start_health_server(container, settings)
    try:
        worker.run()
    finally:
        if health is not None:
            health.close()
    return 0


MALLOC_ARENAS = 2
M_ARENA_MAX = -8
"""glibc's mallopt parameter for the most malloc arenas (malloc.h)."""


def _cap_malloc_arenas() -> None:
    """Two malloc arenas for the worker's threads, unless MALLOC_ARENA_MAX says otherwise.

    glibc gives each thread that allocates an arena of its own, up to eight per core; the
    worker's job threads, its I/O thread and its event loop then hold freed memory in as many
    places. Two cost nothing measurable in jobs/s and keep 5-6 MiB less resident under load
    (bench/: 66.2 -> 60.4 MiB peak at 5,000 jobs). Done here rather than in each unit file or
    image, so every way of starting the worker gets it; before any thread starts.
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    try:
        import ctypes

        ctypes.CDLL(None).mallopt(M_ARENA_MAX, MALLOC_ARENAS)
    except (OSError, AttributeError):  # not glibc: nothing to cap
        pass


def _child_env(settings: Settings, index: int) -> dict[str, str]:
    """One process of several: its own id, outbox and metrics port; the job memory is shared."""
    root = settings.status_outbox_dir
    env = {
        "WORKER_PROCESSES": "1",
        "WORKER_ID": f"{settings.worker_id}-p{index}",
        # Process 0 keeps the plain directory, so going from one process to several (or back)
        # still replays an outbox left there.
        "STATUS_OUTBOX_DIR": str(root if index == 0 else root / f"p{index}"),
        "JOB_MEMORY_DIR": str(settings.job_memory_dir or root),
    }
    if settings.metrics_port is not None:
        env["METRICS_PORT"] = str(settings.metrics_port + index)
    return env


def _start_health_server(container: Container, settings: Settings) -> HealthServer | None:
    if settings.metrics_port is None:
        return None
    from python_worker.adapters.observability.prometheus import HealthServer

    metrics: PrometheusMetrics = container.metrics()
    source: MessageSource = container.message_source()
    reporter: StatusReporter = container.status_reporter()
    stats: WorkerStats = container.stats()
    metrics.gauge("worker_jobs_in_flight", "Jobs running now.", lambda: stats.snapshot().in_flight)
    metrics.gauge(
        "worker_capacity", "Most jobs this worker runs at once.", lambda: settings.worker_capacity
    )
    metrics.gauge(
        "worker_status_outbox_depth",
        "Status updates accepted but not yet delivered (in memory or in the outbox).",
        reporter.backlog,
    )
    metrics.gauge(
        "worker_status_delivery_failures",
        "Status deliveries that failed (each retried or stored in the outbox).",
        reporter.delivery_failures,
    )
    metrics.gauge(
        "worker_broker_reconnects",
        "Times the broker connection was lost and re-established.",
        lambda: source.status().reconnects,
    )
    metrics.gauge(
        "worker_broker_connected",
        "1 while connected to the broker.",
        lambda: source.status().connected,
    )

    worker: Worker = container.worker()
    try:
        server = HealthServer(
            settings.metrics_host, settings.metrics_port, metrics, worker.readiness
        )
    except OSError as exc:
        raise ConfigurationError(
            f"configuration error: METRICS_PORT={settings.metrics_port}: cannot listen "
            f"({exc.strerror}) (example: METRICS_PORT=9100)"
        ) from None
    server.start()
    return server


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


def _read_lines(path: str) -> Iterator[str]:
    if path == "-":
        yield from sys.stdin
        return
    with open(path, encoding="utf-8", errors="surrogateescape") as handle:
        yield from handle


def _encode_line(line: str) -> bytes:
    # surrogateescape keeps bytes that are not UTF-8 as they were, so they reach the decoder
    # (and get dead-lettered) just as they would coming from the broker.
    return line.strip().encode("utf-8", errors="surrogateescape")


def cmd_process(settings: Settings, args: argparse.Namespace) -> int:
    memory_settings = settings.model_copy(update={"worker_broker": "memory"})
    container = build_container(memory_settings, reporter="stdout", heartbeats="memory")
    source: InMemorySource = container.message_source()
    worker: Worker = container.worker()
    lines_by_body: dict[bytes, list[int]] = {}
    feeding_done = threading.Event()
    backlog_bound = settings.worker_capacity * 4
    failures: list[BaseException] = []

    def feed() -> None:
        try:
            for number, line in enumerate(_read_lines(args.file), start=1):
                body = _encode_line(line)
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
        print(f"python-worker process: cannot read {args.file}: {failures[0]}", file=sys.stderr)
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


def _demo_jobs(path: str | None) -> list[tuple[Priority, bytes]]:
    if path:
        text = Path(path).read_text(encoding="utf-8")
    else:
        text = (
            resources.files("python_worker.adapters.memory")
            .joinpath("demo_jobs.jsonl")
            .read_text("utf-8")
        )
    jobs = []
    for line in text.splitlines():
        if not line.strip():
            continue
        priority = Priority(orjson.loads(line).get("priority", "medium"))
        jobs.append((priority, line.encode()))
    return jobs


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    if "LOG_LEVEL" not in {name.upper() for name in os.environ}:
        # The table below is the show; per-job log lines would bury it.
        logging.getLogger().setLevel(logging.WARNING)
    memory_settings = settings.model_copy(
        update={"worker_broker": "memory", "heartbeat_interval": 0.5, "metrics_log_interval": 3600}
    )
    container = build_container(memory_settings, reporter="memory", heartbeats="memory")
    source: InMemorySource = container.message_source()
    reporter: InMemoryStatusReporter = container.status_reporter()
    worker: Worker = container.worker()
    jobs = _demo_jobs(args.jobs)
    for priority in (Priority.LOW, Priority.MEDIUM, Priority.HIGH):
        for job_priority, body in jobs:
            if job_priority is priority:
                source.publish(priority, body)
    out = sys.stdout
    out.write(
        f"python-worker {VERSION} demo: {len(jobs)} jobs published to the embedded broker "
        f"(low first, high last); capacity {memory_settings.worker_capacity}\n\n"
    )
    worker.run(until=source.is_drained)
    finals = {update.job_id: update for update in reporter.final_updates()}
    out.write(f"{'#':>3}  {'queue':<10} {'job':<24} {'status':<10} result\n")
    for order, (queue, body) in enumerate(source.started, start=1):
        job_id = str(orjson.loads(body).get("id", "?"))
        final = finals.get(job_id)
        status = final.status.value if final else "?"
        detail = _demo_detail(final)
        out.write(f"{order:>3}  {queue:<10} {job_id:<24} {status:<10} {detail}\n")
    snapshot = worker.stats.snapshot()
    started_queues = [queue for queue, _ in source.started]
    out.write(
        f"\nstart order by queue: {_runs(started_queues)}\n"
        f"metrics: processed={snapshot.processed} failed={snapshot.failed} "
        f"success_rate={snapshot.success_rate:.0%} "
        f"avg_job_time={snapshot.average_job_time_ms:.2f}ms "
        f"dead_lettered={len(source.dead_lettered)}\n"
    )
    return 0


def _demo_detail(update: Any) -> str:
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


def _publish_messages(args: argparse.Namespace) -> Iterator[tuple[Priority, bytes]]:
    default = Priority(args.queue) if args.queue else Priority.MEDIUM
    if args.file is None:
        job: dict[str, Any] = {"id": args.id or f"job-{secrets.token_hex(6)}", "type": args.type}
        job["payload"] = orjson.loads(args.payload) if args.payload else {}
        yield default, orjson.dumps(job)
        return
    for line in _read_lines(args.file):
        body = _encode_line(line)
        if not body:
            continue
        priority = default
        if args.queue is None:
            # A line may carry its own tier (as the demo jobs do); the worker ignores the field.
            # A line that is not a job is published as it is: the worker dead-letters it.
            with contextlib.suppress(orjson.JSONDecodeError, AttributeError, ValueError):
                priority = Priority(orjson.loads(body).get("priority", "medium"))
        yield priority, body


def cmd_publish(settings: Settings, args: argparse.Namespace) -> int:
    if args.file is None and not args.type:
        print(
            "python-worker publish: give --type (one job) or a FILE of JSON lines", file=sys.stderr
        )
        return EXIT_CONFIG_ERROR
    from python_worker.adapters.rabbitmq.publisher import PublishFailed, RabbitMQPublisher

    try:
        report = RabbitMQPublisher(settings.broker_config()).publish(_publish_messages(args))
    except PublishFailed as exc:
        print(f"python-worker publish: {exc}", file=sys.stderr)
        return 1
    except orjson.JSONDecodeError as exc:
        print(f"python-worker publish: --payload is not JSON: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    for failure in report.failures:
        print(f"not confirmed: {failure}", file=sys.stderr)
    print(f"published {report.confirmed} job(s), confirmed by the broker")
    return 0 if not report.failures else 1


def cmd_check(settings: Settings, args: argparse.Namespace) -> int:
    """Preflight: every broker node, topology and permissions, both APIs, the outbox."""
    from python_worker.adapters.preflight import Outcome, PreflightTarget, preflight_checks

    print("ok   settings valid", flush=True)
    target = PreflightTarget(
        broker=settings.broker_config(),
        status_url=settings.status_update_url,
        heartbeat_url=settings.heartbeat_url,
        outbox_dir=settings.status_outbox_dir,
        status_token=_secret(settings.status_api_token),
        orchestrator_token=_secret(settings.orchestrator_token),
        outbox_max_items=settings.status_outbox_max_items,
    )
    problems = 0
    for result in preflight_checks(target):
        print(result.line(), flush=True)
        problems += result.failed or (args.strict and result.outcome is Outcome.WARN)
    print(f"preflight: {problems} problem(s)" if problems else "preflight: all checks passed")
    return 1 if problems else 0


# --------------------------------------------------------------------------- entry point


def _processes(text: str) -> int | str:
    if text == "auto":
        return text
    if text.isdigit() and 1 <= int(text) <= 64:
        return int(text)
    raise argparse.ArgumentTypeError("expected a number from 1 to 64, or 'auto'")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python-worker",
        description="RabbitMQ job worker: priority queues, built-in handlers, durable statuses.",
    )
    parser.add_argument("--version", action="version", version=f"python-worker {VERSION}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="run the worker (RabbitMQ by default; see WORKER_BROKER)")
    run.add_argument(
        "--processes",
        metavar="N",
        type=_processes,
        help="worker processes side by side, or 'auto' for one per core (WORKER_PROCESSES)",
    )
    process = commands.add_parser(
        "process",
        help="run JSON-lines jobs from FILE (- for stdin) in memory; status updates to stdout",
    )
    process.add_argument("file", metavar="FILE", help="JSON-lines file of jobs, or - for stdin")
    demo = commands.add_parser("demo", help="a short end-to-end show on the embedded broker")
    demo.add_argument("--jobs", metavar="FILE", help="JSON-lines jobs with a 'priority' field")
    publish = commands.add_parser(
        "publish", help="send jobs to RabbitMQ (persistent, with publisher confirms)"
    )
    publish.add_argument("file", metavar="FILE", nargs="?", help="JSON-lines jobs, or - for stdin")
    publish.add_argument("--queue", choices=[p.value for p in Priority], help="tier for every job")
    publish.add_argument("--type", help="one job of this type (instead of FILE)")
    publish.add_argument("--id", help="id of that job (default: random)")
    publish.add_argument("--payload", help="payload of that job, as JSON")
    check = commands.add_parser(
        "check", help="preflight: settings, broker nodes, permissions, APIs, outbox (exit 1 if not)"
    )
    check.add_argument("--strict", action="store_true", help="count warnings as failures")
    return parser


COMMANDS = {
    "run": cmd_run,
    "process": cmd_process,
    "demo": cmd_demo,
    "publish": cmd_publish,
    "check": cmd_check,
}


class _ExitOnClosedPipe:
    """stdout for the commands that print: a reader that went away ends the command at once.

    `python-worker check | head -1` closes the pipe after one line. Like any Unix tool, the
    command then ends as if SIGPIPE killed it (status 141 in the shell), without a traceback.
    SIGPIPE itself stays ignored, as Python sets it, in commands that talk to a broker or an
    API, so that a socket closed by its peer is an error the adapters handle; `process` and
    `demo` use no sockets and take SIGPIPE's default at start instead (`main`), which ends
    them from whichever thread wrote.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            _die_of_sigpipe()

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            _die_of_sigpipe()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _die_of_sigpipe() -> NoReturn:
    with contextlib.suppress(OSError):
        sys.stderr.flush()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGPIPE)
    os._exit(128 + signal.SIGPIPE)  # off the main thread, or if the signal did not end us


SOCKETLESS_COMMANDS = frozenset({"process", "demo"})
"""Commands on the in-memory adapters only: SIGPIPE may end them (see _ExitOnClosedPipe)."""


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in SOCKETLESS_COMMANDS:
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    if not isinstance(sys.stdout, _ExitOnClosedPipe):
        sys.stdout = _ExitOnClosedPipe(sys.stdout)
    try:
        settings = load_settings()
        configure_logging(settings)
        return COMMANDS[args.command](settings, args)
    except ConfigurationError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG_ERROR


if __name__ == "__main__":
    sys.exit(main())
