"""Raw limits of this machine: broker consume+ack with no work (RabbitMQ, Redis), and POSTs."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterable

import orjson
import pika
import redis
import requests
from requests.adapters import HTTPAdapter

from python_worker.adapters.http.transport import KeepAlivePool
from python_worker.adapters.redis.connection import BODY_FIELD
from tests.support.rabbitmq_node import Broker
from tests.support.redis_server import RedisServer

RAW_QUEUE = "bench.raw"

# What the worker posts for a finished `sum` job, give or take the ids and times.
STATUS_BODY = orjson.dumps(
    {
        "jobId": "bench-00000000",
        "status": "completed",
        "workerId": "bench-raw",
        "timestamp": "2026-01-01T00:00:00.000Z",
        "attempt": 1,
        "workerType": "python",
        "jobType": "sum",
        "queue": "job.low",
        "progress": 100,
        "durationMs": 0.05,
        "result": {"operation": "sum", "value": 6, "count": 3},
    }
)


def publish_fast(
    broker: Broker, exchange: str, routing_key: str, bodies: Iterable[bytes], expect: int
) -> float:
    """Publish persistent messages without confirms, then wait until the queue holds `expect`.

    A BlockingChannel with confirms waits one round trip per message (a few hundred per
    second); without them pika only writes frames. Whether every message arrived is then
    checked once, through the queue depth, instead of per message. Returns seconds taken.
    """
    began = time.perf_counter()
    properties = pika.BasicProperties(delivery_mode=2, content_type="application/json")
    connection = broker.connect()
    try:
        channel = connection.channel()
        for body in bodies:
            channel.basic_publish(exchange, routing_key, body, properties=properties)
        deadline = time.monotonic() + 120
        while True:
            depth = channel.queue_declare(routing_key, passive=True).method.message_count
            if depth >= expect:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{routing_key} holds {depth} of {expect} messages")
            time.sleep(0.02)
    finally:
        connection.close()
    return time.perf_counter() - began


def broker_consume_ack(broker: Broker, count: int, prefetch: int = 100) -> dict[str, float]:
    """msg/s of one pika consumer acking each message at once, after `count` were pre-published."""
    connection = broker.connect()
    try:
        channel = connection.channel()
        channel.queue_delete(RAW_QUEUE)
        channel.queue_declare(RAW_QUEUE, durable=True)
    finally:
        connection.close()
    body = orjson.dumps({"id": "x", "type": "sum", "payload": {"numbers": [1, 2, 3]}})
    publish_seconds = publish_fast(broker, "", RAW_QUEUE, (body for _ in range(count)), count)

    connection = broker.connect()
    try:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=prefetch)
        seen = 0
        first: float | None = None

        def on_message(
            ch: pika.channel.Channel, method: object, _props: object, _body: bytes
        ) -> None:
            nonlocal seen, first
            if first is None:
                first = time.perf_counter()
            ch.basic_ack(method.delivery_tag)  # type: ignore[attr-defined]
            seen += 1
            if seen >= count:
                ch.stop_consuming()

        began = time.perf_counter()
        channel.basic_consume(RAW_QUEUE, on_message)
        channel.start_consuming()
        elapsed = time.perf_counter() - began
        channel.queue_delete(RAW_QUEUE)
    finally:
        connection.close()
    return {
        "messages": count,
        "seconds": elapsed,
        "msg_per_s": count / elapsed,
        "publish_msg_per_s": count / publish_seconds,
    }


def redis_publish_fast(server: RedisServer, stream: str, bodies: Iterable[bytes]) -> float:
    """XADD `bodies` to `stream`, pipelined 500 at a time (every reply read); returns seconds."""
    began = time.perf_counter()
    client = server.client()
    try:
        batch: list[bytes] = []
        for body in bodies:
            batch.append(body)
            if len(batch) >= 500:
                _xadd_all(client, stream, batch)
                batch = []
        if batch:
            _xadd_all(client, stream, batch)
    finally:
        client.close()
    return time.perf_counter() - began


def _xadd_all(client: redis.Redis, stream: str, bodies: list[bytes]) -> None:
    pipe = client.pipeline(transaction=False)
    for body in bodies:
        pipe.xadd(stream, {BODY_FIELD: body})
    pipe.execute()


def redis_consume_ack(server: RedisServer, count: int, batch: int = 100) -> dict[str, float]:
    """msg/s of one consumer reading a group `batch` at a time and acking each batch at once,
    after `count` entries were pre-added to a scratch stream: the same no-work loop as
    `broker_consume_ack`, on Redis."""
    client = server.client()
    try:
        client.delete(RAW_QUEUE)
        client.xgroup_create(RAW_QUEUE, "raw", id="0", mkstream=True)
        body = orjson.dumps({"id": "x", "type": "sum", "payload": {"numbers": [1, 2, 3]}})
        publish_seconds = redis_publish_fast(server, RAW_QUEUE, (body for _ in range(count)))
        seen = 0
        began = time.perf_counter()
        while seen < count:
            reply = client.xreadgroup("raw", "raw-1", {RAW_QUEUE: ">"}, count=batch, block=1000)
            ids = [identity for _stream, entries in reply or [] for identity, _fields in entries]
            if not ids:
                raise RuntimeError(f"{RAW_QUEUE} ran dry after {seen} of {count} entries")
            client.xack(RAW_QUEUE, "raw", *ids)
            seen += len(ids)
        elapsed = time.perf_counter() - began
        client.delete(RAW_QUEUE)
    finally:
        client.close()
    return {
        "messages": count,
        "seconds": elapsed,
        "msg_per_s": count / elapsed,
        "publish_msg_per_s": count / publish_seconds,
    }


HTTP_CLIENTS = ("worker", "session")
"""`worker`: the worker's own path (a copy of a prepared request through `KeepAlivePool` on an
event loop, as HttpStatusReporter posts); `session`: plain `requests.Session.post` over
urllib3, one thread each, for comparison."""


def _worker_posts(url: str, in_flight: int, seconds: float) -> tuple[int, float, float]:
    """POSTs through the worker's transport, `in_flight` at a time on one event loop."""
    template = requests.Request(
        "POST", url, data=STATUS_BODY, headers={"Content-Type": "application/json"}
    ).prepare()

    async def run() -> int:
        pool = KeepAlivePool(in_flight)
        stop_at = time.perf_counter() + seconds
        done = 0

        async def lane() -> None:
            nonlocal done
            while time.perf_counter() < stop_at:
                request = template.copy()
                request.headers["Idempotency-Key"] = uuid.uuid4().hex
                response = await pool.send(request, timeout=(3.05, 10.0))
                if response.status_code != 200:
                    raise RuntimeError(f"stand-in refused raw POSTs: HTTP {response.status_code}")
                done += 1

        await asyncio.gather(*(lane() for _ in range(in_flight)))
        pool.close()
        return done

    loop = asyncio.new_event_loop()
    cpu_began = time.process_time()
    began = time.perf_counter()
    try:
        total = loop.run_until_complete(run())
    finally:
        loop.close()
    return total, time.perf_counter() - began, time.process_time() - cpu_began


