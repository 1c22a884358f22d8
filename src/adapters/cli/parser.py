"""The `python-worker` command line: its commands, their flags and help."""

import argparse

from python_worker.domain.jobs import Priority


def _processes(text: str) -> int | str:
    if text == "auto":
        return text
    if text.isdigit() and 1 <= int(text) <= 64:
        return int(text)
    raise argparse.ArgumentTypeError("expected a number from 1 to 64, or 'auto'")


BROKER_SETTINGS = (
    "WORKER_BROKER, and the settings of the broker it names: for RabbitMQ, RABBITMQ_URL or "
    "RABBITMQ_HOST, RABBITMQ_PORT, RABBITMQ_USERNAME, RABBITMQ_PASSWORD, RABBITMQ_VHOST, "
    "RABBITMQ_TLS and RABBITMQ_CA_FILE, with QUEUE_TYPE and MAX_DELIVERY_ATTEMPTS for the "
    "queues it declares (README, Configuration, for the others)"
)
WORKER_SETTINGS = (
    "every setting (README, Configuration): the broker's (WORKER_BROKER, RABBITMQ_* or the "
    "chosen broker's, QUEUE_TYPE), the status API's (STATUS_*), the orchestrator's "
    "(ORCHESTRATOR_*, HEARTBEAT_INTERVAL), WORKER_*, JOB_MEMORY_*, MAX_DELIVERY_ATTEMPTS, "
    "SHUTDOWN_GRACE_SECONDS, METRICS_* and LOG_*"
)
IN_MEMORY_SETTINGS = (
    "WORKER_CAPACITY, WORKER_ID, WORKER_TYPE, MAX_DELIVERY_ATTEMPTS, LOG_LEVEL and LOG_FORMAT; "
    "nothing that connects anywhere"
)


def _command(
    commands: "argparse._SubParsersAction[argparse.ArgumentParser]",
    name: str,
    summary: str,
    what: str,
    reads: str,
) -> argparse.ArgumentParser:
    """A command whose --help says what it does and which settings it reads."""
    return commands.add_parser(
        name,
        help=summary,
        description=f"{what}\n\nReads {reads}. Every NAME_FILE form of a secret is read too.",
        formatter_class=_Paragraphs,
    )


class _Paragraphs(argparse.HelpFormatter):
    """Wraps each paragraph of a description on its own (argparse joins them by default)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n\n".join(
            super(_Paragraphs, self)._fill_text(paragraph, width, indent)
            for paragraph in text.split("\n\n")
        )


def build_parser(version: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python-worker",
        description="Job worker: priority queues, built-in handlers, durable statuses. "
        "`python-worker COMMAND --help` says what a command does and which settings it reads.",
    )
    parser.add_argument("--version", action="version", version=f"python-worker {version}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = _command(
        commands,
        "run",
        "run the worker (RabbitMQ by default; see WORKER_BROKER)",
        "Consume jobs from the priority queues, run them, report each status to the status API "
        "and heartbeats to the orchestrator, until SIGTERM or SIGINT: then drain (no new jobs, "
        "running ones finish within SHUTDOWN_GRACE_SECONDS) and exit 0. Logs a start-up banner "
        "first: version, broker, queues, URLs, capacity, processes.",
        WORKER_SETTINGS,
    )
    run.add_argument(
        "--processes",
        metavar="N",
        type=_processes,
        help="worker processes side by side, or 'auto' for one per core (WORKER_PROCESSES)",
    )
    process = _command(
        commands,
        "process",
        "run JSON-lines jobs from FILE (- for stdin) in memory; status updates to stdout",
        "Run the jobs of a JSON-lines file through the worker's own use case on the embedded "
        "broker, and print every status update as the JSON line that would be posted. A line "
        "that is no valid job is handled as the worker would dead-letter it. Exit 0 once every "
        "line is handled.",
        IN_MEMORY_SETTINGS,
    )
    process.add_argument("file", metavar="FILE", help="JSON-lines file of jobs, or - for stdin")
    demo = _command(
        commands,
        "demo",
        "a short end-to-end show on the embedded broker",
        "Publish the bundled sample jobs (or --jobs FILE) to the embedded broker, low first, "
        "and show the order they started in, with each result. A line that is not a JSON "
        "object, or whose priority is not high, medium or low, stops it with one line (exit 2).",
        IN_MEMORY_SETTINGS,
    )
    demo.add_argument("--jobs", metavar="FILE", help="JSON-lines jobs, each with a 'priority'")
    publish = _command(
        commands,
        "publish",
        "send jobs to the broker (persistent, with publisher confirms)",
        "Send one job (--type, --id, --payload) or every line of FILE (- for stdin) as a "
        "persistent message, and print the id of each job the broker confirmed, generated ids "
        "included (a line without an id gets one). Every line is checked first: bad JSON or a "
        "priority that is not high, medium or low sends nothing and exits 2. A line's priority "
        "picks its queue unless --queue is given. Exit 1 if the broker is unreachable or did "
        "not confirm a job.",
        BROKER_SETTINGS,
    )
    publish.add_argument("file", metavar="FILE", nargs="?", help="JSON-lines jobs, or - for stdin")
    publish.add_argument("--queue", choices=[p.value for p in Priority], help="tier for every job")
    publish.add_argument("--type", help="one job of this type (instead of FILE)")
    publish.add_argument("--id", help="id of that job (default: generated, and printed)")
    publish.add_argument("--payload", help="payload of that job, as JSON")
    check = _command(
        commands,
        "check",
        "preflight: settings, broker nodes, permissions, APIs, outbox (exit 1 if not)",
        "Check everything `run` needs before starting the service, one line per check (ok, "
        "warn, FAIL with a fix): the settings, each broker node, the topology and permissions, "
        "the status API and the orchestrator (TLS included), the outbox and job memory "
        "directories. Exit 1 if a check failed (--strict: or warned). Never prints a secret.",
        WORKER_SETTINGS,
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
    dead_letters = _command(
        commands,
        "dead-letters",
        "see what the worker refused and why; replay it, or empty the queue",
        "Read the dead-letter queue without losing or reordering a message, put messages back "
        "on their queues (each confirmed before it is removed), or delete them. Exit 0 when "
        "done, 1 when something could not be done, 2 for a usage error.",
        BROKER_SETTINGS,
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
