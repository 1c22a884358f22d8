"""`python -m bench.run`: the whole benchmark in one go, rounds interleaved, JSON lines + table."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import orjson

_ROOT = Path(__file__).resolve().parents[1]
# `tests.support` lives at the repo root, outside the installed package.
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from bench.raw import STATUS_BODY, broker_consume_ack, http_posts, redis_consume_ack  # noqa: E402
from bench.scenarios import OtherCode, run_priority, run_throughput  # noqa: E402
from bench.stand_in import StandInProcess, stand_in_capacity  # noqa: E402
from tests.support.rabbitmq_node import Broker, RabbitMQNode  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402

DEFAULT_OUT = _ROOT / "bench" / "results"
REFERENCE_LATENCY_MS = 10.0
"""The API latency at which the reference worker runs too (when it is among `--latencies`)."""
BROKERS = ("rabbitmq", "redis")
DEFAULT_BROKERS = BROKERS if shutil.which("redis-server") else ("rabbitmq",)
"""Both when redis-server is installed: the Redis figures come beside RabbitMQ's, same round."""
REDIS_WORKER = "redis-worker"
"""The `kind` of the worker under test on Redis: its own ids, WORKER_ID, outbox and log."""


@dataclass(frozen=True)
class Options:
    """Sizes of one benchmark run."""

    rounds: int = 3
    jobs: int = 20_000
    priority_low: int = 20_000
    priority_high: int = 1_000
    http_seconds: float = 3.0
    capacity: int = 10
    reference: bool = True
    priority: bool = True
    out: Path = DEFAULT_OUT
    latencies_ms: tuple[float, ...] = (0.0, 10.0, 50.0)
    """API latencies of the throughput runs; 0 ms is the `worker` measurement itself."""
    reference_latency_jobs: int = 2_000
    """Jobs of `reference_latency_10` (at most `jobs`): one thread waits out every POST."""
    baseline: str | None = None
    """A git commit/branch whose worker also runs the 0 ms throughput scenario."""
    brokers: tuple[str, ...] = DEFAULT_BROKERS
    """RabbitMQ always (every ratio refers to its figures); `redis` adds the `redis_*` ones."""


QUICK = Options(
    rounds=1,
    jobs=300,
    priority_low=600,
    priority_high=50,
    http_seconds=0.5,
    reference_latency_jobs=300,
)
"""Sizes of `--quick`: a smoke run of seconds that exercises every measurement."""


def _latencies(text: str) -> tuple[float, ...]:
    try:
        values = {float(part) for part in text.split(",") if part.strip()}
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of milliseconds: {text!r}") from None
    if any(value < 0 for value in values):
        raise argparse.ArgumentTypeError("latencies cannot be negative")
    return tuple(sorted(values | {0.0}))


