"""A minimal worker, as a ceiling: pika consumer + http.client POSTs, one thread, no safety nets.

It does the same visible work per job as `python-worker run` -- decode, sum, POST `running`,
POST `completed`, ack after the final status -- and nothing else: no outbox, no retries, no
priority buffers, no validation, no heartbeats, no metrics. Run it with the worker's
environment variables (RABBITMQ_HOST, RABBITMQ_PORT, STATUS_UPDATE_URL, WORKER_ID).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import sys
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pika

QUEUES = ("job.high", "job.medium", "job.low")


class _Poster:
    """One keep-alive connection to the status API."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._path = parts.path or "/"
        self._connection = http.client.HTTPConnection(parts.hostname or "", parts.port or 80)

    def post(self, body: dict[str, object]) -> None:
        self._connection.request(
            "POST", self._path, json.dumps(body), {"Content-Type": "application/json"}
        )
        response = self._connection.getresponse()
        response.read()
        if response.status >= 300:
            raise RuntimeError(f"status API answered {response.status}")


def main() -> None:
    worker_id = os.environ.get("WORKER_ID", "reference")
    poster = _Poster(os.environ["STATUS_UPDATE_URL"])
    parameters = pika.ConnectionParameters(
        os.environ.get("RABBITMQ_HOST", "localhost"), int(os.environ.get("RABBITMQ_PORT", "5672"))
    )
    connection = pika.BlockingConnection(parameters)
    channel = connection.channel()
    channel.basic_qos(prefetch_count=int(os.environ.get("RABBITMQ_PREFETCH", "20")))

    def status(job_id: str, state: str, **extra: object) -> dict[str, object]:
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return {"jobId": job_id, "status": state, "workerId": worker_id, "timestamp": now, **extra}

    def on_message(ch: object, method: object, _properties: object, body: bytes) -> None:
        job = json.loads(body)
        poster.post(status(job["id"], "running", progress=0))
        numbers = job["payload"]["numbers"]
        result = {"operation": "sum", "value": sum(numbers), "count": len(numbers)}
        poster.post(status(job["id"], "completed", progress=100, result=result))
        channel.basic_ack(method.delivery_tag)  # type: ignore[attr-defined]

    for queue in QUEUES:
        channel.basic_consume(queue, on_message)
    # SIGTERM: stop between messages; unacked prefetched ones go back when the connection closes.
    signal.signal(
        signal.SIGTERM, lambda *_: connection.add_callback_threadsafe(channel.stop_consuming)
    )
    channel.start_consuming()
    connection.close()
    sys.exit(0)


if __name__ == "__main__":
    main()
