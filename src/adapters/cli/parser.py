"""The `python-worker` command line: its commands, their flags and help."""

import argparse

from python_worker.domain.jobs import Priority


def _processes(text: str) -> int | str:
    if text == "auto":
        return text
    if text.isdigit() and 1 <= int(text) <= 64:
        return int(text)
    raise argparse.ArgumentTypeError("expected a number from 1 to 64, or 'auto'")


def build_parser(version: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python-worker",
        description="RabbitMQ job worker: priority queues, built-in handlers, durable statuses.",
    )
    parser.add_argument("--version", action="version", version=f"python-worker {version}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="run the worker (RabbitMQ by default; see WORKER_BROKER)")
    run.add_argument(
        "--processes",
        metavar="N",
        type=_processes,
        help="worker processes side by side, or 'auto' for one per core (WORKER_PROCESSES)",
    )
    process = commands.add_parser(
        "process",
        help="run JSON-lines jobs from FILE (- for stdin) in memory; status updates to stdout",
    )
    process.add_argument("file", metavar="FILE", help="JSON-lines file of jobs, or - for stdin")
    demo = commands.add_parser("demo", help="a short end-to-end show on the embedded broker")
    demo.add_argument("--jobs", metavar="FILE", help="JSON-lines jobs with a 'priority' field")
    publish = commands.add_parser(
        "publish", help="send jobs to the broker (persistent, with publisher confirms)"
    )
    publish.add_argument("file", metavar="FILE", nargs="?", help="JSON-lines jobs, or - for stdin")
    publish.add_argument("--queue", choices=[p.value for p in Priority], help="tier for every job")
    publish.add_argument("--type", help="one job of this type (instead of FILE)")
    publish.add_argument("--id", help="id of that job (default: random)")
    publish.add_argument("--payload", help="payload of that job, as JSON")
    check = commands.add_parser(
        "check", help="preflight: settings, broker nodes, permissions, APIs, outbox (exit 1 if not)"
    )
    check.add_argument("--strict", action="store_true", help="count warnings as failures")
    _add_dead_letters(commands)
    return parser


def _positive(text: str) -> int:
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise argparse.ArgumentTypeError("expected a whole number of at least 1")


def _some_text(text: str) -> str:
    if text.strip():
        return text
    raise argparse.ArgumentTypeError("expected some text (--all selects every message)")


def _add_dead_letters(
    commands: "argparse._SubParsersAction[argparse.ArgumentParser]",
) -> None:
    dead_letters = commands.add_parser(
        "dead-letters",
        help="see what the worker refused and why; replay it, or empty the queue",
        description="Read the dead-letter queue without losing or reordering a message, put "
        "messages back on their queues (each confirmed before it is removed), or delete them. "
        "Exit 0 when done, 1 when something could not be done, 2 for a usage error.",
    )
    actions = dead_letters.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="one line per message: id, type, queue, when, why")
    listing.add_argument(
        "--limit", type=_positive, default=1000, metavar="N", help="read at most N (1000)"
    )
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    show = actions.add_parser("show", help="one message whole: body and headers")
    show.add_argument("key", metavar="ID", help="its job id, or its sha256: handle")
    show.add_argument("--json", action="store_true", help="as one JSON object")
    requeue = actions.add_parser(
        "requeue", help="put messages back on their queues (confirmed before they are removed)"
    )
    which = requeue.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--id", dest="ids", nargs="+", action="extend", metavar="ID", help="these messages"
    )
    which.add_argument(
        "--reason-contains",
        type=_some_text,
        metavar="TEXT",
        help="those whose reason holds TEXT (any case)",
    )
    which.add_argument("--all", action="store_true", help="every message")
    purge = actions.add_parser("purge", help="delete every dead-lettered message (needs --yes)")
    purge.add_argument("--yes", action="store_true", help="yes, delete them for good")
