"""Jobs from the command line: a file or stdin of JSON lines, or one job from flags.

`publish` and `demo` read lines the same way, and refuse the same mistakes before anything is
sent: a line that is not a JSON object, or whose `priority` is not high, medium or low. Each
refusal is one `BadJobs` line naming the file and the line number.
"""

import contextlib
import secrets
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import orjson

from python_worker.domain.jobs import Priority

PRIORITIES = ", ".join(priority.value for priority in Priority.by_rank())
STDIN_SPOOL_BYTES = 8 * 1024 * 1024
"""stdin is kept in memory up to this much while it is checked, then in a temporary file."""


class BadJobs(Exception):
    """Raised when the jobs given cannot be sent as they are; the message is the whole line."""


@dataclass(frozen=True)
class JobLine:
    """One job to send: its tier, its body, and its id when it has one."""

    priority: Priority
    body: bytes
    job_id: str | None


def read_lines(path: str) -> Iterator[str]:
    """The lines of `path`, or of stdin for `-`; bytes that are not UTF-8 kept as they were."""
    if path == "-":
        yield from sys.stdin
        return
    with open(path, encoding="utf-8", errors="surrogateescape") as handle:
        yield from handle


def job_file_lines(path: str) -> Iterator[str]:
    """`read_lines`, with a file that cannot be read as one `BadJobs` line."""
    try:
        yield from read_lines(path)
    except OSError as exc:
        raise BadJobs(f"cannot read {path}: {exc.strerror or exc}") from None


def encode_line(line: str) -> bytes:
    """One line as a message body."""
    # surrogateescape keeps bytes that are not UTF-8 as they were, so they reach the decoder
    # (and get dead-lettered) just as they would coming from the broker.
    return line.strip().encode("utf-8", errors="surrogateescape")


def one_job(job_type: str, job_id: str | None, payload: str | None) -> JobLine:
    """The job of `publish --type/--id/--payload` (medium unless `--queue` says otherwise)."""
    job: dict[str, Any] = {"id": job_id or _generated_id(), "type": job_type}
    try:
        job["payload"] = orjson.loads(payload) if payload else {}
    except orjson.JSONDecodeError as exc:
        raise BadJobs(f"--payload: bad JSON ({exc})") from None
    return JobLine(Priority.MEDIUM, orjson.dumps(job), job["id"])


def parse_jobs(
    lines: Iterable[str], where: str, *, queue: Priority | None = None, give_ids: bool = False
) -> Iterator[JobLine]:
    """Each non-blank line as a job: tier `queue`, else its own `priority` field (medium when
    it has none). `give_ids` adds a generated `id` to a job without one, as `--type` does."""
    for number, line in enumerate(lines, start=1):
        body = encode_line(line)
        if not body:
            continue
        try:
            job = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BadJobs(f"{where} line {number}: bad JSON ({exc})") from None
        if not isinstance(job, dict):
            raise BadJobs(
                f"{where} line {number}: expected a JSON object (a job), got {_kind(job)}"
            )
        named = job.get("priority")
        if named is not None and named not in {p.value for p in Priority}:
            raise BadJobs(f"{where} line {number}: priority {named!r} is not one of {PRIORITIES}")
        if give_ids and "id" not in job:
            job = {"id": _generated_id(), **job}
            body = orjson.dumps(job)
        job_id = job.get("id")
        yield JobLine(
            queue or Priority(named or Priority.MEDIUM.value),
            body,
            job_id if isinstance(job_id, str) else None if job_id is None else str(job_id),
        )


@contextlib.contextmanager
def checked_jobs(
    path: str, *, queue: Priority | None = None, give_ids: bool = False
) -> Iterator[Iterator[JobLine]]:
    """The jobs of `path` (`-`: stdin), every line checked before the first is handed out, so
    a mistake on line 90,000 sends nothing rather than 89,999 jobs. A file is read twice;
    stdin is kept while it is checked (in memory up to STDIN_SPOOL_BYTES, then on disk)."""
    where = "stdin" if path == "-" else path
    if path != "-":
        for _job in parse_jobs(job_file_lines(path), where, queue=queue):
            pass
        yield parse_jobs(job_file_lines(path), where, queue=queue, give_ids=give_ids)
        return
    with tempfile.SpooledTemporaryFile(
        STDIN_SPOOL_BYTES, mode="w+", encoding="utf-8", errors="surrogateescape"
    ) as spool:
        for _job in parse_jobs(_copied(sys.stdin, spool), where, queue=queue):
            pass
        spool.seek(0)
        yield parse_jobs(spool, where, queue=queue, give_ids=give_ids)


def _copied(lines: Iterable[str], into: IO[str]) -> Iterator[str]:
    for line in lines:
        into.write(line)
        yield line


def _generated_id() -> str:
    return f"job-{secrets.token_hex(6)}"


def _kind(value: object) -> str:
    return {list: "an array", str: "a string", bool: "true or false"}.get(
        type(value), "null" if value is None else "a number"
    )
