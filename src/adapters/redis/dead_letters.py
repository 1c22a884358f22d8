"""`job.dead-letter` on Redis for `dead-letters`: read the stream, replay entries, trim it."""

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis
import redis.exceptions

from python_worker.adapters.network import describe_network_error
from python_worker.adapters.redis.config import RedisConfig
from python_worker.adapters.redis.connection import (
    ATTEMPTS_FIELD,
    BODY_FIELD,
    DEAD_LETTER_STREAM,
    DEAD_LETTERED_AT_FIELD,
    EARLIER_ATTEMPTS_FIELD,
    JOB_STREAMS,
    ORIGINAL_ID_FIELD,
    ORIGINAL_QUEUE_FIELD,
    REASON_FIELD,
    WORKER_FIELD,
    Fields,
    describe,
    earlier_attempts,
    entries_of,
    next_id,
)
from python_worker.application.dead_letters import (
    RequeuePlan,
    Step,
    dead_lettered_message,
    merge_copies,
    plain,
)
from python_worker.application.ports import (
    DeadLetteredMessage,
    DeadLetters,
    DeadLetterSelection,
    DeadLettersUnavailable,
    RequeueReport,
)

EARLIER_DEATHS_FIELD = "x-dead-lettered-before"
"""Times an entry had been dead-lettered when a requeue put it back: the worker keeps an
entry's fields on its next dead-lettered copy, so `times` adds up (as on RabbitMQ)."""

SPENT_FIELDS = frozenset(
    {
        REASON_FIELD,
        WORKER_FIELD,
        ORIGINAL_QUEUE_FIELD,
        DEAD_LETTERED_AT_FIELD,
        ORIGINAL_ID_FIELD,
        EARLIER_DEATHS_FIELD,
        ATTEMPTS_FIELD,
        EARLIER_ATTEMPTS_FIELD,
    }
)
"""What a requeued entry leaves behind: the last refusal's account of itself. The job's
attempts so far go on as EARLIER_ATTEMPTS_FIELD (`_replay_fields`): the statuses of the replay
count on from them, so their idempotency keys are new."""

PAGE = 500


class RedisDeadLetters(DeadLetters):
    """The `job.dead-letter` stream. Reading it (XRANGE) changes nothing, so nothing needs
    handing back; each call reads up to the last entry that was there when it began.

    A requeue moves each entry with one MULTI/EXEC: XADD to the stream it came from, XDEL from
    job.dead-letter. Redis applies both or neither, so an entry is never in neither, nor (unlike
    a broker without transactions) in both.
    """

    def __init__(self, config: RedisConfig) -> None:
        self._config = config

    def count(self) -> int:
        with self._client() as client:
            return int(client.xlen(DEAD_LETTER_STREAM))

    def list(self, limit: int) -> Sequence[DeadLetteredMessage]:
        with self._client() as client:
            if limit <= 0:
                return []
            entries = entries_of(client.xrange(DEAD_LETTER_STREAM, "-", "+", count=limit))
        return merge_copies(_describe(fields) for _id, fields in entries)

    def find(self, key: str) -> Sequence[DeadLetteredMessage]:
        with self._client() as client:
            copies = [_describe(fields) for _id, fields in _read(client, _last(client))]
        return [message for message in merge_copies(copies) if message.answers_to(key)]

    def requeue(self, selection: DeadLetterSelection) -> RequeueReport:
        plan = RequeuePlan(selection, JOB_STREAMS, DEAD_LETTER_STREAM)
        with self._client() as client:
            try:
                for identity, fields in _read(client, _last(client)):
                    message = _describe(fields)
                    step = plan.step(message)
                    if step is Step.DROP_COPY:
                        # Its body is back on its stream already.
                        client.xdel(DEAD_LETTER_STREAM, identity)
                    elif step is Step.PUT_BACK:
                        assert message.queue is not None  # step() found it among JOB_STREAMS
                        tx = client.pipeline(transaction=True)
                        tx.xadd(message.queue, _replay_fields(fields, message.times))
                        tx.xdel(DEAD_LETTER_STREAM, identity)
                        tx.execute()
                        plan.moved(message)
            except (redis.exceptions.RedisError, OSError) as exc:
                raise DeadLettersUnavailable(
                    f"stopped after {plan.report.moved} message(s) were put back, the rest are "
                    f"still on {DEAD_LETTER_STREAM} ({self._config.where()}): {describe(exc)}"
                ) from exc
        return plan.finish()

    def purge(self) -> int:
        with self._client() as client:
            last = _last(client)
            if last is None:
                return 0
            # Exact MINID past the last entry seen: those go, one added meanwhile stays.
            return int(client.xtrim(DEAD_LETTER_STREAM, minid=next_id(last), approximate=False))

    @contextlib.contextmanager
    def _client(self) -> Iterator[redis.Redis]:
        where = self._config.where()
        client = self._config.client(socket_timeout=10)
        try:
            try:
                client.ping()
            except (redis.exceptions.RedisError, OSError) as exc:
                problem, fix = describe_network_error(exc, "Redis", "REDIS_CA_FILE")
                raise DeadLettersUnavailable(f"Redis at {where}: {problem} ({fix})") from exc
            yield client
        except (redis.exceptions.RedisError, OSError) as exc:
            raise DeadLettersUnavailable(f"lost Redis at {where}: {describe(exc)}") from exc
        finally:
            client.close()


