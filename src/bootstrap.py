"""The composition root: settings, logging, the container that wires the adapters, `main()`."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import secrets
import socket
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import TYPE_CHECKING, Annotated, Any, Literal

from dependency_injector import containers, providers
from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from python_worker.adapters.cli import commands
from python_worker.adapters.cli.output import prepare_stdout
from python_worker.adapters.cli.parser import build_parser
from python_worker.adapters.http.heartbeat_sink import HttpHeartbeatSink
from python_worker.adapters.http.settings import HttpSettings
from python_worker.adapters.http.status_reporter import HttpStatusReporter
from python_worker.adapters.memory import (
    InMemoryHeartbeatSink,
    InMemoryJobMemory,
    InMemoryStatusReporter,
    JsonLinesStatusReporter,
)
from python_worker.adapters.memory.broker import InMemoryBroker
from python_worker.adapters.observability.logging import configure_logging
from python_worker.adapters.observability.settings import ObservabilitySettings
from python_worker.adapters.rabbitmq.broker import RabbitMQBroker
from python_worker.adapters.rabbitmq.settings import RabbitMQSettings
from python_worker.adapters.redis.settings import RedisSettings
from python_worker.adapters.sqlite.database import LocalStateUnavailable
from python_worker.adapters.sqlite.job_memory import SqliteJobMemory
from python_worker.adapters.sqlite.outbox import Outbox, OutboxInUse, OutboxUnavailable
from python_worker.adapters.sqlite.settings import SqliteSettings
from python_worker.adapters.system import settings_loading
from python_worker.adapters.system.clock import SystemClock
from python_worker.adapters.system.malloc import cap_malloc_arenas
from python_worker.adapters.system.settings_loading import (
    ConfigurationError,
    directory_error,
    directory_in_use,
)
from python_worker.application.job_types import job_table
from python_worker.application.ports import Broker, JobObserver
from python_worker.application.process_job import JobProcessor, WorkerIdentity
from python_worker.application.stats import WorkerStats
from python_worker.application.worker import Worker, WorkerConfig

if TYPE_CHECKING:
    from python_worker.adapters.observability.prometheus import HealthServer, PrometheusMetrics
    from python_worker.adapters.redis.broker import RedisBroker

# The supervisor, the metrics server, the JSON log formatter, the Redis broker and the
# dead-letters command are imported where they are used: a worker process that needs none of
# them skips their memory.

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


class Settings(
    RabbitMQSettings, RedisSettings, HttpSettings, SqliteSettings, ObservabilitySettings
):
    """Every setting, read from the environment and validated before anything connects.

    Each adapter defines its own settings (its folder's `settings.py`); these are the worker's
    own, and the bases bring the rest. A new broker's settings join the bases. Each field's
    `examples[0]` is the good value shown when a bad one stops start-up.
    """

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", validate_default=True)

    max_delivery_attempts: int = Field(
        5,
        ge=1,
        le=100,
        description="starts of one job without an outcome before it is failed and dead-lettered",
        examples=[5],
    )
    worker_test_handlers: bool = Field(
        False,
        description="for tests only: enable the job types in job_types.TEST_JOBS",
        examples=["false"],
    )
    worker_broker: Literal["rabbitmq", "redis", "memory"] = Field(
        "rabbitmq",
        description=(
            "message source for `run`: RabbitMQ, Redis Streams, or the embedded in-memory broker"
        ),
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
    metrics_log_interval: float = Field(
        60, gt=0, description="seconds between metrics log lines", examples=[60]
    )

    @property
    def prefetch(self) -> int:
        # A job holds its slot in the window until its final status is delivered: besides the
        # running ones, up to STATUS_MAX_IN_FLIGHT may be waiting on the API, and a few more
        # keep the next job at hand (README: Priority).
        return self.rabbitmq_prefetch or (
            self.worker_capacity + self.status_max_in_flight + PREFETCH_SPARE
        )

    def secrets(self) -> list[str | None]:
        """Values no printed line may show."""
        return [
            *self.broker_secrets(),
            *self.redis_secrets(),
            _secret(self.status_api_token),
            _secret(self.orchestrator_token),
        ]


def load_settings(**overrides: Any) -> Settings:
    """Read the environment; a bad value or an unknown name becomes one `ConfigurationError`
    line, and every secret may come from NAME_FILE (`settings_loading`)."""
    return settings_loading.load(Settings, overrides)


def setting_names() -> set[str]:
    """Every variable the worker reads: each setting, and NAME_FILE for each secret."""
    return settings_loading.setting_names(Settings)


def setting_prefixes() -> tuple[str, ...]:
    """The first words of the settings' names: another variable starting so is a typo."""
    return settings_loading.setting_prefixes(Settings)


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


# --------------------------------------------------------------------------- container


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


def _rabbitmq(settings: Settings) -> RabbitMQBroker:
    config = settings.broker_config(settings.max_delivery_attempts)
    return RabbitMQBroker(config, settings.prefetch, settings.worker_id)


def _redis(settings: Settings) -> RedisBroker:
    # Imported here, not above: the redis library is ~7 MiB of RSS a RabbitMQ worker never uses.
    from python_worker.adapters.redis.broker import RedisBroker

    prefetch = settings.redis_prefetch or (
        settings.worker_capacity + settings.status_max_in_flight + PREFETCH_SPARE
    )
    return RedisBroker(settings.redis_config(), prefetch, settings.worker_id)


class Container(containers.DeclarativeContainer):
    """Names every concrete part once. Each port has its own switch: `settings.worker_broker`
    picks the broker; `reporter_kind`, `heartbeat_kind` and `job_memory_kind` are set by the
    command (`build_container`), so choosing a broker never chooses anything else."""

    settings = providers.Dependency(instance_of=Settings)
    reporter_kind = providers.Object("http")
    heartbeat_kind = providers.Object("http")
    job_memory_kind = providers.Object("sqlite")

    clock = providers.Singleton(SystemClock)
    stats = providers.Singleton(WorkerStats)
    identity = providers.Singleton(
        WorkerIdentity,
        worker_id=settings.provided.worker_id,
        worker_type=settings.provided.worker_type,
    )

    broker: providers.Provider[Broker] = providers.Selector(
        settings.provided.worker_broker,
        rabbitmq=providers.Singleton(_rabbitmq, settings),
        redis=providers.Singleton(_redis, settings),
        memory=providers.Singleton(InMemoryBroker),
    )
    message_source = providers.Singleton(lambda broker: broker.source(), broker)
    publisher = providers.Factory(lambda broker: broker.publisher(), broker)
    dead_letters = providers.Factory(lambda broker: broker.dead_letters(), broker)
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
            ssl_context=settings.provided.status_api_ssl_context.call(),
        ),
    )
    heartbeat_sink = providers.Selector(
        heartbeat_kind,
        memory=providers.Singleton(InMemoryHeartbeatSink),
        http=providers.Singleton(
            HttpHeartbeatSink,
            orchestrator_url=settings.provided.orchestrator_url,
            token=providers.Callable(_secret, settings.provided.orchestrator_token),
            tls=settings.provided.orchestrator_tls,
        ),
    )
    job_memory = providers.Selector(
        job_memory_kind,
        memory=providers.Singleton(InMemoryJobMemory, capacity=settings.provided.job_memory_size),
        sqlite=providers.Singleton(
            SqliteJobMemory,
            directory=settings.provided.job_memory_directory,
            capacity=settings.provided.job_memory_size,
        ),
    )
    preflights = providers.Callable(
        lambda settings, broker: [
            broker.preflight(),
            *settings.http_preflights(),
            *settings.sqlite_preflights(),
        ],
        settings,
        broker,
    )
    metrics = providers.Singleton(_prometheus_metrics)
    jobs = providers.Callable(job_table, settings.provided.worker_test_handlers)
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
        runner=jobs.provided[1],
        job_types=jobs.provided[0],
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
    settings: Settings,
    *,
    reporter: str = "http",
    heartbeats: str = "http",
    job_memory: str = "sqlite",
) -> Container:
    container = Container(settings=settings)
    container.reporter_kind.override(reporter)
    container.heartbeat_kind.override(heartbeats)
    container.job_memory_kind.override(job_memory)
    return container


