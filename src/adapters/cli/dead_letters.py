"""`python-worker dead-letters`: what the worker refused and why; replay it, or empty the queue."""

import argparse
import base64
import sys
from collections.abc import Sequence
from typing import Any

import orjson

from python_worker.application.ports import (
    DeadLetteredMessage,
    DeadLetters,
    DeadLetterSelection,
    DeadLettersUnavailable,
    RequeueReport,
)

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
PROGRAM = "python-worker dead-letters"
COLUMNS = ("ID", "TYPE", "QUEUE", "DEAD-LETTERED AT", "WORKER", "TIMES", "REASON")


def run(dead_letters: DeadLetters, args: argparse.Namespace) -> int:
    """One `dead-letters` action; 1 when the broker cannot be reached or a thing was not done."""
    try:
        if args.action == "list":
            return list_messages(dead_letters, args.limit, as_json=args.json)
        if args.action == "show":
            return show(dead_letters, args.key, as_json=args.json)
        if args.action == "requeue":
            selection = DeadLetterSelection(
                keys=frozenset(args.ids or ()),
                reason_contains=args.reason_contains,
                everything=args.all,
            )
            return requeue(dead_letters, selection)
        return purge(dead_letters, confirmed=args.yes)
    except DeadLettersUnavailable as exc:
        print(f"{PROGRAM}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        # The connection closes on the way out: what was read and not moved goes back.
        print(
            f"{PROGRAM}: interrupted; every message not yet put back is still on the "
            "dead-letter queue",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED


def list_messages(dead_letters: DeadLetters, limit: int, *, as_json: bool) -> int:
    """`list`: one line per message, oldest first, or one JSON object per line."""
    total = dead_letters.count()
    messages = dead_letters.list(limit)
    if as_json:
        for message in messages:
            print(orjson.dumps(_summary(message)).decode())
    elif messages:
        _print_table([_row(message) for message in messages])
    if total > limit:
        print(
            f"{len(messages)} message(s) among the first {limit} of {total} on the dead-letter "
            "queue; --limit N shows more",
            file=sys.stderr,
        )
    elif not messages:
        print("the dead-letter queue is empty", file=sys.stderr)
    return 0


def show(dead_letters: DeadLetters, key: str, *, as_json: bool) -> int:
    """`show ID`: everything about the message(s) answering to `key`, body and headers."""
    messages = dead_letters.find(key)
    if not messages:
        print(f"{PROGRAM}: no dead-lettered message answers to {_one_line(key)}", file=sys.stderr)
        return EXIT_FAILED
    for number, message in enumerate(messages):
        if as_json:
            print(orjson.dumps(_whole(message)).decode())
            continue
        if number:
            print()
        _print_message(message)
    return 0


def requeue(dead_letters: DeadLetters, selection: DeadLetterSelection) -> int:
    """`requeue`: the selected messages back on their queues; says how many moved."""
    report = dead_letters.requeue(selection)
    for problem in report.problems:
        print(f"not moved: {_one_line(problem)}", file=sys.stderr)
    for key in report.missing:
        print(f"not found: no dead-lettered message answers to {_one_line(key)}", file=sys.stderr)
    print(_requeue_summary(report))
    return EXIT_FAILED if report.problems or report.missing else 0


def purge(dead_letters: DeadLetters, *, confirmed: bool) -> int:
    """`purge --yes`: delete every dead-lettered message; refuses without `--yes`."""
    if not confirmed:
        print(
            f"{PROGRAM} purge: this deletes every message on the dead-letter queue for good; "
            "run it again with --yes",
            file=sys.stderr,
        )
        return EXIT_USAGE
    print(f"purged {dead_letters.purge()} message(s) from the dead-letter queue")
    return 0


# -- text ----------------------------------------------------------------------------------


def _row(message: DeadLetteredMessage) -> tuple[str, ...]:
    return tuple(
        _one_line(cell or "-")
        for cell in (
            message.key,
            message.job_type,
            message.queue,
            message.dead_lettered_at,
            message.worker_id,
            str(message.times),
            message.reason,
        )
    )


def _print_table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(row[column]) for row in [COLUMNS, *rows]) for column in range(len(COLUMNS))]
    for row in [COLUMNS, *rows]:
        # The reason is last and never padded: it is free text of any length.
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=False)]
        print("  ".join([*cells, row[-1]]))


def _print_message(message: DeadLetteredMessage) -> None:
    fields = [
        ("id", message.key),
        ("job id", message.job_id),
        ("handle", message.handle),
        ("type", message.job_type),
        ("queue", message.queue),
        ("reason", message.reason),
        ("dead-lettered at", message.dead_lettered_at),
        ("worker", message.worker_id),
        ("times", str(message.times)),
    ]
    for name, value in fields:
        print(f"{name + ':':<17} {_one_line(value or '-')}")
    print("headers:")
    for name, value in message.headers.items():
        print(f"  {_one_line(name)}: {_one_line(orjson.dumps(value).decode())}")
    try:
        text = message.body.decode("utf-8")
        note = ""
    except UnicodeDecodeError:
        text = message.body.decode("utf-8", errors="backslashreplace")
        note = ", not UTF-8: shown escaped"
    print(f"body ({len(message.body)} bytes{note}):")
    print(_printable(text, keep="\n\t"))


def _requeue_summary(report: RequeueReport) -> str:
    text = f"requeued {report.moved} message(s) to their queues, confirmed by the broker"
    if report.merged:
        text += f"; {report.merged} more copies of them removed"
    if report.left:
        text += f"; {report.left} left on the dead-letter queue"
    return text


def _one_line(text: str) -> str:
    return _printable(text, keep="")


def _printable(text: str, keep: str) -> str:
    """`text` with every control and format character escaped: a body or id from anyone
    must not move the cursor, recolour the terminal or hide text (U+202E) from an operator."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() or char in keep else _escape(char) for char in text)


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


# -- JSON ----------------------------------------------------------------------------------


def _summary(message: DeadLetteredMessage) -> dict[str, Any]:
    return {
        "id": message.key,
        "handle": message.handle,
        "jobId": message.job_id,
        "jobType": message.job_type,
        "queue": message.queue,
        "reason": message.reason,
        "deadLetteredAt": message.dead_lettered_at,
        "workerId": message.worker_id,
        "times": message.times,
    }


def _whole(message: DeadLetteredMessage) -> dict[str, Any]:
    whole = _summary(message) | {"headers": dict(message.headers)}
    try:
        whole["body"] = message.body.decode("utf-8")
    except UnicodeDecodeError:
        whole["bodyBase64"] = base64.b64encode(message.body).decode()
    return whole
