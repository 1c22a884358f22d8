"""The ledger: publishes uniquely identified jobs, remembers them, and checks nothing went astray.

Every job the ledger publishes gets a unique id and is recorded with what should become of it:

- a good job ends with exactly one final status per idempotency key at the status API (`running`
  first), normally `completed`; a redelivered job may get another final status with a higher
  attempt, never the same `Idempotency-Key` twice;
- a bad message (or a job whose handler must fail) ends in `job.dead-letter` carrying the
  expected reason and its original queue in the worker's headers (contract §3; or, where the
  worker could not publish that copy, an `x-death` reason `rejected`), and, where the worker can
  read its id, a `failed` status whose `errorMessage` carries the expected reason (otherwise the
  reason must show in the worker log).

`wait_until_settled(timeout)` waits until that could be true; `assert_holds()` checks it, at the
stand-in API and in the queues, and fails with a readable report:

    lost        confirmed, no final status, not in job.dead-letter          must be 0
    unexpected  a status for a job the ledger never published               must be 0
    duplicates  the same idempotency key on two different final statuses    must be 0
                (the very same update posted again -- a retry whose answer was lost, a re-report
                of a redelivered job that had finished -- is listed as "re-posted (allowed)";
                `strict_keys=True` counts it as a duplicate too)
    queues      job.high|medium|low with messages ready or unacknowledged   must be 0
    dead letter exactly the bad messages (bodies compared), each with its reason

Publishing uses publisher confirms (and `mandatory`): a message counts as *confirmed* only once
the broker took responsibility for it. A publish interrupted by a broker outage has an unknown
fate; such a job is "unconfirmed": it may or may not show up, and either is fine.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pika
import pika.exceptions

from devtools.stand_in_api import Received, StandInApi
from python_worker.adapters.rabbitmq.connection import (
    DEAD_LETTER_QUEUE,
    EXCHANGE,
    JOB_QUEUES,
    ORIGINAL_QUEUE_HEADER,
    REASON_HEADER,
    BrokerConfig,
    declare_topology,
)
from tests.support.rabbitmq_node import Broker

FINAL = ("completed", "failed")
# README: the job id in an Idempotency-Key is percent-encoded beyond printable ASCII, space, `%`.
_KEY_SAFE = "".join(chr(code) for code in range(0x21, 0x7F) if chr(code) != "%")
_EXAMPLES = 8  # per kind of problem in a report


@dataclass
class Entry:
    """One published message and what should become of it."""

    key: str  # the ledger's own handle: the job id, or `bad-N` for a message without one
    queue: str
    body: bytes
    job_id: str | None  # the id the worker can read (None: it must not report a status)
    final: str | None  # "completed" / "failed" / None (no status expected)
    dead_letter: bool
    reason: str | None = None  # expected in errorMessage (or, without a job id, in the log)
    result: dict[str, Any] | None = None  # expected subset of a completed job's result
    confirmed: bool = False


@dataclass
class Settledness:
    """What the last look at the API and the queues found."""

    pending: list[str] = field(default_factory=list)
    queues_busy: dict[str, tuple[int, int]] = field(default_factory=dict)
    dead_letter_count: int | None = None

    def settled(self, expected_dead_letters: int) -> bool:
        # At least: a bad message can be dead-lettered twice when a connection drops between
        # the worker's confirmed copy and its ack; `problems` tells copies from strangers.
        return (
            not self.pending
            and not self.queues_busy
            and self.dead_letter_count is not None
            and self.dead_letter_count >= expected_dead_letters
        )


def mixed_job(n: int, job_id: str) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
    """Job number `n` of a mix of every job type and priority: (queue, job, expected result)."""
    queue = JOB_QUEUES[n % 3]
    a, b = n % 97, n % 13
    kinds: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = [
        ("sum", {"numbers": [a, b, 2.5]}, {"operation": "sum", "value": a + b + 2.5}),
        ("calculate", {"operation": "statistics", "count": 400, "seed": n}, None),
        ("sort", {"numbers": [b, a, 5], "order": "desc"}, {"value": sorted([b, a, 5])[::-1]}),
        ("aggregate", {"numbers": [a, b]}, {"count": 2, "min": min(a, b), "max": max(a, b)}),
        ("average", {"numbers": [a, a + 2]}, {"value": a + 1}),
        ("uppercase", {"data": {"w": f"job {n}", "l": ["x", {"y": "z"}]}}, None),
        (
            "transform",
            {"operation": "normalize", "data": {"s": f"  \uff2a\uff4f\uff42   {n} "}},
            None,
        ),
        ("filter", {"data": {"a": n, "b": None, "c": []}}, {"data": {"a": n}}),
        ("reverse", {"data": {"s": "abc", "l": [1, 2]}}, {"data": {"s": "cba", "l": [2, 1]}}),
        ("email", {"value": f"user{n}@example.com"}, {"valid": True}),
        ("phone", {"value": "+49 30 1234567"}, {"valid": True}),
        ("regex", {"value": f"ORD-{n:06d}", "pattern": "ORD-[0-9]+"}, {"valid": True}),
        ("range", {"value": a, "min": 0, "max": 50}, {"valid": a <= 50}),
        ("validate", {"type": "length", "value": "x" * b, "min": 1}, {"valid": b >= 1}),
        ("max", {"numbers": [a, b, -1]}, {"value": max(a, b)}),
        ("calculate", {"operation": "sort", "count": 2000, "seed": n}, None),
    ]
    job_type, payload, result = kinds[n % len(kinds)]
    return queue, {"id": job_id, "type": job_type, "payload": payload}, result


def process_rss_mib(pid: int) -> float | None:
    """Resident set size (VmRSS) of a process in MiB, None if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _excerpt(body: bytes, limit: int = 80) -> str:
    text = repr(body[:limit])
    return text + (f"… ({len(body)} bytes)" if len(body) > limit else "")


