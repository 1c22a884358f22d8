"""Connection parameters and the Redis Streams layout, shared by the source, publisher and checks.

The layout mirrors contract §3 with streams: one stream per priority (`job.high`, `job.medium`,
`job.low`), one consumer group every worker joins, and the `job.dead-letter` stream. An entry's
job is its `body` field; a dead-lettered entry keeps its fields and gains the same four fields
as RabbitMQ's dead-letter headers.
"""

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import redis
import redis.exceptions

from python_worker.application.dead_letters import iso_utc
from python_worker.domain.jobs import Priority

log = logging.getLogger(__name__)

JOB_STREAMS = [priority.queue for priority in Priority.by_rank()]
DEAD_LETTER_STREAM = "job.dead-letter"
GROUP = "python-worker"
"""The one consumer group every worker reads through: each entry goes to one of them."""
HANDED_BACK = "handed-back"
"""The consumer entries are parked on when a worker hands them back unstarted: idle for a day,
so the next XAUTOCLAIM of any worker takes them at once. Never a worker's own name."""
BODY_FIELD = "body"

REASON_FIELD = "x-worker-reason"
WORKER_FIELD = "x-worker-id"
ORIGINAL_QUEUE_FIELD = "x-original-queue"
DEAD_LETTERED_AT_FIELD = "x-dead-lettered-at"
"""What an entry the worker refused carries on job.dead-letter: RabbitMQ's header names."""
ORIGINAL_ID_FIELD = "x-original-id"
ATTEMPTS_FIELD = "x-worker-attempts"
EARLIER_ATTEMPTS_FIELD = "x-earlier-attempts"
"""On an entry `dead-letters requeue` put back: the job's attempts before (Delivery), from
ATTEMPTS_FIELD, as on RabbitMQ (docs/contract.md §3)."""
"""The entry's id in the stream it came from (Redis has no message id of its own)."""

MIN_VERSION = (6, 2)
"""XAUTOCLAIM, XPENDING IDLE and XTRIM MINID arrived in Redis 6.2."""


def dead_letter_fields(
    reason: str | None,
    worker_id: str,
    stream: str,
    entry_id: str,
    when: datetime,
    attempts: int = 1,
) -> dict[str, str]:
    """The fields that say why, by whom, from where, when and after how many attempts at the
    job (replays included) an entry was dead-lettered."""
    return {
        REASON_FIELD: reason or "(no reason given)",
        WORKER_FIELD: worker_id,
        ORIGINAL_QUEUE_FIELD: stream,
        DEAD_LETTERED_AT_FIELD: iso_utc(when),
        ORIGINAL_ID_FIELD: entry_id,
        ATTEMPTS_FIELD: str(attempts),
    }


def create_topology(client: "redis.Redis") -> None:
    """Create the streams and the consumer group; idempotent, and safe from many workers at once.

    The group starts at the stream's beginning (id 0), so jobs published before the first
    worker ever started are not skipped. The dead-letter stream gets the group too, at its end
    (`$`): XGROUP CREATE ... MKSTREAM is the one way to create an empty stream; nothing reads
    through that group.
    """
    for stream in JOB_STREAMS:
        _create_group(client, stream, "0")
    _create_group(client, DEAD_LETTER_STREAM, "$")


def _create_group(client: "redis.Redis", stream: str, start: str) -> None:
    try:
        client.xgroup_create(stream, GROUP, id=start, mkstream=True)
    except redis.exceptions.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


Fields = dict[bytes, bytes]
"""A stream entry's fields as redis-py returns them (no decoding: a body is bytes)."""


def earlier_attempts(fields: Mapping[bytes, bytes]) -> int:
    """The job's attempts before a requeue put this entry back (0 for any other entry)."""
    text = fields.get(EARLIER_ATTEMPTS_FIELD.encode(), b"0")
    return int(text) if text.isdigit() else 0


def entry_id(value: Any) -> str:
    """A stream id (or name) from a reply, as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def entries_of(reply: Any) -> list[tuple[str, Fields]]:
    """(id, fields) of each entry of an XRANGE, XCLAIM or XAUTOCLAIM reply; an entry deleted
    meanwhile (no fields) is left out."""
    return [(entry_id(identity), fields) for identity, fields in reply or [] if fields is not None]


def ids_arg(ids: list[str]) -> list[Any]:
    """Entry ids as redis-py's XCLAIM wants its (invariantly typed) list."""
    return list(ids)


def next_id(value: str) -> str:
    """The smallest stream id after `value` (`ms-seq`)."""
    ms, _, seq = value.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


def id_key(value: str) -> tuple[int, int]:
    """A stream id as numbers, for comparing two ids."""
    ms, _, seq = value.partition("-")
    return int(ms), int(seq or 0)


def trim_consumed(client: "redis.Redis", stream: str) -> int:
    """Trim `stream` below the oldest entry some group may still need; returns entries removed.

    An entry below every group's last-delivered id that no group holds pending has been
    acknowledged: nothing will read it again. Trimming only below that (XTRIM MINID) bounds the
    stream without ever dropping a job not yet delivered or not yet acknowledged. Both bounds
    only move up, so reading them in two steps is safe. A stream with no group yet is left whole.
    """
    groups = client.xinfo_groups(stream)
    if not groups:
        return 0
    bound: str | None = None
    for group in groups:
        name = entry_id(group["name"])
        last = entry_id(group["last-delivered-id"])
        limit = next_id(last)
        if group.get("pending"):
            summary = client.xpending(stream, name)
            oldest = summary.get("min")
            if oldest is not None and id_key(entry_id(oldest)) < id_key(limit):
                limit = entry_id(oldest)
        if bound is None or id_key(limit) < id_key(bound):
            bound = limit
    if bound is None or bound == "0-1":
        return 0
    # Approximate: Redis removes whole internal nodes only, cheaply; it never goes past MINID.
    removed: int = client.xtrim(stream, minid=bound, approximate=True)
    return removed


def describe(exc: BaseException) -> str:
    """An exception as one log-friendly line (redis-py's messages carry no password)."""
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text}"