def _in_memory(settings: Settings, reporter: str, **changes: Any) -> Container:
    """The container for `process` and `demo`: the embedded broker and nothing on disk."""
    memory = settings.model_copy(update={"worker_broker": "memory", **changes})
    return build_container(memory, reporter=reporter, heartbeats="memory", job_memory="memory")


# --------------------------------------------------------------------------- commands


def _connect_directly(settings: Settings) -> None:
    """`run` and `check` reach the APIs directly: a proxy variable meant for them stops them."""
    problem = settings.proxy_in_the_way()
    if problem is not None:
        raise ConfigurationError(f"configuration error: {problem}")


def _banner(settings: Settings, broker: Broker, processes: int) -> commands.Banner:
    return commands.Banner(
        version=VERSION,
        broker=broker.describe(),
        worker_id=settings.worker_id,
        capacity=settings.worker_capacity,
        processes=processes,
        status_url=settings.status_update_url,
        orchestrator_url=settings.orchestrator_url,
    )


def _run(settings: Settings, args: argparse.Namespace) -> int:
    _connect_directly(settings)
    processes = args.processes or settings.worker_processes
    count = (os.cpu_count() or 1) if processes == "auto" else int(processes)
    if count > 1:
        from python_worker.adapters.cli.supervisor import (
            Supervisor,
            child_command,
            child_environment,
        )

        child_env = functools.partial(
            child_environment,
            worker_id=settings.worker_id,
            outbox_dir=settings.status_outbox_dir,
            job_memory_dir=settings.job_memory_directory,
            metrics_port=settings.metrics_port,
        )
        # Each process checks its own directories too, but under the names the supervisor
        # gives them (JOB_MEMORY_DIR always): check them here first, as the operator named them.
        _open_local_state(
            settings,
            lambda: SqliteJobMemory(settings.job_memory_directory).close(),
            lambda: Outbox(settings.status_outbox_dir).close(),
        )
        _banner(settings, build_container(settings).broker(), count).log()
        return Supervisor(count, child_command(), child_env).run()
    cap_malloc_arenas()
    container = build_container(settings)
    _open_local_state(settings, container.job_memory, container.status_reporter)
    if commands.SUPERVISED not in os.environ:  # a supervisor's child: the supervisor said it all
        _banner(settings, container.broker(), count).log()
    return commands.run_worker(container.worker(), lambda: _serve_health(container, settings))


