"""The Redis Streams message source: one stream per tier, one consumer group, tiered buffers."""

import collections
import logging
import secrets
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
import redis.exceptions

from python_worker.adapters.backoff import full_jitter
from python_worker.adapters.redis.config import RedisConfig
from python_worker.adapters.redis.connection import (
    BODY_FIELD,
    DEAD_LETTER_STREAM,
    GROUP,
    HANDED_BACK,
    JOB_STREAMS,
    Fields,
    create_topology,
    dead_letter_fields,
    describe,
    earlier_attempts,
    entries_of,
    entry_id,
    ids_arg,
    trim_consumed,
)
from python_worker.application.ports import Delivery, MessageSource, Settlement, SourceStatus
from python_worker.domain.jobs import Priority

log = logging.getLogger(__name__)

RECONNECT_BASE_SECONDS = 1.0
RECONNECT_CAP_SECONDS = 30.0
LONG_BLOCK_MS = 500
"""How long a read waits for new entries while every tier has room: any new entry wakes it."""
SHORT_BLOCK_MS = 10
"""How long a read waits while some tier's window is full: that tier is not in the read, and
its next entry must be fetched soon after an acknowledgement frees a slot."""
READ_BATCH = 200
"""Most entries taken from one stream per read."""
REFILL_GRACE_SECONDS = 0.1
"""How long a tier counts as "more on the way" after an acknowledgement freed a slot in its
full window: one short read and a round trip, so a lower tier does not slip into that gap."""
CLAIM_POLL_SECONDS = 1.0
"""How often a worker looks for entries other workers left idle (or handed back)."""
TRIM_INTERVAL_SECONDS = 5.0
CLOSE_FLUSH_SECONDS = 10.0
"""How long `close` keeps trying to send settlements to an unreachable Redis."""
HANDED_BACK_IDLE_MS = 86_400_000
"""The idle time a handed-back entry gets: a day, longer than any worker's claim idle time, so
the next XAUTOCLAIM anywhere takes it at once. (Redis resets an IDLE beyond its clock to 0.)"""

REDIS_ERRORS = (redis.exceptions.RedisError, OSError)


@dataclass(frozen=True)
class _Handle:
    """Which entry of which stream a delivery is, and the entry's fields, which a
    dead-lettered copy carries on."""

    priority: Priority
    entry_id: str
    fields: Fields
    job_attempt: int = 1


