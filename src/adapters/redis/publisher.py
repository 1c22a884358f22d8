"""Publishes jobs to the priority streams with XADD; its reply, the entry's id, confirms it."""

import itertools
import logging
from collections.abc import Callable, Iterable

import redis
import redis.exceptions

from python_worker.adapters.redis.config import RedisConfig
from python_worker.adapters.redis.connection import (
    BODY_FIELD,
    JOB_STREAMS,
    create_topology,
    describe,
    trim_consumed,
)
from python_worker.application.ports import JobPublisher, PublishFailed, PublishReport
from python_worker.domain.jobs import Priority

log = logging.getLogger(__name__)

BATCH = 500
"""XADDs sent in one pipeline: one round trip for many jobs, each still answered on its own."""


class RedisPublisher(JobPublisher):
    """Adds job bodies to `job.high|medium|low`; a job counts only once Redis answered its id.

    An XADD's reply comes after Redis applied it (and, with `appendfsync always`, after it is
    on disk). The streams are created with the group first, so a job published before any
    worker ran is not skipped. Streams are bounded without dropping work: after publishing,
    entries every group has acknowledged are trimmed (XTRIM MINID), never more; no MAXLEN.
    """

    def __init__(self, config: RedisConfig) -> None:
        self._config = config

    def publish(
        self,
        messages: Iterable[tuple[Priority, bytes]],
        on_confirmed: Callable[[int], None] | None = None,
    ) -> PublishReport:
        report = PublishReport()
        client = self._config.client()
        try:
            try:
                create_topology(client)
            except (redis.exceptions.RedisError, OSError) as exc:
                raise PublishFailed(
                    f"Redis at {self._config.where()} unreachable: {describe(exc)}"
                ) from exc
            iterator = iter(messages)
            first = 0
            while batch := list(itertools.islice(iterator, BATCH)):
                self._send(client, batch, report, first, on_confirmed)
                first += len(batch)
            for stream in JOB_STREAMS:
                try:
                    trim_consumed(client, stream)
                except redis.exceptions.RedisError as exc:
                    log.info("could not trim %s: %s", stream, describe(exc))
        finally:
            client.close()
        return report

    def _send(
        self,
        client: redis.Redis,
        batch: list[tuple[Priority, bytes]],
        report: PublishReport,
        first: int,
        on_confirmed: Callable[[int], None] | None,
    ) -> None:
        pipe = client.pipeline(transaction=False)
        for priority, body in batch:
            pipe.xadd(priority.queue, {BODY_FIELD: body})
        try:
            replies = pipe.execute(raise_on_error=False)
        except (redis.exceptions.RedisError, OSError) as exc:
            # The connection broke mid-batch: some of these may have been added. Their fate is
            # unknown, so none is counted as confirmed.
            for priority, _body in batch:
                report.failures.append(f"{priority.queue}: no reply from Redis ({describe(exc)})")
            return
        for position, ((priority, _body), reply) in enumerate(
            zip(batch, replies, strict=True), start=first
        ):
            if isinstance(reply, Exception):
                report.failures.append(f"{priority.queue}: refused by Redis ({reply})")
            else:
                report.confirmed += 1
                if on_confirmed is not None:
                    on_confirmed(position)
