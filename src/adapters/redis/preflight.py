"""The Redis half of `python-worker check`: the server, its persistence, the streams, the ACL.

Every check is harmless: it creates the streams and the group as every worker does at start-up
(idempotent), reads their state, and runs each command the worker sends in a form that changes
nothing (an XADD with an id Redis refuses, an XACK of no entry...), to see whether the ACL lets
this user run it. It takes no entry and adds none.
"""

import logging
from collections.abc import Iterator
from typing import Any

import redis
import redis.exceptions

from python_worker.adapters.network import describe_network_error
from python_worker.adapters.redis.config import RedisConfig
from python_worker.adapters.redis.connection import (
    DEAD_LETTER_STREAM,
    GROUP,
    JOB_STREAMS,
    MIN_VERSION,
    create_topology,
    describe,
)
from python_worker.application.ports import CheckResult, Outcome, Preflight

log = logging.getLogger(__name__)

_PROBE = "python-worker-preflight"
# A consumer name no worker has; the probes leave it deleted.
PROBE_CONSUMER = "python-worker-preflight"
PROBE_IDLE_MS = 2**62
"""No entry was ever idle that long: an XAUTOCLAIM with it claims nothing."""


class RedisPreflight(Preflight):
    """The Redis checks for one `RedisConfig`."""

    def __init__(self, config: RedisConfig) -> None:
        self._config = config

    def checks(self) -> Iterator[CheckResult]:
        client = self._config.client(socket_timeout=5)
        try:
            result, version = _server(self._config, client)
            yield result
            if version is None:
                yield CheckResult(
                    Outcome.SKIP, "Redis streams, group and permissions not checked: not reachable"
                )
                return
            yield from _persistence(client)
            yield from _topology(self._config, client)
            yield _permissions(self._config, client)
        finally:
            client.close()


def acl_fix(config: RedisConfig) -> str:
    """The one command that grants what the worker needs (no password in it). EVAL runs one
    script, at a stop, that leaves the group only if nothing is pending at the worker; without
    it the worker's consumer stays behind, empty."""
    user = config.username or "default"
    return (
        f"grant {user} the stream commands on the job.* keys: ACL SETUSER {user} on ~job.* "
        "+@stream +multi +exec +ping +info +eval"
    )


def _name(config: RedisConfig) -> str:
    tls = " (TLS)" if config.tls else ""
    return f"Redis {config.where()}{tls}"


def _server(config: RedisConfig, client: redis.Redis) -> tuple[CheckResult, tuple[int, ...] | None]:
    name = _name(config)
    user = config.username or "default"
    try:
        client.ping()
        info = client.info("server")
    except redis.exceptions.AuthenticationError as exc:
        text = str(exc)
        if "required" in text.lower():
            return CheckResult(
                Outcome.FAIL,
                f"{name}: the server wants a password",
                "set REDIS_PASSWORD (or put it in REDIS_URL)",
            ), None
        return CheckResult(
            Outcome.FAIL,
            f"{name}: login refused for user {user!r}",
            f"check the user in REDIS_URL and REDIS_PASSWORD (on the server: ACL GETUSER {user})",
        ), None
    except redis.exceptions.ResponseError as exc:
        return CheckResult(
            Outcome.FAIL, f"{name}: refused ({exc})", "see the server's log and ACL LOG"
        ), None
    except (redis.exceptions.RedisError, OSError) as exc:
        host = config.where().split("@")[-1].split("//")[-1].split("/")[0]
        problem, fix = describe_network_error(exc, f"Redis on {host}", "REDIS_CA_FILE")
        return CheckResult(Outcome.FAIL, f"{name}: {problem}", fix), None
    text = str(info.get("redis_version", "0"))
    version = tuple(int(part) for part in text.split(".") if part.isdigit())
    if version < MIN_VERSION:
        wanted = ".".join(map(str, MIN_VERSION))
        return CheckResult(
            Outcome.FAIL,
            f"{name} reachable, but it is Redis {text}",
            f"upgrade to Redis {wanted} or newer (XAUTOCLAIM, XTRIM MINID)",
        ), None
    return CheckResult(Outcome.OK, f"{name} reachable, logged in as {user} (Redis {text})"), version


def _persistence(client: redis.Redis) -> Iterator[CheckResult]:
    try:
        persistence = client.info("persistence")
        memory = client.info("memory")
    except redis.exceptions.RedisError as exc:
        yield CheckResult(Outcome.SKIP, f"Redis persistence not checked ({describe(exc)})")
        return
    fsync = _config_value(client, "appendfsync")
    if not persistence.get("aof_enabled"):
        yield CheckResult(
            Outcome.WARN,
            "Redis keeps no append-only file: a restart loses every job and pending entry "
            "written since its last snapshot",
            "CONFIG SET appendonly yes and appendfsync always (and in redis.conf)",
        )
    elif fsync is not None and fsync != "always":
        yield CheckResult(
            Outcome.WARN,
            f"Redis writes its append-only file with appendfsync {fsync}: a crash can lose "
            "the last second of published jobs and acknowledgements",
            "CONFIG SET appendfsync always (and in redis.conf)",
        )
    else:
        how = "appendfsync always" if fsync else "appendfsync not readable by this user"
        yield CheckResult(Outcome.OK, f"Redis persistence: append-only file on ({how})")
    policy = str(memory.get("maxmemory_policy", "noeviction"))
    if policy != "noeviction" and int(memory.get("maxmemory", 0) or 0) > 0:
        yield CheckResult(
            Outcome.WARN,
            f"Redis evicts keys when full (maxmemory-policy {policy}): a job stream could go",
            "CONFIG SET maxmemory-policy noeviction (publishing then fails instead)",
        )