def _brokers(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [name for name in names if name not in BROKERS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown broker {unknown[0]!r} (rabbitmq, redis)")
    if "rabbitmq" not in names:
        raise argparse.ArgumentTypeError("rabbitmq is always measured: the ratios refer to it")
    return names


def parse_options(argv: Sequence[str] | None = None) -> tuple[Options, str | None]:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--rounds", type=int, help="rounds, each running every measurement once")
    parser.add_argument("--jobs", type=int, help="jobs per throughput run (worker, reference)")
    parser.add_argument("--priority-low", type=int, help="low jobs waiting before the burst")
    parser.add_argument("--priority-high", type=int, help="high jobs in the burst")
    parser.add_argument("--http-seconds", type=float, help="duration of each raw HTTP measurement")
    parser.add_argument("--capacity", type=int, help="WORKER_CAPACITY (and raw HTTP lanes)")
    parser.add_argument(
        "--processes", default="1", help="WORKER_PROCESSES of the worker under test (or auto)"
    )
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the worker under test (repeatable), e.g. STATUS_MAX_IN_FLIGHT=200",
    )
    parser.add_argument("--quick", action="store_true", help="a tiny smoke run of seconds")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference worker")
    parser.add_argument("--no-priority", action="store_true", help="skip the priority scenario")
    parser.add_argument("--out", type=Path, help=f"results directory (default {DEFAULT_OUT})")
    parser.add_argument(
        "--latencies",
        type=_latencies,
        help="status API latencies in ms, comma-separated (default 0,10,50; 0 is `worker`)",
    )
    parser.add_argument(
        "--reference-latency-jobs",
        type=int,
        help="jobs of the reference worker at 10 ms (default 2,000, at most --jobs)",
    )
    parser.add_argument(
        "--baseline",
        metavar="REF",
        help="also run the worker of this git commit/branch (a temporary worktree) at 0 ms",
    )
    parser.add_argument(
        "--amqp-url", help="use this broker instead of starting a private RabbitMQ node"
    )
    parser.add_argument(
        "--brokers",
        type=_brokers,
        help="rabbitmq, or rabbitmq,redis (default: both when redis-server is installed)",
    )
    args = parser.parse_args(argv)
    base = QUICK if args.quick else Options()
    values: dict[str, Any] = {}
    names = ("rounds", "jobs", "priority_low", "priority_high", "http_seconds", "capacity")
    for name in (*names, "reference_latency_jobs", "baseline"):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    if args.latencies is not None:
        values["latencies_ms"] = args.latencies
    if args.brokers is not None:
        values["brokers"] = args.brokers
    if args.jobs is not None and args.priority_low is None and not args.quick:
        values["priority_low"] = args.jobs
    values["reference"] = not args.no_reference
    values["priority"] = not args.no_priority
    if args.out is not None:
        values["out"] = args.out
    # Read by scenarios.UnderTest when it starts the worker.
    os.environ["BENCH_WORKER_PROCESSES"] = args.processes
    extra: dict[str, str] = {}
    for item in args.worker_env:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--worker-env wants NAME=VALUE, not {item!r}")
        extra[name] = value
    os.environ["BENCH_WORKER_ENV"] = orjson.dumps(extra).decode()
    return dataclasses.replace(base, **values), args.amqp_url


# ------------------------------------------------------------------ one run


class _Results:
    """Appends one JSON line per measurement per round; keeps them for the table."""

    def __init__(self, out: Path, stream: TextIO) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.run_id = time.strftime("%Y%m%d-%H%M%S")
        self.path = out / f"bench-{self.run_id}.jsonl"
        self.records: list[dict[str, Any]] = []
        self._stream = stream

    def write(self, measurement: str, round_no: int, fields: dict[str, Any]) -> dict[str, Any]:
        record = {"run": self.run_id, "round": round_no, "measurement": measurement, **fields}
        self.records.append(record)
        with self.path.open("ab") as file:
            file.write(orjson.dumps(record) + b"\n")
        brief = {k: _short(v) for k, v in fields.items() if k in _PROGRESS_KEYS}
        print(f"  round {round_no} {measurement}: {brief}", file=self._stream, flush=True)
        return record


_PROGRESS_KEYS = (
    "posts_per_s",
    "msg_per_s",
    "jobs_per_s",
    "cpu_ms_per_job",
    "ratio_to_0ms",
    "ratio_to_baseline",
    "stand_in_peak_waiting",
    "guarantees_ok",
    "priority_inversions",
    "high_latency_running_ms_p95",
)


def _short(value: Any) -> Any:
    return round(value, 3) if isinstance(value, float) else value


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator:
        return None
    return numerator / denominator


@dataclass(frozen=True)
class Baseline:
    """Another commit of this repository, checked out in a temporary worktree."""

    ref: str
    commit: str
    tree: Path
    code: OtherCode


def _git(*args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(_ROOT), *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


@contextlib.contextmanager
def baseline_tree(ref: str) -> Iterator[Baseline]:
    """`git worktree add --detach` of `ref` in a temp dir; removed again however the block ends."""
    parent = Path(tempfile.mkdtemp(prefix="pw-bench-baseline-"))
    tree = parent / "tree"
    try:
        commit = _git("rev-parse", "--verify", "--end-of-options", f"{ref}^{{commit}}").strip()
        _git("worktree", "add", "--detach", str(tree), commit)
        baseline = Baseline(ref, commit, tree, OtherCode.of(tree, parent))
        _check_imports_from(baseline.code, tree / "src", parent)
        yield baseline
    finally:
        if tree.exists():
            with contextlib.suppress(RuntimeError):
                _git("worktree", "remove", "--force", str(tree))
        shutil.rmtree(parent, ignore_errors=True)
        with contextlib.suppress(RuntimeError):
            _git("worktree", "prune")


def _check_imports_from(code: OtherCode, src: Path, cwd: Path) -> None:
    """The baseline must load the other tree's code, not this one (the editable install)."""
    probe = f"import {code.module} as m; print(m.__file__)"
    env = dict(os.environ, PYTHONPATH=str(code.path))
    done = subprocess.run(
        [sys.executable, "-P", "-c", probe],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    files = [Path(line).resolve() for line in done.stdout.splitlines()]
    if done.returncode != 0 or len(files) != 1 or not files[0].is_relative_to(src.resolve()):
        raise RuntimeError(f"the baseline does not import from {src}: {done.stdout}{done.stderr}")


def run_benchmark(
    options: Options, broker: Broker | None = None, stream: TextIO = sys.stdout
) -> Path:
    """Run every round; returns the JSON-lines file. Starts a private node unless given one."""
    with contextlib.ExitStack() as stack:
        baseline = None
        if options.baseline is not None:
            baseline = stack.enter_context(baseline_tree(options.baseline))
            print(
                f"baseline {options.baseline} = {baseline.commit[:12]}, worktree {baseline.tree}",
                file=stream,
                flush=True,
            )
        return _run_benchmark(options, broker, stream, baseline)


def _run_benchmark(
    options: Options, broker: Broker | None, stream: TextIO, baseline: Baseline | None
) -> Path:
    results = _Results(options.out, stream)
    own_node: RabbitMQNode | None = None
    if broker is None:
        own_node = RabbitMQNode(name_prefix="pw-bench")
        print(f"starting private RabbitMQ node ({own_node.port})...", file=stream, flush=True)
        own_node.start()
        broker = own_node
    redis_server: RedisServer | None = None
    if "redis" not in options.brokers and shutil.which("redis-server") is None:
        print(
            "redis-server is not installed: no Redis figures (sudo scripts/ensure-redis.sh)",
            file=stream,
            flush=True,
        )
    if "redis" in options.brokers:
        # With `appendfsync always`: the setting under which Redis keeps what it acknowledged.
        redis_server = RedisServer(appendfsync_always=True, name_prefix="pw-bench-redis")
        print(f"starting private Redis ({redis_server.port})...", file=stream, flush=True)
        redis_server.start()
    high = options.priority_high if options.priority else 0
    largest = max(options.jobs, options.priority_low + high)
    api = StandInProcess(max_records=2 * largest + 10_000)
    results.write(
        "meta",
        0,
        {
            "options": {k: str(v) for k, v in vars(options).items()},
            "cpus": _cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "broker": repr(broker),
            "redis": repr(redis_server) if redis_server is not None else None,
            "baseline_commit": baseline.commit if baseline else None,
        },
    )
    try:
        with tempfile.TemporaryDirectory(prefix="pw-bench-") as work:
            for round_no in range(1, options.rounds + 1):
                _run_round(options, broker, api, Path(work), round_no, results, baseline)
                if redis_server is not None:
                    # The same round on Redis, its ratios to the figures this round just wrote.
                    theirs = _RabbitMQFigures.of(results.records, round_no)
                    _run_redis_round(
                        options, redis_server, api, Path(work), round_no, results, theirs
                    )
        _write_summary(results)
    finally:
        api.close()
        if own_node is not None:
            own_node.close()
        if redis_server is not None:
            redis_server.close()
    print_table(results.records, stream)
    print(f"results: {results.path}", file=stream)
    return results.path


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0))


def _run_round(
    options: Options,
    broker: Broker,
    api: StandInProcess,
    work: Path,
    round_no: int,
    results: _Results,
    baseline: Baseline | None = None,
) -> None:
    capacity = options.capacity
    api.clear()
    stand_in = stand_in_capacity(api.port, STATUS_BODY, options.http_seconds)
    api.clear()
    results.write("stand_in_capacity", round_no, {"posts_per_s": stand_in, "pipelined": 32})
    raw_broker = results.write("broker_raw", round_no, broker_consume_ack(broker, options.jobs))
    http_one = results.write(
        "http_raw_1", round_no, http_posts(api.status_url, 1, options.http_seconds)
    )
    api.clear()
    http_lanes = results.write(
        "http_raw_lanes", round_no, http_posts(api.status_url, capacity, options.http_seconds)
    )
    api.clear()
    results.write(
        "http_session_1",
        round_no,
        http_posts(api.status_url, 1, options.http_seconds, client="session"),
    )
    api.clear()

    def against_raw(fields: dict[str, Any]) -> dict[str, Any]:
        rate = fields.get("jobs_per_s")
        return fields | {
            "ratio_to_broker": _ratio(rate, raw_broker["msg_per_s"]),
            "ratio_to_http_1": _ratio(rate, http_one["posts_per_s"] / 2),
            "ratio_to_http_lanes": _ratio(rate, http_lanes["posts_per_s"] / 2),
        }

    worker = against_raw(
        run_throughput("worker", broker, api, work, options.jobs, capacity, round_no)
    )
    if baseline is not None:
        old = against_raw(
            run_throughput(
                "baseline",
                broker,
                api,
                work,
                options.jobs,
                capacity,
                round_no,
                baseline=baseline.code,
            )
        ) | {"ref": baseline.ref, "commit": baseline.commit}
        worker.update(
            ratio_to_baseline=_ratio(worker.get("jobs_per_s"), old.get("jobs_per_s")),
            cpu_ratio_to_baseline=_ratio(worker.get("cpu_ms_per_job"), old.get("cpu_ms_per_job")),
            rss_ratio_to_baseline=_ratio(worker.get("peak_rss_mb"), old.get("peak_rss_mb")),
        )
    if options.reference:
        reference = against_raw(
            run_throughput("reference", broker, api, work, options.jobs, capacity, round_no)
        )
        worker.update(
            ratio_to_reference=_ratio(worker.get("jobs_per_s"), reference.get("jobs_per_s")),
            cpu_ratio_to_reference=_ratio(
                worker.get("cpu_ms_per_job"), reference.get("cpu_ms_per_job")
            ),
            rss_ratio_to_reference=_ratio(worker.get("peak_rss_mb"), reference.get("peak_rss_mb")),
        )
    results.write("worker", round_no, worker)
    if baseline is not None:
        results.write("baseline", round_no, old)
    if options.reference:
        results.write("reference", round_no, reference)

    def at_latency(kind: str, jobs: int, latency_ms: float) -> dict[str, Any]:
        """The throughput scenario while the stand-in answers each status POST late; then not."""
        api.delay(latency_ms / 1000)
        try:
            fields = run_throughput(
                kind,
                broker,
                api,
                work,
                jobs,
                capacity,
                round_no,
                timeout=_timeout(jobs, latency_ms),
            )
            return {"latency_ms": latency_ms, **fields, "stand_in_peak_waiting": api.peak_waiting()}
        finally:
            api.delay(0)

    for latency_ms in options.latencies_ms:
        if latency_ms <= 0:
            continue  # that is `worker` above
        slow = against_raw(at_latency("worker", options.jobs, latency_ms))
        slow.update(
            ratio_to_0ms=_ratio(slow.get("jobs_per_s"), worker.get("jobs_per_s")),
            cpu_ratio_to_0ms=_ratio(slow.get("cpu_ms_per_job"), worker.get("cpu_ms_per_job")),
            rss_ratio_to_0ms=_ratio(slow.get("peak_rss_mb"), worker.get("peak_rss_mb")),
        )
        slow_reference = None
        if options.reference and latency_ms == REFERENCE_LATENCY_MS:
            jobs = min(options.jobs, options.reference_latency_jobs)
            slow_reference = at_latency("reference", jobs, latency_ms)
            slow.update(
                ratio_to_reference=_ratio(slow.get("jobs_per_s"), slow_reference.get("jobs_per_s")),
                cpu_ratio_to_reference=_ratio(
                    slow.get("cpu_ms_per_job"), slow_reference.get("cpu_ms_per_job")
                ),
            )
        results.write(_latency_name("worker", latency_ms), round_no, slow)
        if slow_reference is not None:
            results.write(_latency_name("reference", latency_ms), round_no, slow_reference)
    if options.priority:
        _run_priorities(options, broker, api, work, round_no, results, baseline)


@dataclass(frozen=True)
class _RabbitMQFigures:
    """What the Redis figures of a round are compared with: the same round's raw HTTP rates,
    RabbitMQ workers and reference workers (the reference speaks AMQP only)."""

    http_one: dict[str, Any]
    http_lanes: dict[str, Any]
    worker: dict[str, Any]
    reference: dict[str, Any] | None
    worker_at_latency: dict[float, dict[str, Any]]
    reference_at_latency: dict[float, dict[str, Any]]

    @classmethod
    def of(cls, records: Sequence[dict[str, Any]], round_no: int) -> _RabbitMQFigures:
        """The figures that round `round_no` wrote so far."""
        mine = {r["measurement"]: r for r in records if r["round"] == round_no}

        def at_latency(kind: str) -> dict[float, dict[str, Any]]:
            prefix = f"{kind}_latency_"
            return {
                float(r["latency_ms"]): r
                for name, r in mine.items()
                if name.startswith(prefix) and _numeric(r.get("latency_ms"))
            }

        return cls(
            http_one=mine["http_raw_1"],
            http_lanes=mine["http_raw_lanes"],
            worker=mine["worker"],
            reference=mine.get("reference"),
            worker_at_latency=at_latency("worker"),
            reference_at_latency=at_latency("reference"),
        )


def _run_redis_round(
    options: Options,
    server: RedisServer,
    api: StandInProcess,
    work: Path,
    round_no: int,
    results: _Results,
    rabbitmq: _RabbitMQFigures,
) -> None:
    """The throughput and priority scenarios on Redis, with the same ratios as on RabbitMQ:
    to Redis's own consume+ack rate, to the raw HTTP rates, to the reference worker, and to
    the RabbitMQ worker of the same round (`redis_*` measurements)."""
    capacity = options.capacity
    raw = results.write("redis_broker_raw", round_no, redis_consume_ack(server, options.jobs))

    def against_raw(fields: dict[str, Any]) -> dict[str, Any]:
        rate = fields.get("jobs_per_s")
        return fields | {
            "ratio_to_broker": _ratio(rate, raw["msg_per_s"]),
            "ratio_to_http_1": _ratio(rate, rabbitmq.http_one["posts_per_s"] / 2),
            "ratio_to_http_lanes": _ratio(rate, rabbitmq.http_lanes["posts_per_s"] / 2),
        }

    def throughput(jobs: int, latency_ms: float = 0.0) -> dict[str, Any]:
        api.delay(latency_ms / 1000)
        try:
            fields = run_throughput(
                REDIS_WORKER,
                server,
                api,
                work,
                jobs,
                capacity,
                round_no,
                timeout=_timeout(jobs, latency_ms),
            )
            if latency_ms > 0:
                fields = {"latency_ms": latency_ms, **fields}
                fields["stand_in_peak_waiting"] = api.peak_waiting()
            return against_raw(fields)
        finally:
            api.delay(0)

    worker = throughput(options.jobs)
    worker.update(
        ratio_to_rabbitmq_worker=_ratio(
            worker.get("jobs_per_s"), rabbitmq.worker.get("jobs_per_s")
        ),
        cpu_ratio_to_rabbitmq_worker=_ratio(
            worker.get("cpu_ms_per_job"), rabbitmq.worker.get("cpu_ms_per_job")
        ),
    )
    if rabbitmq.reference is not None:
        worker.update(
            ratio_to_reference=_ratio(
                worker.get("jobs_per_s"), rabbitmq.reference.get("jobs_per_s")
            ),
            cpu_ratio_to_reference=_ratio(
                worker.get("cpu_ms_per_job"), rabbitmq.reference.get("cpu_ms_per_job")
            ),
            rss_ratio_to_reference=_ratio(
                worker.get("peak_rss_mb"), rabbitmq.reference.get("peak_rss_mb")
            ),
        )
    results.write("redis_worker", round_no, worker)
    for latency_ms in options.latencies_ms:
        if latency_ms <= 0:
            continue  # that is `redis_worker` above
        slow = throughput(options.jobs, latency_ms)
        slow.update(
            ratio_to_0ms=_ratio(slow.get("jobs_per_s"), worker.get("jobs_per_s")),
            cpu_ratio_to_0ms=_ratio(slow.get("cpu_ms_per_job"), worker.get("cpu_ms_per_job")),
            rss_ratio_to_0ms=_ratio(slow.get("peak_rss_mb"), worker.get("peak_rss_mb")),
        )
        theirs = rabbitmq.worker_at_latency.get(latency_ms, {})
        slow.update(
            ratio_to_rabbitmq_worker=_ratio(slow.get("jobs_per_s"), theirs.get("jobs_per_s")),
            cpu_ratio_to_rabbitmq_worker=_ratio(
                slow.get("cpu_ms_per_job"), theirs.get("cpu_ms_per_job")
            ),
        )
        reference = rabbitmq.reference_at_latency.get(latency_ms)
        if reference is not None:
            slow.update(
                ratio_to_reference=_ratio(slow.get("jobs_per_s"), reference.get("jobs_per_s")),
                cpu_ratio_to_reference=_ratio(
                    slow.get("cpu_ms_per_job"), reference.get("cpu_ms_per_job")
                ),
            )
        results.write(_latency_name("redis_worker", latency_ms), round_no, slow)
    if options.priority:
        sizes = (options.priority_low, options.priority_high, options.capacity, round_no)
        results.write(
            "redis_priority", round_no, run_priority(server, api, work, *sizes, kind=REDIS_WORKER)
        )


def _run_priorities(
    options: Options,
    broker: Broker,
    api: StandInProcess,
    work: Path,
    round_no: int,
    results: _Results,
    baseline: Baseline | None,
) -> None:
    """The priority scenario against this worker, then against the baseline's."""
    sizes = (options.priority_low, options.priority_high, options.capacity, round_no)
    results.write("priority", round_no, run_priority(broker, api, work, *sizes))
    if baseline is not None:
        old = run_priority(broker, api, work, *sizes, kind="baseline", baseline=baseline.code)
        results.write("baseline_priority", round_no, old)


def _latency_name(kind: str, latency_ms: float) -> str:
    return f"{kind}_latency_{latency_ms:g}"


def _timeout(jobs: int, latency_ms: float) -> float:
    """Seconds to wait for every final status: even one POST at a time gets there."""
    return max(60.0, jobs / 50) + 2 * jobs * latency_ms / 1000 * 1.25


def _write_summary(results: _Results) -> None:
    """One `summary` line: the median over rounds of every numeric field of each measurement."""
    by_measurement: dict[str, list[dict[str, Any]]] = {}
    for record in results.records:
        if record["measurement"] != "meta":
            by_measurement.setdefault(record["measurement"], []).append(record)
    medians: dict[str, dict[str, Any]] = {}
    for measurement, records in by_measurement.items():
        keys = [k for k, v in records[0].items() if _numeric(v) and k != "round"]
        medians[measurement] = {
            key: statistics.median(r[key] for r in records if _numeric(r.get(key)))
            for key in keys
            if any(_numeric(r.get(key)) for r in records)
        }
    all_ok = all(
        r.get("guarantees_ok", True) for records in by_measurement.values() for r in records
    )
    results.write("summary", 0, {"medians": medians, "guarantees_ok": all_ok})


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# ------------------------------------------------------------------ the table

_TABLE = (
    ("stand_in_capacity", "posts_per_s", "stand-in alone, pipelined POSTs/s", "{:,.0f}"),
    ("broker_raw", "msg_per_s", "broker consume+ack, no work, msg/s", "{:,.0f}"),
    ("http_raw_1", "posts_per_s", "worker's HTTP client POSTs/s, 1 thread", "{:,.0f}"),
    ("http_raw_1", "client_cpu_ms_per_post", "  client CPU ms per POST", "{:.3f}"),
    ("http_raw_lanes", "posts_per_s", "  the same, lanes threads", "{:,.0f}"),
    ("http_session_1", "posts_per_s", "requests.Session.post POSTs/s, 1 thread", "{:,.0f}"),
    ("http_session_1", "client_cpu_ms_per_post", "  client CPU ms per POST", "{:.3f}"),
    ("worker", "jobs_per_s", "worker jobs/s (first status -> last final)", "{:,.0f}"),
    ("worker", "jobs_per_s_incl_startup", "  incl. process start-up", "{:,.0f}"),
    ("worker", "cpu_ms_per_job", "  worker CPU ms per job", "{:.3f}"),
    ("worker", "cpu_cores_used", "  worker CPU cores busy", "{:.2f}"),
    ("worker", "peak_rss_mb", "  worker peak RSS MiB", "{:.1f}"),
    ("worker", "ratio_to_broker", "  ratio to broker consume+ack", "{:.3f}"),
    ("worker", "ratio_to_http_1", "  ratio to HTTP 1 thread / 2", "{:.3f}"),
    ("worker", "ratio_to_http_lanes", "  ratio to HTTP lanes / 2", "{:.3f}"),
    ("worker", "ratio_to_reference", "  ratio to reference worker", "{:.3f}"),
    ("worker", "cpu_ratio_to_reference", "  CPU/job ratio to reference", "{:.2f}"),
    ("worker", "rss_ratio_to_reference", "  peak RSS ratio to reference", "{:.2f}"),
    ("worker", "ratio_to_baseline", "  ratio to baseline worker", "{:.3f}"),
    ("worker", "cpu_ratio_to_baseline", "  CPU/job ratio to baseline", "{:.2f}"),
    ("worker", "rss_ratio_to_baseline", "  peak RSS ratio to baseline", "{:.2f}"),
    ("reference", "jobs_per_s", "reference worker jobs/s", "{:,.0f}"),
    ("reference", "cpu_ms_per_job", "  reference CPU ms per job", "{:.3f}"),
    ("reference", "peak_rss_mb", "  reference peak RSS MiB", "{:.1f}"),
    ("reference", "ratio_to_http_1", "  ratio to HTTP 1 thread / 2", "{:.3f}"),
)

_TABLE_PRIORITY = (
    ("priority", "priority_inversions", "priority inversions (running arrivals)", "{:.0f}"),
    ("priority", "priority_inversions_by_worker_timestamp", "  by worker timestamps", "{:.0f}"),
    (
        "priority",
        "priority_inversions_while_high_waiting",
        "  of them while a high job waited",
        "{:.0f}",
    ),
    ("priority", "high_latency_running_ms_p50", "high publish->running p50 ms", "{:.1f}"),
    ("priority", "high_latency_running_ms_p95", "high publish->running p95 ms", "{:.1f}"),
    ("priority", "high_latency_running_ms_max", "high publish->running max ms", "{:.1f}"),
    ("priority", "high_latency_final_ms_p95", "high publish->final p95 ms", "{:.1f}"),
    ("priority", "single_high_start_ms_p50", "single high job publish->start p50 ms", "{:.1f}"),
    ("priority", "single_high_start_ms_p95", "single high job publish->start p95 ms", "{:.1f}"),
    ("priority", "single_high_start_ms_max", "single high job publish->start max ms", "{:.1f}"),
)


def _table_rows(records: Sequence[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """The fixed rows, plus the baseline's and one block per API latency that was measured."""
    rows = list(_TABLE)
    ref = next((r.get("ref") for r in records if r["measurement"] == "baseline"), None)
    if ref is not None:
        rows += [
            ("baseline", "jobs_per_s", f"baseline worker jobs/s ({ref})"[:45], "{:,.0f}"),
            ("baseline", "cpu_ms_per_job", "  baseline CPU ms per job", "{:.3f}"),
            ("baseline", "peak_rss_mb", "  baseline peak RSS MiB", "{:.1f}"),
            (
                "baseline_priority",
                "priority_inversions_by_worker_timestamp",
                "  baseline inversions by worker timestamps",
                "{:,.0f}",
            ),
            (
                "baseline_priority",
                "priority_inversions_while_high_waiting",
                "  baseline inversions while a high job waited",
                "{:,.0f}",
            ),
            (
                "baseline_priority",
                "single_high_start_ms_p95",
                "  baseline single high job publish->start p95",
                "{:.1f}",
            ),
        ]
    latencies = sorted(
        {
            r["latency_ms"]
            for r in records
            if r["measurement"].startswith("worker_latency_") and _numeric(r.get("latency_ms"))
        }
    )
    for latency_ms in latencies:
        ours, theirs = _latency_name("worker", latency_ms), _latency_name("reference", latency_ms)
        rows += [
            (ours, "jobs_per_s", f"worker jobs/s, API answers after {latency_ms:g} ms", "{:,.0f}"),
            (ours, "cpu_ms_per_job", "  worker CPU ms per job", "{:.3f}"),
            (ours, "peak_rss_mb", "  worker peak RSS MiB", "{:.1f}"),
            (ours, "ratio_to_0ms", "  ratio to 0 ms", "{:.3f}"),
            (ours, "cpu_ratio_to_0ms", "  CPU/job ratio to 0 ms", "{:.2f}"),
            (ours, "stand_in_peak_waiting", "  POSTs waiting at the stand-in, peak", "{:.0f}"),
            (ours, "ratio_to_reference", f"  ratio to reference at {latency_ms:g} ms", "{:.3f}"),
            (theirs, "jobs_per_s", f"reference jobs/s, API after {latency_ms:g} ms", "{:,.0f}"),
            (theirs, "cpu_ms_per_job", "  reference CPU ms per job", "{:.3f}"),
        ]
    rows += _TABLE_PRIORITY
    if any(r["measurement"].startswith("redis_") for r in records):
        rows += _redis_rows(latencies)
    return rows


_TABLE_REDIS = (
    ("redis_broker_raw", "msg_per_s", "Redis: consume+ack, no work, msg/s", "{:,.0f}"),
    ("redis_worker", "jobs_per_s", "Redis: worker jobs/s (first -> last final)", "{:,.0f}"),
    ("redis_worker", "jobs_per_s_incl_startup", "  incl. process start-up", "{:,.0f}"),
    ("redis_worker", "cpu_ms_per_job", "  worker CPU ms per job", "{:.3f}"),
    ("redis_worker", "cpu_cores_used", "  worker CPU cores busy", "{:.2f}"),
    ("redis_worker", "peak_rss_mb", "  worker peak RSS MiB", "{:.1f}"),
    ("redis_worker", "ratio_to_broker", "  ratio to Redis consume+ack", "{:.3f}"),
    ("redis_worker", "ratio_to_http_1", "  ratio to HTTP 1 thread / 2", "{:.3f}"),
    ("redis_worker", "ratio_to_http_lanes", "  ratio to HTTP lanes / 2", "{:.3f}"),
    ("redis_worker", "ratio_to_reference", "  ratio to reference worker (AMQP)", "{:.3f}"),
    ("redis_worker", "cpu_ratio_to_reference", "  CPU/job ratio to reference", "{:.2f}"),
    ("redis_worker", "rss_ratio_to_reference", "  peak RSS ratio to reference", "{:.2f}"),
    ("redis_worker", "ratio_to_rabbitmq_worker", "  ratio to RabbitMQ worker", "{:.3f}"),
    (
        "redis_worker",
        "cpu_ratio_to_rabbitmq_worker",
        "  CPU/job ratio to RabbitMQ worker",
        "{:.2f}",
    ),
)


def _redis_rows(latencies: Sequence[float]) -> list[tuple[str, str, str, str]]:
    """The same figures and ratios on Redis Streams, each label starting `Redis:`."""
    rows = list(_TABLE_REDIS)
    for latency_ms in latencies:
        ours = _latency_name("redis_worker", latency_ms)
        rows += [
            (ours, "jobs_per_s", f"Redis: worker jobs/s, API after {latency_ms:g} ms", "{:,.0f}"),
            (ours, "cpu_ms_per_job", "  worker CPU ms per job", "{:.3f}"),
            (ours, "peak_rss_mb", "  worker peak RSS MiB", "{:.1f}"),
            (ours, "ratio_to_0ms", "  ratio to 0 ms", "{:.3f}"),
            (ours, "cpu_ratio_to_0ms", "  CPU/job ratio to 0 ms", "{:.2f}"),
            (ours, "stand_in_peak_waiting", "  POSTs waiting at the stand-in, peak", "{:.0f}"),
            (ours, "ratio_to_reference", f"  ratio to reference at {latency_ms:g} ms", "{:.3f}"),
            (ours, "ratio_to_rabbitmq_worker", "  ratio to RabbitMQ worker", "{:.3f}"),
        ]
    for measurement, key, label, fmt in _TABLE_PRIORITY:
        redis_label = label if label.startswith(" ") else f"Redis: {label}"
        rows.append((f"redis_{measurement}", key, redis_label[:46], fmt))
    return rows


def print_table(records: Sequence[dict[str, Any]], stream: TextIO) -> None:
    rounds = sorted({r["round"] for r in records if r["round"] > 0})
    lookup = {(r["measurement"], r["round"]): r for r in records}
    header = f"{'figure':<46}{'median':>12}" + "".join(f"{'r' + str(n):>12}" for n in rounds)
    print(header, file=stream)
    print("-" * len(header), file=stream)
    for measurement, key, label, fmt in _table_rows(records):
        values = [lookup.get((measurement, n), {}).get(key) for n in rounds]
        present = [v for v in values if _numeric(v)]
        if not present:
            continue
        cells = [fmt.format(v) if _numeric(v) else "-" for v in values]
        median = fmt.format(statistics.median(present))
        print(f"{label:<46}{median:>12}" + "".join(f"{c:>12}" for c in cells), file=stream)
    checks = [r for r in records if "guarantees_ok" in r and r["measurement"] != "summary"]
    failed = [f"{r['measurement']} r{r['round']}" for r in checks if not r["guarantees_ok"]]
    verdict = "all passed" if not failed else "FAILED: " + ", ".join(failed)
    print(f"guarantees (one final status per job, queues empty): {verdict}", file=stream)


def main(argv: Sequence[str] | None = None) -> int:
    options, amqp_url = parse_options(argv)
    broker = Broker(amqp_url) if amqp_url else None
    path = run_benchmark(options, broker)
    summary = [r for r in _read(path) if r["measurement"] == "summary"]
    return 0 if summary and summary[-1]["guarantees_ok"] else 1


def _read(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line]


if __name__ == "__main__":
    sys.exit(main())
