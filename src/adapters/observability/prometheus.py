"""Prometheus metrics for the worker, and one small HTTP server for /metrics, /healthz, /readyz."""

import logging
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from python_worker.application.ports import JobObserver, MessageSource, StatusReporter
from python_worker.application.worker import Worker

log = logging.getLogger(__name__)

Readiness = Callable[[], list[str]]
"""Returns what keeps the worker from being ready; empty when it is ready."""

_DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class PrometheusMetrics(JobObserver):
    """The worker's metrics on a registry of its own (no process-global state to leak)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.jobs = Counter(
            "worker_jobs_total",
            "Jobs finished, by job type and outcome (completed, failed, dead-lettered).",
            ["type", "outcome"],
            registry=self.registry,
        )
        self.job_duration = Histogram(
            "worker_job_duration_seconds",
            "Time from taking a job to its final status, by job type.",
            ["type"],
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.tier_wait = Histogram(
            "worker_queue_tier_wait_seconds",
            "Time a delivery waited in the worker's tier buffer before a job thread took it.",
            ["queue"],
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self._gauges: list[Gauge] = []
        self._counters = _CountersRead()
        self.registry.register(self._counters)
        # CPU, resident memory, open files, start time: process_* as every exporter has them.
        ProcessCollector(registry=self.registry)

    def job_started(self, queue: str, waited_s: float) -> None:
        self.tier_wait.labels(queue).observe(waited_s)

    def job_finished(self, job_type: str, outcome: str, duration_s: float, queue: str) -> None:
        self.jobs.labels(job_type, outcome).inc()
        self.job_duration.labels(job_type).observe(duration_s)

    def gauge(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A value read when scraped (in-flight jobs, outbox depth, reconnects...)."""
        gauge = Gauge(name, documentation, registry=self.registry)
        gauge.set_function(read)
        self._gauges.append(gauge)

    def counter(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A count kept elsewhere (reconnects, failed deliveries), exposed as `<name>_total`."""
        self._counters.add(name, documentation, read)


class _CountersRead:
    """A collector of counters whose values another part keeps: read at each scrape."""

    def __init__(self) -> None:
        self._counters: list[tuple[str, str, Callable[[], float]]] = []

    def add(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        self._counters.append((name, documentation, read))

    def collect(self) -> Iterator[Metric]:
        for name, documentation, read in self._counters:
            family = CounterMetricFamily(name, documentation)
            family.add_metric([], read())
            yield family


class HealthServer:
    """Serves /metrics (Prometheus text), /healthz (process up) and /readyz (ready or why not)."""

    def __init__(
        self, host: str, port: int, metrics: PrometheusMetrics, readiness: Readiness
    ) -> None:
        self._metrics = metrics
        self._readiness = readiness
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="health-server", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()
        log.info("metrics and health endpoints on port %d", self.port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body = generate_latest(server._metrics.registry)
                    self._answer(200, body, CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    self._answer(200, b'{"status":"ok"}', "application/json")
                elif path == "/readyz":
                    problems = server._readiness()
                    body = orjson.dumps({"ready": not problems, "problems": problems})
                    self._answer(503 if problems else 200, body, "application/json")
                else:
                    self._answer(404, b'{"error":"not found"}', "application/json")

            def _answer(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                """Scrapes every few seconds would flood the log; stay quiet."""

        return Handler


def serve_health(
    host: str,
    port: int,
    metrics: PrometheusMetrics,
    worker: Worker,
    source: MessageSource,
    reporter: StatusReporter,
    capacity: int,
    outbox_capacity: int,
) -> HealthServer:
    """The worker's gauges on `metrics`, served with /healthz and /readyz on `host:port`.

    Raises OSError when the port cannot be had.
    """
    stats = worker.stats
    metrics.gauge("worker_jobs_in_flight", "Jobs running now.", lambda: stats.snapshot().in_flight)
    metrics.gauge("worker_capacity", "Most jobs this worker runs at once.", lambda: capacity)
    metrics.gauge(
        "worker_status_outbox_depth",
        "Status updates accepted but not yet delivered (in memory or in the outbox).",
        reporter.backlog,
    )
    metrics.gauge(
        "worker_status_outbox_capacity",
        "Updates the outbox holds before the worker stops taking jobs (STATUS_OUTBOX_MAX_ITEMS).",
        lambda: outbox_capacity,
    )
    metrics.counter(
        "worker_status_delivery_failures",
        "Status deliveries that failed (each retried or stored in the outbox).",
        reporter.delivery_failures,
    )
    metrics.counter(
        "worker_broker_reconnects",
        "Times the broker connection was lost and re-established.",
        lambda: source.status().reconnects,
    )
    metrics.gauge(
        "worker_broker_connected",
        "1 while connected to the broker.",
        lambda: source.status().connected,
    )
    metrics.gauge(
        "worker_deliveries_waiting",
        "Deliveries received from the broker and not started yet (this worker's buffers).",
        lambda: source.status().waiting,
    )
    metrics.gauge(
        "worker_accepting_jobs",
        "1 while the worker takes new jobs; 0 while it pauses (outbox full or not writable).",
        lambda: worker.pause_reason() is None,
    )
    server = HealthServer(host, port, metrics, worker.readiness)
    server.start()
    return server