def _config_value(client: redis.Redis, name: str) -> str | None:
    try:
        values: dict[Any, Any] = dict(client.config_get(name))
    except redis.exceptions.RedisError:
        return None  # CONFIG is an admin command; a worker's user rarely has it
    value = values.get(name)
    return str(value) if value is not None else None


def _topology(config: RedisConfig, client: redis.Redis) -> Iterator[CheckResult]:
    try:
        create_topology(client)
    except redis.exceptions.RedisError as exc:
        yield CheckResult(
            Outcome.FAIL,
            f"creating the streams and group {GROUP}: refused ({describe(exc)})",
            acl_fix(config),
        )
        return
    for stream in JOB_STREAMS:
        try:
            groups = {_text(g["name"]): g for g in client.xinfo_groups(stream)}
        except redis.exceptions.RedisError as exc:
            yield CheckResult(
                Outcome.FAIL, f"stream {stream}: not readable ({describe(exc)})", acl_fix(config)
            )
            continue
        group = groups.get(GROUP)
        if group is None:
            yield CheckResult(
                Outcome.FAIL,
                f"stream {stream} has no group {GROUP}",
                f"XGROUP CREATE {stream} {GROUP} 0 MKSTREAM",
            )
            continue
        lag = group.get("lag")
        waiting = f"{lag} waiting, " if lag is not None else ""
        yield CheckResult(
            Outcome.OK,
            f"stream {stream} with group {GROUP} ({waiting}{group.get('pending', 0)} pending, "
            f"{group.get('consumers', 0)} consumers)",
        )
    try:
        dead = client.xlen(DEAD_LETTER_STREAM)
        yield CheckResult(Outcome.OK, f"stream {DEAD_LETTER_STREAM} ({dead} entries)")
    except redis.exceptions.RedisError as exc:
        yield CheckResult(
            Outcome.FAIL,
            f"stream {DEAD_LETTER_STREAM}: not readable ({describe(exc)})",
            acl_fix(config),
        )


def _permissions(config: RedisConfig, client: redis.Redis) -> CheckResult:
    """Run each command the worker sends, in a form that changes nothing, on every stream.

    Redis checks the ACL before it looks at the arguments, so a refusal says NOPERM, while any
    other answer (XADD's refusal of the id 0-0 included) means the user may run the command.
    This works for any user, where ACL DRYRUN needs an administrator.
    """
    pipe = client.pipeline(transaction=False)
    names: list[str] = []
    for stream in JOB_STREAMS:
        pipe.xreadgroup(GROUP, PROBE_CONSUMER, {stream: "0"}, count=1)
        pipe.xautoclaim(stream, GROUP, PROBE_CONSUMER, PROBE_IDLE_MS, count=1)
        pipe.xclaim(stream, GROUP, PROBE_CONSUMER, 0, ["0-0"], justid=True)
        pipe.xpending_range(stream, GROUP, "-", "+", 1, PROBE_CONSUMER)
        pipe.xack(stream, GROUP, "0-0")
        pipe.xadd(stream, {"body": "{}"}, id="0-0")
        pipe.xtrim(stream, minid="0", approximate=False)
        pipe.xgroup_delconsumer(stream, GROUP, PROBE_CONSUMER)
        names += ["XREADGROUP", "XAUTOCLAIM", "XCLAIM", "XPENDING", "XACK", "XADD", "XTRIM"]
        names.append("XGROUP DELCONSUMER")
    pipe.xadd(DEAD_LETTER_STREAM, {"body": "{}"}, id="0-0")
    names.append(f"XADD to {DEAD_LETTER_STREAM}")
    try:
        answers = pipe.execute(raise_on_error=False)
    except redis.exceptions.RedisError as exc:
        return CheckResult(Outcome.SKIP, f"Redis permissions not checked ({describe(exc)})")
    refused: list[str] = []
    for name, answer in zip(names, answers, strict=True):
        if isinstance(answer, redis.exceptions.NoPermissionError) and name not in refused:
            refused.append(name)
    try:
        transaction = client.pipeline(transaction=True)
        transaction.ping()
        transaction.execute()
    except redis.exceptions.NoPermissionError:
        refused.append("MULTI/EXEC")
    except redis.exceptions.RedisError as exc:
        return CheckResult(Outcome.SKIP, f"Redis MULTI/EXEC not checked ({describe(exc)})")
    user = config.username or "default"
    if refused:
        return CheckResult(
            Outcome.FAIL,
            f"Redis user {user} may not run {', '.join(refused)} on the job streams",
            acl_fix(config),
        )
    return CheckResult(
        Outcome.OK,
        f"Redis user {user} may run every command the worker sends on the job streams "
        "(each probed in a form that changes nothing)",
    )


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