def _last(client: redis.Redis) -> str | None:
    """The newest entry's id now: a call reads no further."""
    newest = entries_of(client.xrevrange(DEAD_LETTER_STREAM, "+", "-", count=1))
    return newest[0][0] if newest else None


def _read(client: redis.Redis, last: str | None) -> Iterator[tuple[str, Fields]]:
    """Each entry up to `last`, oldest first, a page at a time."""
    if last is None:
        return
    start = "-"
    while True:
        page = entries_of(client.xrange(DEAD_LETTER_STREAM, start, last, count=PAGE))
        yield from page
        if len(page) < PAGE:
            return
        start = "(" + page[-1][0]


@dataclass(frozen=True)
class _Fields:
    """An entry's fields as text where they are text, for reading the worker's account."""

    raw: Mapping[bytes, bytes]

    def text(self, name: str) -> str | None:
        value = self.raw.get(name.encode())
        return value.decode("utf-8", errors="backslashreplace") if value else None


def _describe(fields: Mapping[bytes, bytes]) -> DeadLetteredMessage:
    found = _Fields(fields)
    earlier = found.text(EARLIER_DEATHS_FIELD)
    headers = {
        name.decode("utf-8", errors="backslashreplace"): value
        for name, value in fields.items()
        if name != BODY_FIELD.encode()
    }
    return dead_lettered_message(
        fields.get(BODY_FIELD.encode(), b""),
        queue=found.text(ORIGINAL_QUEUE_FIELD),
        reason=found.text(REASON_FIELD) or "(no reason given)",
        dead_lettered_at=found.text(DEAD_LETTERED_AT_FIELD),
        worker_id=found.text(WORKER_FIELD),
        times=(int(earlier) if earlier and earlier.isdigit() else 0) + 1,
        headers=plain(headers),
    )


def _replay_fields(fields: Mapping[bytes, bytes], times: int) -> dict[Any, Any]:
    """A fresh entry: the original fields, saying how often it was dead-lettered before."""
    kept: dict[Any, Any] = {
        name: value
        for name, value in fields.items()
        if name.decode(errors="replace") not in SPENT_FIELDS
    }
    kept[EARLIER_DEATHS_FIELD] = str(times)
    recorded = fields.get(ATTEMPTS_FIELD.encode(), b"")
    kept[EARLIER_ATTEMPTS_FIELD] = (
        recorded.decode() if recorded.isdigit() else str(earlier_attempts(fields) + 1)
    )
    return kept
