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
    return parser
