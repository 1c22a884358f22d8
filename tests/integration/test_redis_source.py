"""The Redis source beyond the port contract: claims, renewals, hold-back, trimming, restarts."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from python_worker.adapters.redis.connection import (
    DEAD_LETTER_STREAM,
    DEAD_LETTERED_AT_FIELD,
    GROUP,
    JOB_STREAMS,
    ORIGINAL_ID_FIELD,
    ORIGINAL_QUEUE_FIELD,
    REASON_FIELD,
    WORKER_FIELD,
    create_topology,
    trim_consumed,
)
from python_worker.adapters.redis.publisher import RedisPublisher
from python_worker.adapters.redis.source import RedisSource
from python_worker.application.ports import Delivery, Settlement
from python_worker.domain.jobs import Priority
from tests.integration.redis_fixtures import durable_redis, redis_instance, redis_server
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until

__all__ = ["durable_redis", "redis_instance", "redis_server"]


@pytest.fixture
def sources() -> Iterator[list[RedisSource]]:
    made: list[RedisSource] = []
    yield made
    for source in made:
        source.close()


def open_source(
    server: RedisServer,
    sources: list[RedisSource],
    *,
    prefetch: int = 50,
    claim_idle: float = 30,
    worker_id: str = "",
) -> RedisSource:
    source = RedisSource(server.config(claim_idle_seconds=claim_idle), prefetch, worker_id)
    sources.append(source)
    assert source.wait_until_connected(20)
    return source


def publish(server: RedisServer, queue: str, *bodies: bytes) -> None:
    report = RedisPublisher(server.config()).publish(
        [(Priority.from_queue(queue), body) for body in bodies]
    )
    assert report.confirmed == len(bodies), report


def receive(source: RedisSource, timeout: float = 10) -> Delivery:
    delivery = source.receive(timeout)
    assert delivery is not None
    return delivery


def test_creates_the_streams_and_one_group_once_when_several_workers_start_at_once(
    redis_server: RedisServer, sources: list[RedisSource]
) -> None:
    start = threading.Barrier(8)
    failures: list[BaseException] = []

    def create() -> None:
        client = redis_server.client()
        try:
            start.wait()
            create_topology(client)
        except BaseException as exc:
            failures.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    started = [RedisSource(redis_server.config(), 10, f"w{n}") for n in range(4)]
    sources.extend(started)
    for thread in threads:
        thread.join(30)

    assert failures == []
    assert all(source.wait_until_connected(20) for source in started)
    client = redis_server.client()
    for stream in [*JOB_STREAMS, DEAD_LETTER_STREAM]:
        assert [group["name"] for group in client.xinfo_groups(stream)] == [GROUP.encode()]


def test_claims_the_entries_of_a_consumer_that_went_silent_when_they_idled_past_the_claim_time(
    redis_server: RedisServer, sources: list[RedisSource]
) -> None:
    publish(redis_server, "job.low", b"orphan")
    client = redis_server.client()
    client.xreadgroup(GROUP, "killed-worker", {"job.low": ">"}, count=10)

    survivor = open_source(redis_server, sources, claim_idle=1)
    delivery = receive(survivor)

    assert (delivery.body, delivery.attempt, delivery.redelivered) == (b"orphan", 2, True)
    assert redis_server.pending_by_consumer("job.low") == {survivor.consumer: 1}


def test_keeps_its_own_entries_when_it_holds_them_longer_than_the_claim_time(
    redis_server: RedisServer, sources: list[RedisSource]
) -> None:
    publish(redis_server, "job.medium", b"slow status")
    holder = open_source(redis_server, sources, claim_idle=1.5, worker_id="holder")
    held = receive(holder)
    other = open_source(redis_server, sources, claim_idle=1.5, worker_id="other")

    time.sleep(5)  # more than three claim times: only renewals keep the entry with its holder

    assert other.receive(timeout=0.5) is None
    assert redis_server.pending_by_consumer("job.medium") == {"holder": 1}
    holder.settle(held, Settlement.ACK)
    assert wait_until(lambda: redis_server.remaining() == 0, timeout=20)


def test_drops_unstarted_entries_another_worker_claimed_while_it_was_cut_off(
    redis_server: RedisServer, sources: list[RedisSource]
) -> None:
    publish(redis_server, "job.low", b"kept", b"claimed away")
    source = open_source(redis_server, sources, worker_id="cut-off")
    assert wait_until(lambda: source.buffered()[Priority.LOW] == 2, timeout=20)
    client = redis_server.client()
    [_kept, (claimed, _fields)] = client.xrange("job.low")
    client.xclaim("job.low", GROUP, "other", 0, [claimed], justid=True)

    client.client_kill_filter(_type="normal", skipme=True)  # every connection of the source

    assert wait_until(lambda: source.buffered()[Priority.LOW] == 1, timeout=30)
    assert receive(source).body == b"kept"
    assert source.receive(timeout=0.5) is None
    assert redis_server.pending_by_consumer("job.low") == {"cut-off": 1, "other": 1}


def test_holds_back_a_lower_tier_while_a_higher_tiers_window_is_full(
    redis_server: RedisServer, sources: list[RedisSource]
) -> None:
    publish(redis_server, "job.high", b"h1", b"h2", b"h3")
    publish(redis_server, "job.low", b"l1")
    source = open_source(redis_server, sources, prefetch=2)
    first, second = receive(source), receive(source)
    assert wait_until(lambda: source.buffered()[Priority.LOW] == 1, timeout=20)

    held_back = source.receive(timeout=0.5)
    source.settle(first, Settlement.ACK)
    after_ack = receive(source)

    assert (first.body, second.body) == (b"h1", b"h2")
    assert held_back is None
    assert after_ack.body == b"h3"


def test_dead_letters_with_reason_worker_stream_time_and_original_id_in_one_transaction(
    redis_server: RedisServer, sources: list[RedisSource]
) -> None:
    publish(redis_server, "job.medium", b"{not json")
    source = open_source(redis_server, sources, worker_id="vm1-worker")

    delivery = receive(source)
    source.settle(delivery, Settlement.DEAD_LETTER, "message body is not valid UTF-8 JSON")

    assert wait_until(lambda: redis_server.remaining() == 0, timeout=20)
    [fields] = redis_server.dead_letters()
    assert fields[b"body"] == b"{not json"
    assert fields[REASON_FIELD.encode()] == b"message body is not valid UTF-8 JSON"
    assert fields[WORKER_FIELD.encode()] == b"vm1-worker"
    assert fields[ORIGINAL_QUEUE_FIELD.encode()] == b"job.medium"
    assert fields[ORIGINAL_ID_FIELD.encode()] == delivery.handle.entry_id.encode()
    assert fields[DEAD_LETTERED_AT_FIELD.encode()].endswith(b"Z")


def test_takes_up_its_own_pending_entries_when_restarted_under_the_same_consumer_name(
    redis_server: RedisServer, sources: list[RedisSource]
) -> None:
    publish(redis_server, "job.high", b"in flight when killed")
    client = redis_server.client()
    client.xreadgroup(GROUP, "vm1-worker", {"job.high": ">"}, count=10)

    restarted = open_source(redis_server, sources, worker_id="vm1-worker")
    delivery = receive(restarted, timeout=5)

    assert (delivery.body, delivery.attempt) == (b"in flight when killed", 2)


def test_leaves_the_group_when_closed_with_nothing_pending(
    redis_server: RedisServer, sources: list[RedisSource]
) -> None:
    publish(redis_server, "job.low", b"done", b"not started")
    source = open_source(redis_server, sources, worker_id="leaving")
    source.settle(receive(source), Settlement.ACK)

    source.close()

    client = redis_server.client()
    consumers = {c["name"] for c in client.xinfo_consumers("job.low", GROUP)}
    assert b"leaving" not in consumers
    assert redis_server.pending_by_consumer("job.low") == {"handed-back": 1}


def test_stays_in_the_group_when_closed_while_an_entry_it_never_knew_of_is_pending_at_it(
    redis_server: RedisServer, sources: list[RedisSource]
) -> None:
    publish(redis_server, "job.low", b"held", b"read by a namesake")
    source = open_source(redis_server, sources, prefetch=1, worker_id="namesake")
    assert wait_until(lambda: source.buffered()[Priority.LOW] == 1, timeout=20)
    client = redis_server.client()
    client.xreadgroup(GROUP, "namesake", {"job.low": ">"}, count=10)  # another process, same id

    source.close()

    assert redis_server.pending_by_consumer("job.low") == {"namesake": 1, "handed-back": 1}


def test_settles_after_redis_restarts_when_redis_writes_every_change_to_disk(
    durable_redis: RedisServer, sources: list[RedisSource]
) -> None:
    publish(durable_redis, "job.high", b"across a crash")
    source = open_source(durable_redis, sources)
    delivery = receive(source)

    durable_redis.restart(kill=True)
    source.settle(delivery, Settlement.ACK)

    assert wait_until(lambda: durable_redis.remaining() == 0, timeout=30)
    assert wait_until(lambda: source.status().connected, timeout=30)
    assert source.status().reconnects >= 1


def test_trims_acknowledged_entries_and_keeps_every_unacknowledged_one(
    redis_server: RedisServer, sources: list[RedisSource]
) -> None:
    bodies = [f"job-{n}".encode() for n in range(300)]
    publish(redis_server, "job.low", *bodies)
    source = open_source(redis_server, sources, prefetch=400)
    deliveries = [receive(source) for _ in range(300)]
    for delivery in deliveries[:200]:
        source.settle(delivery, Settlement.ACK)
    assert wait_until(lambda: redis_server.stream_counts()["job.low"] == (0, 100), timeout=20)

    client = redis_server.client()
    trim_consumed(client, "job.low")

    left = [fields[b"body"] for _id, fields in client.xrange("job.low")]
    assert len(left) < 300
    assert left[-100:] == bodies[200:]