class RedisSource(MessageSource):
    """Reads `job.high`, `job.medium` and `job.low` through one consumer group; highest tier first.

    Two threads, each owning its own connection: the reader fills three in-memory buffers (one
    per tier) with XREADGROUP and XAUTOCLAIM, and the writer sends every settlement (XACK,
    dead-lettering, hand-backs in one MULTI/EXEC per batch), renews this worker's hold on the
    entries it has and trims what every group has acknowledged. Job threads only read the
    buffers and queue settlements, so a settle from the reporter's callback never waits on Redis.

    Priority, as with RabbitMQ: each tier has its own window of `prefetch` entries held
    unacknowledged; a job thread takes from the highest non-empty buffer, and holds back while
    a higher tier's window is full (its stream likely holds more) or was refilled a moment ago.

    Idle time and claims: an entry stays in this consumer's pending list from delivery to its
    acknowledgement, including while its final status is on the way to the API. The writer
    renews every entry this worker holds each third of `claim_idle_seconds` (XCLAIM JUSTID,
    which resets the idle time and not the delivery count), so an entry goes idle only when its
    worker stopped: killed, stalled or cut off from Redis. Any worker then claims it with
    XAUTOCLAIM, and its delivery count becomes the delivery's `attempt`.

    Handing back (requeue, `stop_receiving`, `close`): an entry cannot be put back at the head
    of a stream, so it is moved with XCLAIM JUSTID to the `handed-back` consumer with a day of
    idle time: the next XAUTOCLAIM of any worker takes it, counting one more delivery. This
    worker's consumer is then empty and is deleted at `close`.

    Connections heal themselves: either thread reconnects with exponential backoff and full
    jitter, forever. Unlike AMQP deliveries, entries survive a lost connection (they stay in
    the pending list), so buffered entries are kept and settlements are sent once Redis answers.
    """

    def __init__(self, config: RedisConfig, prefetch: int, worker_id: str = "") -> None:
        self._config = config
        self._prefetch = prefetch
        self._worker_id = worker_id
        self._consumer = worker_id or f"worker-{secrets.token_hex(3)}"
        self._claim_idle_ms = int(config.claim_idle_seconds * 1000)
        self._renew_seconds = config.claim_idle_seconds / 3
        self._buffers: dict[Priority, collections.deque[Delivery]] = {
            priority: collections.deque() for priority in Priority
        }
        self._ready = threading.Condition()
        self._tiers = Priority.by_rank()
        self._lowest = self._tiers[-1]
        # Job threads waiting because a higher tier's window is full (see `receive`).
        self._held_back = 0
        # Entries this worker holds (buffered, running, awaiting their status), per tier, in
        # delivery order: the tier's window. Guarded by `_ready`.
        self._held: dict[Priority, dict[str, None]] = {priority: {} for priority in Priority}
        self._refill_until: dict[Priority, float] = dict.fromkeys(Priority, 0.0)
        self._settled = threading.Condition()
        self._settlements: list[tuple[_Handle, Settlement, str | None]] = []
        self._room = threading.Event()
        self._claim_now = threading.Event()
        self._cursors: dict[Priority, str] = dict.fromkeys(Priority, "0-0")
        self._receiving = True
        self._closing = threading.Event()
        self._reader_done = threading.Event()
        self._closed = False
        self._connected = threading.Event()
        self._reconnects = 0
        self._acked_since_trim = False
        self._next_renew = time.monotonic() + self._renew_seconds
        self._next_trim = time.monotonic() + TRIM_INTERVAL_SECONDS
        self._reader = threading.Thread(target=self._read_loop, name="redis-read", daemon=True)
        self._writer = threading.Thread(target=self._write_loop, name="redis-write", daemon=True)
        self._reader.start()
        self._writer.start()

    # ------------------------------------------------------------------ job-thread side

    def receive(self, timeout: float) -> Delivery | None:
        deadline = time.monotonic() + timeout
        with self._ready:
            while True:
                if not self._receiving:
                    return None
                now = time.monotonic()
                wake = deadline
                held_back = False
                for priority in self._tiers:
                    buffer = self._buffers[priority]
                    if buffer:
                        return buffer.popleft()
                    if priority is self._lowest:
                        break  # no tier below to keep from jumping the queue
                    if len(self._held[priority]) >= self._prefetch:
                        # This tier's window is full, so its stream likely holds more: starting
                        # a lower-tier job now would jump the queue. Wait for acknowledgements.
                        held_back = True
                        break
                    if self._refill_until[priority] > now:
                        # An acknowledgement just freed a slot in this tier's full window; its
                        # next entry is on the way. Don't let a lower tier slip into that read.
                        wake = min(wake, self._refill_until[priority])
                        break
                if now >= deadline:
                    return None
                self._held_back += held_back
                try:
                    self._ready.wait(wake - now)
                finally:
                    self._held_back -= held_back

    def settle(self, delivery: Delivery, outcome: Settlement, reason: str | None = None) -> None:
        handle: _Handle = delivery.handle
        with self._settled:
            if self._closed:
                log.info(
                    "not sending %s for entry %s of %s: the source is closed; the entry goes to "
                    "another worker once idle",
                    outcome.value,
                    handle.entry_id,
                    handle.priority.queue,
                )
                return
            self._settlements.append((handle, outcome, reason))
            self._settled.notify()

    def stop_receiving(self) -> None:
        with self._ready:
            self._receiving = False
            unstarted = self._take_buffered()
            self._ready.notify_all()
        self._hand_back(unstarted)

    def close(self) -> None:
        self.stop_receiving()
        self._closing.set()
        self._room.set()
        # The reader first: what its last read brings in is handed back before the writer's
        # final round, which hands back whatever is still held and deletes this consumer.
        self._reader.join(timeout=self._config.socket_timeout + 5)
        with self._settled:
            # From here a settle is refused (logged): the writer's last round hands back
            # whatever is still held, and a later acknowledgement would race with that.
            self._closed = True
            self._reader_done.set()
            self._settled.notify_all()
        self._writer.join(timeout=CLOSE_FLUSH_SECONDS + self._config.socket_timeout + 5)

    def status(self) -> SourceStatus:
        with self._ready:
            waiting = sum(len(buffer) for buffer in self._buffers.values())
        return SourceStatus(
            connected=self._connected.is_set(),
            consuming=self._connected.is_set() and self._receiving,
            reconnects=self._reconnects,
            waiting=waiting,
        )

    def buffered(self) -> dict[Priority, int]:
        """Entries read from Redis and not yet handed out, per tier."""
        with self._ready:
            return {priority: len(buffer) for priority, buffer in self._buffers.items()}

    def wait_until_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    @property
    def consumer(self) -> str:
        """This worker's consumer name in the group."""
        return self._consumer

    def _take_buffered(self) -> list[Delivery]:
        """Empty the tier buffers (caller holds `_ready`); returns what they held."""
        taken = [delivery for buffer in self._buffers.values() for delivery in buffer]
        for buffer in self._buffers.values():
            buffer.clear()
        return taken

    def _hand_back(self, deliveries: Iterable[Delivery]) -> None:
        with self._settled:
            for delivery in deliveries:
                self._settlements.append((delivery.handle, Settlement.REQUEUE, None))
            self._settled.notify()

    # ------------------------------------------------------------------ the reader

    def _read_loop(self) -> None:
        attempt = 0
        client: redis.Redis | None = None
        while not self._closing.is_set():
            try:
                client = self._connect()
                attempt = 0
                self._read_until_closing(client)
            except REDIS_ERRORS as exc:
                self._connection_lost(exc)
            except Exception as exc:  # never let the reader die: that would stop the worker
                log.exception("unexpected error on the Redis connection")
                self._connection_lost(exc)
            finally:
                if client is not None:
                    _close_quietly(client)
                    client = None
            if self._closing.is_set():
                break
            attempt += 1
            delay = full_jitter(RECONNECT_BASE_SECONDS, attempt, RECONNECT_CAP_SECONDS)
            log.warning(
                "reconnecting to %s in %.1fs (attempt %d)", self._config.where(), delay, attempt
            )
            self._closing.wait(delay)
        self._connected.clear()

    def _connect(self) -> redis.Redis:
        log.info("connecting to %s", self._config.where())
        client = self._config.client(socket_timeout=self._config.socket_timeout)
        try:
            client.ping()
            create_topology(client)
            self._recover_own(client)
        except BaseException:
            _close_quietly(client)
            raise
        self._connected.set()
        log.info(
            "connected to %s; consuming %s as %s in group %s with prefetch %d each",
            self._config.where(),
            ", ".join(JOB_STREAMS),
            self._consumer,
            GROUP,
            self._prefetch,
        )
        return client

    def _read_until_closing(self, client: redis.Redis) -> None:
        next_claim = 0.0
        while not self._closing.is_set():
            if not self._receiving:
                # Stopped: nothing more to read, but the connection stays up for `status()`.
                client.ping()
                self._closing.wait(1.0)
                continue
            now = time.monotonic()
            if self._claim_now.is_set() or now >= next_claim:
                self._claim_now.clear()
                self._claim_idle(client)
                next_claim = now + min(CLAIM_POLL_SECONDS, self._config.claim_idle_seconds / 4)
            self._room.clear()
            rooms = self._rooms()
            if not rooms:
                self._room.wait(0.2)
                continue
            if not self._read_waiting(client, rooms):
                self._read_blocking(client, rooms)

    def _rooms(self) -> dict[Priority, int]:
        """Free slots of each tier's window, for the tiers that have some."""
        with self._ready:
            rooms = {p: self._prefetch - len(self._held[p]) for p in self._tiers}
        return {priority: room for priority, room in rooms.items() if room > 0}

    def _read_waiting(self, client: redis.Redis, rooms: dict[Priority, int]) -> bool:
        """Take what each stream has now, each up to its own room, in one round trip."""
        pipe = client.pipeline(transaction=False)
        for priority, room in rooms.items():
            pipe.xreadgroup(
                GROUP, self._consumer, {priority.queue: ">"}, count=min(room, READ_BATCH)
            )
        got = False
        for reply in pipe.execute():
            got |= self._take_read(reply)
        return got

    def _read_blocking(self, client: redis.Redis, rooms: dict[Priority, int]) -> None:
        """Wait for the next entry on any stream with room; a full window keeps the wait short."""
        block = LONG_BLOCK_MS if len(rooms) == len(self._tiers) else SHORT_BLOCK_MS
        reply = client.xreadgroup(
            GROUP,
            self._consumer,
            {priority.queue: ">" for priority in rooms},
            count=min(*rooms.values(), READ_BATCH),
            block=block,
        )
        self._take_read(reply)

    def _take_read(self, reply: Any) -> bool:
        """Buffer what XREADGROUP returned (first deliveries); True if there was anything."""
        got = False
        for stream, entries in reply or []:
            priority = Priority.from_queue(entry_id(stream))
            got |= bool(entries)
            self._take(priority, [(entry_id(i), fields, 1) for i, fields in entries])
        return got

    def _take(self, priority: Priority, entries: Sequence[tuple[str, Fields | None, int]]) -> None:
        """Buffer deliveries (id, fields, times delivered); hand them back if stopped meanwhile."""
        now = time.monotonic()
        late: list[Delivery] = []
        with self._ready:
            held = self._held[priority]
            for identity, fields, attempt in entries:
                if fields is None or identity in held:
                    continue  # deleted meanwhile, or already ours (claimed back from ourselves)
                earlier = earlier_attempts(fields)
                delivery = Delivery(
                    body=fields.get(BODY_FIELD.encode(), b""),
                    priority=priority,
                    handle=_Handle(priority, identity, fields, earlier + attempt),
                    attempt=attempt,
                    redelivered=attempt > 1,
                    received_at=now,
                    earlier_attempts=earlier,
                )
                held[identity] = None
                if self._receiving:
                    self._buffers[priority].append(delivery)
                    self._ready.notify()
                else:
                    late.append(delivery)
        self._hand_back(late)

    def _claim_idle(self, client: redis.Redis) -> None:
        """XAUTOCLAIM entries idle past the claim time (a gone worker's, or handed back)."""
        for priority, room in self._rooms().items():
            stream = priority.queue
            cursor, claimed, *_deleted = client.xautoclaim(
                stream,
                GROUP,
                self._consumer,
                self._claim_idle_ms,
                start_id=self._cursors[priority],
                count=min(room, READ_BATCH),
            )
            self._cursors[priority] = entry_id(cursor)
            entries = entries_of(claimed)
            if not entries:
                continue
            counted = self._with_counts(client, stream, entries)
            self._take(priority, counted)
            log.info(
                "claimed %d idle entr%s of %s (a stopped worker's, or handed back)",
                len(counted),
                "y" if len(counted) == 1 else "ies",
                stream,
            )

    def _recover_own(self, client: redis.Redis) -> None:
        """Square what this process holds with what is pending at its consumer, at each connect.

        A worker restarted under the same WORKER_ID finds its previous life's entries there,
        and a reconnect finds those whose XREADGROUP reply was lost with the connection: both
        are taken up, XCLAIM (without JUSTID) counting the delivery, as a redelivery should.
        Those this process still holds are renewed. A buffered entry no longer pending here was
        claimed by another worker while this one was cut off: it is dropped unstarted, as an
        AMQP channel's deliveries go with it.
        """
        for priority in self._tiers:
            stream = priority.queue
            with self._ready:
                held = set(self._held[priority])
            wanted = self._prefetch + len(held)
            pending = client.xpending_range(
                stream, GROUP, "-", "+", wanted, consumername=self._consumer
            )
            pending_ids = [entry_id(p["message_id"]) for p in pending]
            if len(pending_ids) < wanted:  # the whole list: what is missing from it is gone
                self._drop_claimed_away(priority, held.difference(pending_ids))
            still_mine = [i for i in pending_ids if i in held]
            if still_mine:
                # Renew at once: their idle time kept growing while Redis was away, and another
                # worker reconnecting now would otherwise claim them before the writer's round.
                client.xclaim(stream, GROUP, self._consumer, 0, ids_arg(still_mine), justid=True)
            room = self._prefetch - len(held)
            ids = [i for i in pending_ids if i not in held][: max(room, 0)]
            if not ids:
                continue
            entries = entries_of(client.xclaim(stream, GROUP, self._consumer, 0, ids_arg(ids)))
            self._take(priority, self._with_counts(client, stream, entries))
            log.info(
                "took up %d entr%s of %s pending at %s",
                len(entries),
                "y" if len(entries) == 1 else "ies",
                stream,
                self._consumer,
            )

    def _drop_claimed_away(self, priority: Priority, gone: set[str]) -> None:
        """Forget buffered entries of `priority` that are no longer this consumer's. Entries
        already handed to a job thread stay: their job runs, and its settlement is harmless."""
        if not gone:
            return
        with self._ready:
            buffer = self._buffers[priority]
            kept = [d for d in buffer if d.handle.entry_id not in gone]
            dropped = len(buffer) - len(kept)
            for delivery in buffer:
                if delivery.handle.entry_id in gone:
                    del self._held[priority][delivery.handle.entry_id]
            buffer.clear()
            buffer.extend(kept)
        if dropped:
            log.info(
                "dropped %d unstarted entr%s of %s: another worker claimed them while this one "
                "was cut off from Redis",
                dropped,
                "y" if dropped == 1 else "ies",
                priority.queue,
            )

    def _with_counts(
        self, client: redis.Redis, stream: str, entries: Sequence[tuple[str, Fields]]
    ) -> list[tuple[str, Fields | None, int]]:
        """Each claimed entry with its delivery count (XCLAIM and XAUTOCLAIM do not say it)."""
        pipe = client.pipeline(transaction=False)
        for identity, _fields in entries:
            pipe.xpending_range(stream, GROUP, identity, identity, 1)
        counts: list[tuple[str, Fields | None, int]] = []
        for (identity, fields), found in zip(entries, pipe.execute(), strict=True):
            times = int(found[0]["times_delivered"]) if found else 2
            counts.append((identity, fields, times))
        return counts

    def _connection_lost(self, exc: BaseException) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if was_connected:
            self._reconnects += 1
        log.warning("Redis connection to %s lost: %s", self._config.where(), describe(exc))

    # ------------------------------------------------------------------ the writer

    def _write_loop(self) -> None:
        client: redis.Redis | None = None
        attempt = 0
        give_up_at: float | None = None
        while True:
            with self._settled:
                if not self._settlements and not self._reader_done.is_set():
                    self._settled.wait(max(0.0, self._next_upkeep - time.monotonic()))
                batch, self._settlements = self._settlements, []
            final = self._reader_done.is_set()
            if final and give_up_at is None:
                give_up_at = time.monotonic() + CLOSE_FLUSH_SECONDS
            try:
                if client is None:
                    client = self._config.client()
                if batch:
                    self._apply(client, batch)
                    batch = []
                if final:
                    self._finish(client)
                    break
                self._upkeep(client)
                attempt = 0
            except Exception as exc:
                if client is not None:
                    _close_quietly(client)
                    client = None
                with self._settled:
                    self._settlements[:0] = batch
                attempt += 1
                delay = self._write_failed(exc, attempt, give_up_at)
                if delay is None:
                    break
                # Closing: retry soon, within CLOSE_FLUSH_SECONDS, rather than sleep through it.
                self._closing.wait(delay)
                if self._closing.is_set():
                    time.sleep(min(delay, 0.5))
        if client is not None:
            _close_quietly(client)

    def _write_failed(self, exc: Exception, attempt: int, give_up_at: float | None) -> float | None:
        """Log why settlements did not go out; the delay before the next try, None to give up."""
        with self._settled:
            waiting = len(self._settlements)
        if not isinstance(exc, REDIS_ERRORS):
            # Never let the writer die: acknowledgements would stop. Try again, slowly.
            log.exception("unexpected error while settling entries")
        if give_up_at is not None and time.monotonic() >= give_up_at:
            log.warning(
                "closing with %d settlement(s) unsent to %s (%s): those entries go to another "
                "worker once idle for %ss",
                waiting,
                self._config.where(),
                describe(exc),
                f"{self._config.claim_idle_seconds:g}",
            )
            return None
        delay = full_jitter(RECONNECT_BASE_SECONDS, attempt, RECONNECT_CAP_SECONDS)
        if give_up_at is not None:
            delay = min(delay, max(0.0, give_up_at - time.monotonic()))
        log.warning(
            "could not send %d settlement(s) to %s: %s; retrying in %.1fs (attempt %d)",
            waiting,
            self._config.where(),
            describe(exc),
            delay,
            attempt,
        )
        return delay

    def _upkeep(self, client: redis.Redis) -> None:
        """Renew this worker's hold on its entries, and trim what is acknowledged, when due."""
        now = time.monotonic()
        if now >= self._next_renew:
            self._renew(client)
            self._next_renew = now + self._renew_seconds
        if now >= self._next_trim:
            self._trim(client)
            self._next_trim = now + TRIM_INTERVAL_SECONDS

    @property
    def _next_upkeep(self) -> float:
        return min(self._next_renew, self._next_trim)

    def _apply(
        self, client: redis.Redis, batch: Sequence[tuple[_Handle, Settlement, str | None]]
    ) -> None:
        """Send one batch of settlements in one MULTI/EXEC: atomic, so a dead-lettered copy
        exists exactly when its original is acknowledged."""
        acks: dict[str, list[str]] = collections.defaultdict(list)
        backs: dict[str, list[str]] = collections.defaultdict(list)
        now = datetime.now(UTC)
        tx = client.pipeline(transaction=True)
        dead = 0
        for handle, outcome, reason in batch:
            stream = handle.priority.queue
            if outcome is Settlement.ACK:
                acks[stream].append(handle.entry_id)
            elif outcome is Settlement.DEAD_LETTER:
                fields: dict[Any, Any] = dict(handle.fields)
                fields.update(
                    dead_letter_fields(
                        reason, self._worker_id, stream, handle.entry_id, now, handle.job_attempt
                    )
                )
                tx.xadd(DEAD_LETTER_STREAM, fields)
                acks[stream].append(handle.entry_id)
                dead += 1
            else:
                backs[stream].append(handle.entry_id)
        for stream, ids in acks.items():
            tx.xack(stream, GROUP, *ids)
        for stream, ids in backs.items():
            tx.xclaim(
                stream, GROUP, HANDED_BACK, 0, ids_arg(ids), idle=HANDED_BACK_IDLE_MS, justid=True
            )
        for result in tx.execute(raise_on_error=False):
            if isinstance(result, redis.exceptions.ResponseError):
                # NOGROUP: the stream or group was deleted, and the entry with it.
                log.warning("Redis refused a settlement: %s", result)
        self._left_window([handle for handle, _outcome, _reason in batch])
        if acks:
            self._acked_since_trim = True
        handed_back = sum(len(ids) for ids in backs.values())
        if handed_back:
            log.info(
                "handed %d unstarted job(s) back (to %s: any worker claims them at once)",
                handed_back,
                HANDED_BACK,
            )
            self._claim_now.set()

    def _left_window(self, handles: Sequence[_Handle]) -> None:
        with self._ready:
            reopened = False
            for handle in handles:
                held = self._held[handle.priority]
                if handle.entry_id not in held:
                    continue
                if len(held) >= self._prefetch:
                    self._refill_until[handle.priority] = time.monotonic() + REFILL_GRACE_SECONDS
                    reopened = True
                del held[handle.entry_id]
            if reopened and self._held_back:
                # Only the job threads held back by a full window need to look again.
                self._ready.notify_all()
        self._room.set()

    def _renew(self, client: redis.Redis) -> None:
        """Reset the idle time of every entry this worker holds, so no one claims it."""
        idle_ms = int(self._renew_seconds * 1000)
        for priority in self._tiers:
            with self._ready:
                held = set(self._held[priority])
            if not held:
                continue
            stream = priority.queue
            # Only entries still pending at this consumer: one another worker claimed while
            # this one was cut off is its now, and must not be taken back.
            stale = client.xpending_range(
                stream,
                GROUP,
                "-",
                "+",
                len(held) + self._prefetch,
                consumername=self._consumer,
                idle=idle_ms,
            )
            ids = [i for i in (entry_id(p["message_id"]) for p in stale) if i in held]
            if ids:
                client.xclaim(stream, GROUP, self._consumer, idle_ms, ids_arg(ids), justid=True)

    def _trim(self, client: redis.Redis) -> None:
        if not self._acked_since_trim:
            return
        self._acked_since_trim = False
        for stream in JOB_STREAMS:
            trim_consumed(client, stream)

    def _finish(self, client: redis.Redis) -> None:
        """On close: hand back whatever is still held, then leave the group if nothing is left."""
        with self._ready:
            still_held = [
                _Handle(priority, identity, {})
                for priority, held in self._held.items()
                for identity in held
            ]
        if still_held:
            self._apply(client, [(handle, Settlement.REQUEUE, None) for handle in still_held])
        # XGROUP DELCONSUMER drops the consumer's pending entries for good, so the check that
        # none is left and the deletion run as one script: nothing can be delivered to this
        # name (another process under the same WORKER_ID) in between.
        try:
            left = client.eval(
                _LEAVE_IF_EMPTY, len(JOB_STREAMS), *JOB_STREAMS, GROUP, self._consumer
            )
        except redis.exceptions.ResponseError as exc:  # NOPERM for EVAL, NOGROUP...
            log.info("not leaving group %s: %s", GROUP, describe(exc))
            return
        if not left:
            log.info("not leaving group %s: entries are still pending at %s", GROUP, self._consumer)


_LEAVE_IF_EMPTY = """
for _, stream in ipairs(KEYS) do
    if #redis.call('XPENDING', stream, ARGV[1], '-', '+', 1, ARGV[2]) > 0 then
        return 0
    end
end
for _, stream in ipairs(KEYS) do
    redis.call('XGROUP', 'DELCONSUMER', stream, ARGV[1], ARGV[2])
end
return 1
"""
"""Delete consumer ARGV[2] of group ARGV[1] from each stream in KEYS if nothing is pending at
it in any of them; 1 if deleted. (Entries pending there that this process never knew of are
left for XAUTOCLAIM.)"""


def _close_quietly(client: redis.Redis) -> None:
    try:
        client.close()
    except Exception:
        log.debug("ignoring error while closing a Redis connection", exc_info=True)