def _header_text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class Ledger:
    """Publishes jobs with confirms, records them, and checks the outcome (see module doc)."""

    def __init__(
        self,
        broker: Broker,
        api: StandInApi,
        *,
        prefix: str = "L",
        logs: Callable[[], str] | None = None,
        strict_keys: bool = False,
    ) -> None:
        self.broker = broker
        self.strict_keys = strict_keys
        self.api = api
        self._prefix = prefix
        self._logs = logs
        self._entries: dict[str, Entry] = {}
        self._lock = threading.Lock()
        self._numbers = itertools.count()
        self._bad_numbers = itertools.count()
        self._connection: pika.BlockingConnection | None = None
        self._channel: Any = None
        self._publish_lock = threading.Lock()  # pika channels are not thread-safe
        self._background: threading.Thread | None = None
        self._stop_background = threading.Event()
        self.publish_failures = 0
        self.last: Settledness = Settledness()

    # -- publishing ----------------------------------------------------------------------------

    def publish_jobs(self, count: int) -> int:
        """Publish `count` good jobs of the mix now; returns how many the broker confirmed."""
        return sum(self.publish_next() for _ in range(count))

    def publish_next(self) -> bool:
        """Publish the next good job of the mix."""
        n = next(self._numbers)
        queue, job, result = mixed_job(n, f"{self._prefix}-{n}")
        return self.publish_job(queue, job, result=result)

    def publish_job(
        self, queue: str, job: dict[str, Any], *, result: dict[str, Any] | None = None
    ) -> bool:
        """Publish one good job that must end `completed` (with `result` as a subset)."""
        entry = Entry(
            key=str(job["id"]),
            queue=queue,
            body=json.dumps(job).encode(),
            job_id=str(job["id"]),
            final="completed",
            dead_letter=False,
            result=result,
        )
        return self._publish(entry)

    def publish_failing(self, queue: str, job: dict[str, Any], reason: str) -> bool:
        """Publish a readable job whose handler must fail with `reason` (so: dead-lettered)."""
        body = json.dumps(job).encode()
        return self.publish_bad(queue, body, reason, job_id=str(job["id"]))

    def publish_bad(
        self, queue: str, body: bytes | dict[str, Any], reason: str, *, job_id: str | None = None
    ) -> bool:
        """Publish a message that must be dead-lettered.

        With `job_id`, the worker must also report a `failed` status for that id whose
        errorMessage contains `reason`; without, no status may mention it and `reason` must
        show in the worker log (when the ledger was given `logs`).
        """
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        key = job_id or f"{self._prefix}-bad-{next(self._bad_numbers)}"
        entry = Entry(
            key=key,
            queue=queue,
            body=raw,
            job_id=job_id,
            final="failed" if job_id else None,
            dead_letter=True,
            reason=reason,
        )
        return self._publish(entry)

    def _publish(self, entry: Entry) -> bool:
        with self._lock:
            if entry.key in self._entries:
                raise ValueError(f"job id {entry.key!r} was already published by this ledger")
            self._entries[entry.key] = entry
        with self._publish_lock:
            if not self._send(entry):
                # Unknown fate: the broker may or may not have it. Start afresh next time.
                self.publish_failures += 1
                self._drop_connection()
                return False
        with self._lock:
            entry.confirmed = True
        return True

    def _send(self, entry: Entry) -> bool:
        """Publish one entry, confirmed; False when its fate is unknown. (A broker-specific
        ledger, tests/support/redis_ledger.py, sends its own way.)"""
        try:
            channel = self._open_channel()
            channel.basic_publish(
                EXCHANGE,
                entry.queue,
                entry.body,
                properties=pika.BasicProperties(delivery_mode=2, content_type="application/json"),
                mandatory=True,
            )
        except (pika.exceptions.AMQPError, OSError):
            return False
        return True

    def _open_channel(self) -> Any:
        if self._channel is not None and self._channel.is_open:
            return self._channel
        self._drop_connection()
        connection = self.broker.connect()
        declare_topology(connection, BrokerConfig(hosts=[self.broker.host], port=self.broker.port))
        channel = connection.channel()
        channel.confirm_delivery()
        self._connection, self._channel = connection, channel
        return channel

    def _drop_connection(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()

    def _wait_for_broker(self, stop: threading.Event) -> bool:
        """Block until a channel opens (retrying every 0.5 s); False once `stop` is set."""
        while not stop.is_set():
            with self._publish_lock:
                try:
                    self._open_channel()
                    return True
                except (pika.exceptions.AMQPError, OSError):
                    self._drop_connection()
            stop.wait(0.5)
        return False

    def start_background(self, count: int | None, per_second: float = 40.0) -> None:
        """Publish good jobs of the mix from a thread, `per_second`, `count` in all (None: until
        `stop_background`). While the broker is unreachable it waits rather than burn jobs."""
        self._stop_background.clear()

        def run() -> None:
            published = 0
            pause = 1.0 / per_second
            while (count is None or published < count) and not self._stop_background.is_set():
                if not self._wait_for_broker(self._stop_background):
                    return
                self.publish_next()
                published += 1
                self._stop_background.wait(pause)

        self._background = threading.Thread(target=run, name="ledger-publisher", daemon=True)
        self._background.start()

    def stop_background(self, timeout: float = 120.0) -> None:
        """Stop the background publisher (it finishes the message in hand)."""
        self._stop_background.set()
        self.join_background(timeout)

    def join_background(self, timeout: float = 120.0) -> None:
        """Wait for the background publisher to have published its `count`."""
        if self._background is not None:
            self._background.join(timeout)
            if self._background.is_alive():
                raise TimeoutError("the ledger's background publisher did not finish in time")

    def close(self) -> None:
        self._stop_background.set()
        if self._background is not None:
            self._background.join(10)
        with self._publish_lock:
            self._drop_connection()

    # -- what is known -------------------------------------------------------------------------

    @property
    def entries(self) -> list[Entry]:
        with self._lock:
            return list(self._entries.values())

    def counts(self) -> dict[str, int]:
        """Published / confirmed / final statuses seen / expected dead letters, for progress."""
        entries = self.entries
        finals = self.api.final_statuses()
        return {
            "published": len(entries),
            "confirmed": sum(e.confirmed for e in entries),
            "unconfirmed": sum(not e.confirmed for e in entries),
            "bad": sum(e.dead_letter and e.confirmed for e in entries),
            "finals": sum(1 for e in entries if e.job_id in finals),
            "statuses": self.api.status_count,
        }

    def pending(self) -> list[str]:
        """Confirmed entries that still wait for their final status."""
        finals = self.api.final_statuses()
        return [e.key for e in self.entries if e.confirmed and e.final and e.job_id not in finals]

    def wait_for_final(self, job_id: str, timeout: float = 30.0) -> Received | None:
        """The final status of `job_id` once it arrived, None after `timeout`."""
        self.api.wait_for(lambda: job_id in self.api.final_statuses(), timeout)
        return self.api.final_statuses().get(job_id)

    def look(self) -> Settledness:
        """One look at the API and the queues (a few rabbitmqctl calls: ~1 s on a busy box)."""
        seen = Settledness(pending=self.pending())
        try:
            counts = self._queue_counts()
        except (RuntimeError, OSError, pika.exceptions.AMQPError) as exc:
            # The broker is away for a moment: that is not settled.
            seen.queues_busy["?"] = (-1, -1)
            seen.pending.append(f"(queues unreadable: {type(exc).__name__})")
            self.last = seen
            return seen
        for queue in JOB_QUEUES:
            ready, unacked = counts.get(queue, (0, 0))
            if ready or unacked:
                seen.queues_busy[queue] = (ready, unacked)
        seen.dead_letter_count = counts.get(DEAD_LETTER_QUEUE, (None, 0))[0]
        self.last = seen
        return seen

    def expected_dead_letters(self) -> int:
        return sum(1 for e in self.entries if e.dead_letter and e.confirmed)

    def wait_until_settled(self, timeout: float) -> bool:
        """Wait (background publisher included) until every confirmed job got its final status,
        the job queues are empty and job.dead-letter holds as many messages as expected — seen
        twice in a row, a second apart, so late stragglers have a chance to show."""
        deadline = time.monotonic() + timeout
        if self._background is not None:
            self._background.join(max(1.0, deadline - time.monotonic()))
        in_a_row = 0
        while time.monotonic() < deadline:
            if self.look().settled(self.expected_dead_letters()):
                in_a_row += 1
                if in_a_row >= 2:
                    return True
            else:
                in_a_row = 0
            time.sleep(1.0)
        return False

    def _queue_counts(self) -> dict[str, tuple[int, int]]:
        list_queues = getattr(self.broker, "list_queues", None)
        if list_queues is not None:
            return {
                name: (c.messages_ready, c.messages_unacknowledged)
                for name, c in list_queues().items()
            }
        counts = {}
        for queue in (*JOB_QUEUES, DEAD_LETTER_QUEUE):
            c = self.broker.queue_counts(queue)
            if c is not None:
                counts[queue] = (c.messages_ready, c.messages_unacknowledged)
        return counts

    def read_dead_letters(self) -> list[tuple[bytes, dict[str, Any]]]:
        """Every message in job.dead-letter (body, headers), read with basic_get and left there."""
        found: list[tuple[bytes, dict[str, Any]]] = []
        connection = self.broker.connect()
        try:
            channel = connection.channel()
            while True:
                method, properties, body = channel.basic_get(DEAD_LETTER_QUEUE, auto_ack=False)
                if method is None:
                    break
                found.append((body, dict(properties.headers or {})))
        finally:
            # Closing without acking puts every message back.
            with contextlib.suppress(Exception):
                connection.close()
        return found

    # -- the verdict ---------------------------------------------------------------------------

    def problems(self) -> dict[str, list[str]]:
        """Everything wrong right now, by kind (empty lists: the ledger holds)."""
        entries = self.entries
        by_id = {e.job_id: e for e in entries if e.job_id is not None}
        statuses = self.api.statuses
        dead = self.read_dead_letters()
        dead_bodies = collections.Counter(body for body, _ in dead)
        found: dict[str, list[str]] = collections.defaultdict(list)

        per_job: dict[str, list[Received]] = collections.defaultdict(list)
        for status in statuses:
            per_job[status.job_id].append(status)
            if status.job_id not in by_id:
                found["unexpected"].append(
                    f"status for a job never published: {status.idempotency_key}"
                )
                continue
            body = status.body
            job_id = urllib.parse.quote(str(body.get("jobId")), safe=_KEY_SAFE)
            wanted = f"{job_id}:{body.get('status')}:{body.get('attempt')}"
            if status.idempotency_key != wanted:
                found["bad key"].append(
                    f"Idempotency-Key {status.idempotency_key!r} for a body saying {wanted!r}"
                )
        by_key: dict[str | None, list[Received]] = collections.defaultdict(list)
        for status in statuses:
            if status.status in FINAL:
                by_key[status.idempotency_key].append(status)
        for key, posts in by_key.items():
            if len(posts) > 1 and len({p.raw for p in posts}) == 1 and not self.strict_keys:
                # The very same update again (a retry whose answer got lost, or a re-report of
                # a redelivered job that already finished here): the key lets the API drop it.
                found["re-posted (allowed)"].append(f"{key} posted {len(posts)} times")
            elif len(posts) > 1:
                found["duplicates"].append(
                    f"{key} posted {len(posts)} times: "
                    + "; ".join(
                        f"{p.body.get('workerId')} at {p.body.get('timestamp')} (arrived "
                        f"{time.strftime('%H:%M:%S', time.localtime(p.at))}"
                        f"{f'{p.at % 1:.3f}'[1:]}, {p.body.get('durationMs')} ms)"
                        for p in posts
                    )
                )

        for entry in entries:
            mine = per_job.get(entry.job_id or "", [])
            finals = [s for s in mine if s.status in FINAL]
            in_dead_letter = dead_bodies[entry.body] > 0
            if entry.final is None:
                if entry.confirmed and not in_dead_letter:
                    found["lost"].append(f"{entry.key}: bad message not in job.dead-letter")
                continue
            if not finals:
                if entry.confirmed:
                    where = "in job.dead-letter" if in_dead_letter else "not in job.dead-letter"
                    found["lost"].append(f"{entry.key}: no final status, {where}")
                continue
            self._check_outcome(entry, mine, finals, in_dead_letter, found)

        self._check_dead_letters(entries, dead, found)
        self._check_log_reasons(entries, found)
        counts = self._queue_counts()
        for queue in JOB_QUEUES:
            ready, unacked = counts.get(queue, (0, 0))
            if ready or unacked:
                found["queues"].append(f"{queue}: {ready} ready, {unacked} unacknowledged")
        return {kind: items for kind, items in found.items() if items}

    @staticmethod
    def failing(problems: dict[str, list[str]]) -> dict[str, list[str]]:
        """The problems that break the ledger (re-posts of an identical update do not)."""
        return {kind: items for kind, items in problems.items() if "(allowed)" not in kind}

    def _check_outcome(
        self,
        entry: Entry,
        mine: list[Received],
        finals: list[Received],
        in_dead_letter: bool,
        found: dict[str, list[str]],
    ) -> None:
        outcomes = sorted({s.status for s in finals})
        if outcomes != [entry.final]:
            detail = "; ".join(
                f"{s.status}: {s.body.get('errorMessage') or s.body.get('result')}" for s in finals
            )
            found["wrong outcome"].append(f"{entry.key}: wanted {entry.final}, got {detail}")
        if entry.reason is not None and entry.final == "failed":
            messages = [str(s.body.get("errorMessage")) for s in finals]
            if not any(entry.reason in m for m in messages):
                found["wrong reason"].append(
                    f"{entry.key}: errorMessage {messages} lacks {entry.reason!r}"
                )
        if entry.result is not None:
            for status in finals:
                result = status.body.get("result") or {}
                off = {k: result.get(k) for k, v in entry.result.items() if result.get(k) != v}
                if off:
                    found["wrong result"].append(
                        f"{entry.key}: {off} instead of {entry.result} (attempt "
                        f"{status.body.get('attempt')})"
                    )
        if entry.final == "completed":
            for status in finals:
                attempt = status.body.get("attempt")
                before = mine[: mine.index(status)]
                if not any(
                    s.status == "running" and s.body.get("attempt") == attempt for s in before
                ):
                    found["order"].append(
                        f"{entry.key}: {status.idempotency_key} without an earlier running status"
                    )
            if in_dead_letter:
                found["dead letter"].append(f"{entry.key}: a good job is in job.dead-letter")

    def _check_dead_letters(
        self,
        entries: list[Entry],
        dead: list[tuple[bytes, dict[str, Any]]],
        found: dict[str, list[str]],
    ) -> None:
        expected = collections.Counter(e.body for e in entries if e.dead_letter and e.confirmed)
        maybe = collections.Counter(e.body for e in entries if e.dead_letter and not e.confirmed)
        queue_of = {e.body: e.queue for e in entries}
        actual = collections.Counter(body for body, _ in dead)
        for body, count in (actual - expected - maybe).items():
            if body in expected or body in maybe:
                # The worker's copy was confirmed but the ack lost with the connection: the
                # original came back and was refused again (at least once, contract §3).
                found["dead-lettered again (allowed)"].append(
                    f"{count} more cop{'y' if count == 1 else 'ies'}: {_excerpt(body)}"
                )
                continue
            found["dead letter"].append(f"{count} unexpected dead letter(s): {_excerpt(body)}")
        for body, count in (expected - actual).items():
            found["dead letter"].append(
                f"{count} expected dead letter(s) missing: {_excerpt(body)}"
            )
        reason_of = {e.body: e.reason for e in entries if e.dead_letter}
        for body, headers in dead:
            if REASON_HEADER in headers:
                # Dead-lettered by the worker (contract §3): why, and where from, travel along.
                reason = _header_text(headers.get(REASON_HEADER))
                queue = _header_text(headers.get(ORIGINAL_QUEUE_HEADER))
                expected_reason = reason_of.get(body)
                if expected_reason and expected_reason not in reason:
                    found["dead letter"].append(
                        f"reason {reason!r}, expected {expected_reason!r}: {_excerpt(body)}"
                    )
                if body in queue_of and queue != queue_of[body]:
                    found["dead letter"].append(
                        f"original queue {queue!r}, published to {queue_of[body]}: {_excerpt(body)}"
                    )
                continue
            # Rejected, so the broker dead-lettered it (the worker's copy could not be published).
            deaths = headers.get("x-death") or []
            reasons = [_header_text(d.get("reason")) for d in deaths]
            queues = [_header_text(d.get("queue")) for d in deaths]
            if "rejected" not in reasons:
                found["dead letter"].append(f"x-death reasons {reasons} for {_excerpt(body)}")
            elif body in queue_of and queue_of[body] not in queues:
                found["dead letter"].append(
                    f"x-death queues {queues}, published to {queue_of[body]}: {_excerpt(body)}"
                )

    def _check_log_reasons(self, entries: list[Entry], found: dict[str, list[str]]) -> None:
        if self._logs is None:
            return
        text = self._logs()
        for entry in entries:
            quiet = entry.dead_letter and entry.job_id is None and entry.confirmed
            if quiet and entry.reason and entry.reason not in text:
                found["wrong reason"].append(
                    f"{entry.key}: reason {entry.reason!r} not in the worker log "
                    f"({_excerpt(entry.body)})"
                )

    def report(self, problems: dict[str, list[str]] | None = None) -> str:
        """A readable summary: counts, the last look at the queues, and examples of each problem."""
        problems = self.problems() if problems is None else problems
        counts = self.counts()
        lines = [
            "ledger: " + ", ".join(f"{name} {value}" for name, value in counts.items()),
            f"  publish failures (unknown fate): {self.publish_failures}",
            f"  last look: pending {len(self.last.pending)} {self.last.pending[:5]}, "
            f"busy queues {self.last.queues_busy}, dead letters {self.last.dead_letter_count} "
            f"of {self.expected_dead_letters()} expected",
        ]
        for kind in (
            "lost",
            "unexpected",
            "duplicates",
            "queues",
            "dead letter",
            "re-posted (allowed)",
            "dead-lettered again (allowed)",
        ):
            lines.append(f"  {kind:<20} {len(problems.get(kind, []))}")
        for kind, items in problems.items():
            lines.append(f"  -- {kind} ({len(items)}):")
            lines.extend(f"     {item}" for item in items[:_EXAMPLES])
            if len(items) > _EXAMPLES:
                lines.append(f"     … and {len(items) - _EXAMPLES} more")
        if not self.failing(problems):
            lines.append("  the ledger holds")
        return "\n".join(lines)

    def assert_holds(self) -> None:
        """Fail with `report()` unless nothing was lost, duplicated, misrouted or left behind."""
        problems = self.problems()
        report = self.report(problems)
        print(report)
        assert not self.failing(problems), "the ledger does not hold\n" + report


SETTLE_TIMEOUT = 240
"""Seconds a fault test waits for every job to settle after the last fault."""


def publish_bad_messages(ledger: Ledger) -> None:
    """A few messages that must end on the dead-letter queue, with and without a readable id."""
    ledger.publish_bad("job.high", b"{not json", "not valid UTF-8 JSON")
    ledger.publish_bad("job.medium", b'["an", "array"]', "a list, not a JSON object")
    ledger.publish_failing("job.low", {"id": "bad-type", "type": "teleport"}, "unknown job type")
    ledger.publish_failing(
        "job.medium",
        {"id": "bad-average", "type": "average", "payload": {"numbers": []}},
        "at least one number",
    )


def wait_for_finals(ledger: Ledger, count: int, timeout: float = 60) -> None:
    api = ledger.api
    assert api.wait_for(lambda: len(api.final_statuses()) >= count, timeout), (
        f"fewer than {count} jobs finished in {timeout}s\n{ledger.report()}"
    )


def settle_and_check(ledger: Ledger, timeout: float = SETTLE_TIMEOUT) -> None:
    settled = ledger.wait_until_settled(timeout)
    assert settled, f"not settled within {timeout}s\n{ledger.report()}"
    ledger.assert_holds()