def _open_local_state(
    settings: Settings, job_memory: Callable[[], object], outbox: Callable[[], object]
) -> None:
    """Open the job memory and the outbox before anything connects: a directory the worker
    cannot write is a configuration error (exit 2, which systemd does not restart), not a
    traceback and a restart loop."""
    # The job memory first: the reporter starts an event loop that would complain at exit.
    try:
        job_memory()
    except LocalStateUnavailable as exc:
        variable = "JOB_MEMORY_DIR" if settings.job_memory_dir else "STATUS_OUTBOX_DIR"
        raise directory_error(Settings, variable, settings.job_memory_directory, exc) from None
    try:
        outbox()
    except OutboxInUse as exc:
        raise directory_in_use(
            "STATUS_OUTBOX_DIR", settings.status_outbox_dir, exc.holder
        ) from None
    except OutboxUnavailable as exc:
        raise directory_error(
            Settings, "STATUS_OUTBOX_DIR", settings.status_outbox_dir, exc
        ) from None


def _process(settings: Settings, args: argparse.Namespace) -> int:
    container = _in_memory(settings, "stdout")
    worker: Worker = container.worker()
    return commands.process_file(
        args.file, container.message_source(), worker, settings.worker_capacity * 4
    )


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    container = _in_memory(settings, "memory", heartbeat_interval=0.5, metrics_log_interval=3600)
    worker: Worker = container.worker()
    return commands.run_demo(
        args.jobs,
        container.message_source(),
        container.status_reporter(),
        worker,
        settings.worker_capacity,
        VERSION,
    )


def _publish(settings: Settings, args: argparse.Namespace) -> int:
    publisher = build_container(settings).publisher()
    return commands.publish(publisher, args.file, args.queue, args.type, args.id, args.payload)


def _check(settings: Settings, args: argparse.Namespace) -> int:
    _connect_directly(settings)
    preflights = build_container(settings).preflights()
    return commands.check(preflights, settings.secrets(), args.strict)


def _dead_letters(settings: Settings, args: argparse.Namespace) -> int:
    from python_worker.adapters.cli import dead_letters as dead_letter_commands

    return dead_letter_commands.run(build_container(settings).dead_letters(), args)


COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "run": _run,
    "process": _process,
    "demo": _demo,
    "publish": _publish,
    "check": _check,
    "dead-letters": _dead_letters,
}


def _serve_health(container: Container, settings: Settings) -> HealthServer | None:
    if settings.metrics_port is None:
        return None
    from python_worker.adapters.observability.prometheus import serve_health

    try:
        return serve_health(
            settings.metrics_host,
            settings.metrics_port,
            container.metrics(),
            container.worker(),
            container.message_source(),
            container.status_reporter(),
            settings.worker_capacity,
            settings.status_outbox_max_items,
        )
    except OSError as exc:
        raise ConfigurationError(
            f"configuration error: METRICS_PORT={settings.metrics_port}: cannot listen "
            f"({exc.strerror}) (example: METRICS_PORT=9100)"
        ) from None


# --------------------------------------------------------------------------- entry point


def _process_name(settings: Settings, args: argparse.Namespace) -> str:
    """What every log line calls this process: the worker id, or its supervisor."""
    processes = getattr(args, "processes", None) or settings.worker_processes
    count = (os.cpu_count() or 1) if processes == "auto" else int(processes)
    supervising = args.command == "run" and count > 1
    return f"{settings.worker_id} supervisor" if supervising else settings.worker_id


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser(VERSION).parse_args(argv)
    prepare_stdout(args.command)
    try:
        settings = load_settings()
        configure_logging(settings.log_format, settings.log_level, _process_name(settings, args))
        return COMMANDS[args.command](settings, args)
    except ConfigurationError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG_ERROR


if __name__ == "__main__":
    sys.exit(main())
