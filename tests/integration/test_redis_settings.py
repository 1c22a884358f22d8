"""The Redis settings: where the password goes, what a bad URL says, what WORKER_BROKER picks."""

from __future__ import annotations

import pytest

from python_worker.adapters.redis.broker import RedisBroker
from python_worker.bootstrap import ConfigurationError, build_container, load_settings

CANARY = "canary-redis-secret-19fd"


def test_keeps_the_password_out_of_the_url_it_logs_when_redis_url_carries_one() -> None:
    settings = load_settings(redis_url=f"rediss://worker:{CANARY}@redis.internal:6380/2")

    config = settings.redis_config()

    assert config.where() == "rediss://worker@redis.internal:6380/2"
    assert config.password == CANARY
    assert CANARY not in repr(config)
    assert CANARY in settings.secrets()


def test_takes_redis_password_over_the_one_in_the_url_when_both_are_given() -> None:
    settings = load_settings(
        redis_url="redis://:old-password@127.0.0.1:6379/0", redis_password=CANARY
    )

    assert settings.redis_config().password == CANARY


def test_refuses_a_url_that_is_not_redis_without_showing_it_when_it_carries_a_password() -> None:
    with pytest.raises(ConfigurationError) as refused:
        load_settings(redis_url=f"http://user:{CANARY}@redis.internal:6379/0")

    message = str(refused.value)
    assert "REDIS_URL" in message
    assert "must be a redis:// or rediss:// URL" in message
    assert CANARY not in message


def test_refuses_a_claim_idle_time_below_one_second() -> None:
    with pytest.raises(ConfigurationError, match="REDIS_CLAIM_IDLE_SECONDS"):
        load_settings(redis_claim_idle_seconds=0.5)


def test_picks_the_redis_broker_with_the_default_window_when_worker_broker_is_redis() -> None:
    settings = load_settings(worker_broker="redis", worker_capacity=7, status_max_in_flight=20)

    broker = build_container(settings).broker()

    assert isinstance(broker, RedisBroker)
    assert broker._prefetch == 7 + 20 + 10