def _session_poster(url: str) -> tuple[Callable[[str], int], Callable[[], None]]:
    """A function posting STATUS_BODY with an idempotency key, returning the status code."""
    session = requests.Session()
    session.trust_env = False
    pool = HTTPAdapter(pool_connections=1, pool_maxsize=1, max_retries=0)
    session.mount("http://", pool)
    session.headers["Content-Type"] = "application/json"

    def post_with_session(key: str) -> int:
        response = session.post(
            url,
            data=STATUS_BODY,
            headers={"Idempotency-Key": key},
            timeout=(3.05, 10.0),
            allow_redirects=False,
        )
        return response.status_code

    return post_with_session, session.close


def http_posts(url: str, threads: int, seconds: float, client: str = "worker") -> dict[str, float]:
    """POSTs/s through `client` (see HTTP_CLIENTS): `threads` requests in flight at once.

    The worker's client keeps them on one event loop; a Session needs a thread for each.
    """
    if client == "worker":
        total, elapsed, cpu = _worker_posts(url, threads, seconds)
        return _posts_figures(client, threads, total, elapsed, cpu)
    counts = [0] * threads
    start = threading.Barrier(threads + 1)
    stop = threading.Event()
    errors: list[str] = []

    def post_loop(index: int) -> None:
        post, close = _session_poster(url)
        start.wait()
        try:
            while not stop.is_set():
                code = post(uuid.uuid4().hex)
                if code != 200:
                    errors.append(f"HTTP {code}")
                    return
                counts[index] += 1
        finally:
            close()

    workers = [threading.Thread(target=post_loop, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    start.wait()
    cpu_began = time.process_time()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for worker in workers:
        worker.join(30)
    elapsed = time.perf_counter() - began
    cpu = time.process_time() - cpu_began
    if errors:
        raise RuntimeError(f"stand-in refused raw POSTs: {errors[0]}")
    return _posts_figures(client, threads, sum(counts), elapsed, cpu)


def _posts_figures(
    client: str, threads: int, total: int, elapsed: float, cpu: float
) -> dict[str, float]:
    return {
        "client": client,
        "threads": threads,
        "posts": total,
        "seconds": elapsed,
        "posts_per_s": total / elapsed,
        "client_cpu_ms_per_post": cpu * 1000 / total if total else 0.0,
    }
