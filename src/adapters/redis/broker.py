"""Redis Streams as the worker's broker: its source, publisher, preflight and dead letters."""

from typing import TYPE_CHECKING

from python_worker.adapters.redis.config import RedisConfig
from python_worker.adapters.redis.preflight import RedisPreflight
from python_worker.adapters.redis.publisher import RedisPublisher
from python_worker.adapters.redis.source import RedisSource
from python_worker.application.ports import Broker

if TYPE_CHECKING:
    from python_worker.adapters.redis.dead_letters import RedisDeadLetters


class RedisBroker(Broker):
    """One Redis server as `config` describes it.

    The source is made on first use and then kept: it opens its connections and starts its
    threads, which `publish` and `check` never need.
    """

    def __init__(self, config: RedisConfig, prefetch: int, worker_id: str) -> None:
        self._config = config
        self._prefetch = prefetch
        self._worker_id = worker_id
        self._source: RedisSource | None = None

    def describe(self) -> str:
        return f"Redis Streams {self._config.where()}"

    def source(self) -> RedisSource:
        if self._source is None:
            self._source = RedisSource(self._config, self._prefetch, self._worker_id)
        return self._source

    def publisher(self) -> RedisPublisher:
        return RedisPublisher(self._config)

    def preflight(self) -> RedisPreflight:
        return RedisPreflight(self._config)

    def dead_letters(self) -> "RedisDeadLetters":
        # Imported when asked for: a worker never reads its dead letters (bench/: RSS).
        from python_worker.adapters.redis.dead_letters import RedisDeadLetters

        return RedisDeadLetters(self._config)
