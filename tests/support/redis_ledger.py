"""The ledger (tests/support/ledger.py) on Redis Streams: the same bookkeeping, XADD to publish."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import redis
import redis.exceptions

from devtools.stand_in_api import StandInApi
from python_worker.adapters.redis.connection import BODY_FIELD, DEAD_LETTER_STREAM, entries_of
from tests.support.ledger import Entry, Ledger
from tests.support.redis_server import RedisServer

REDIS_ERRORS = (redis.exceptions.RedisError, OSError)


class RedisLedger(Ledger):
    """Publishes with XADD (its reply is the confirmation) and reads the streams for the verdict.

    "Queues busy" are the job streams with entries not yet delivered to the group or still
    pending in it (acknowledged entries a worker has not trimmed yet do not count); the dead
    letters are the entries of job.dead-letter, their fields read as the RabbitMQ headers of
    the same names.
    """

    def __init__(
        self,
        server: RedisServer,
        api: StandInApi,
        *,
        prefix: str = "L",
        logs: Callable[[], str] | None = None,
        strict_keys: bool = False,
    ) -> None:
        super().__init__(server, api, prefix=prefix, logs=logs, strict_keys=strict_keys)  # type: ignore[arg-type]
        self.server = server
        self._client: redis.Redis | None = None
        self._client_lock = threading.Lock()

    def _send(self, entry: Entry) -> bool:
        try:
            self._open_channel().xadd(entry.queue, {BODY_FIELD: entry.body})
        except REDIS_ERRORS:
            return False
        return True

    def _open_channel(self) -> redis.Redis:
        with self._client_lock:
            if self._client is None:
                self.server.create_topology()
                self._client = self.server.client()
            return self._client

    def _drop_connection(self) -> None:
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def _wait_for_broker(self, stop: threading.Event) -> bool:
        while not stop.is_set():
            with self._publish_lock:
                try:
                    self._open_channel().ping()
                    return True
                except REDIS_ERRORS:
                    self._drop_connection()
            stop.wait(0.5)
        return False

    def _queue_counts(self) -> dict[str, tuple[int, int]]:
        try:
            counts = dict(self.server.stream_counts())
            client = self.server.client()
            try:
                counts[DEAD_LETTER_STREAM] = (int(client.xlen(DEAD_LETTER_STREAM)), 0)
            finally:
                client.close()
        except REDIS_ERRORS as exc:
            # `look` takes a RuntimeError for "the broker is away for a moment".
            raise RuntimeError(f"Redis unreadable: {exc}") from exc
        return counts

    def read_dead_letters(self) -> list[tuple[bytes, dict[str, Any]]]:
        client = self.server.client()
        try:
            entries = entries_of(client.xrange(DEAD_LETTER_STREAM))
        finally:
            client.close()
        found = []
        for _identity, fields in entries:
            headers = {name.decode(): value for name, value in fields.items()}
            found.append((fields.get(BODY_FIELD.encode(), b""), headers))
        return found
