"""The disk half of `python-worker check`: the status outbox directory is writable.

The check writes and deletes one temporary file, reads how many updates an outbox left there
holds, and says which running worker, if any, has it open.
"""

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from python_worker.adapters.sqlite.outbox import Outbox
from python_worker.application.ports import CheckResult, Outcome, Preflight

LOW_DISK_BYTES = 100 * 1024 * 1024


class OutboxPreflight(Preflight):
    """The outbox directory: writable, room left, how full."""

    def __init__(self, directory: Path, max_items: int | None = None) -> None:
        self._directory = directory
        self._max_items = max_items

    def checks(self) -> Iterator[CheckResult]:
        yield _outbox_check(self._directory, self._max_items)


def _outbox_check(directory: Path, max_items: int | None) -> CheckResult:
    what = f"status outbox {directory}"
    fix = "set STATUS_OUTBOX_DIR to a directory the worker's user can create and write"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".preflight-") as probe:
            probe.write(b"preflight")
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return CheckResult(Outcome.FAIL, f"{what}: not writable ({reason})", fix)
    free = shutil.disk_usage(directory).free
    depth = Outbox.depth_in(directory)
    held = f", holds {depth} undelivered update(s)" if depth else ""
    holder = Outbox.holder_in(directory)
    # A second worker on this directory would be refused at start-up: say whose it is.
    opened = f", open in a running worker ({holder})" if holder else ""
    text = f"{what} writable ({_size(free)} free{held}{opened})"
    if free < LOW_DISK_BYTES:
        return CheckResult(
            Outcome.WARN, text + ": little disk left", "free disk space on that filesystem"
        )
    if depth and max_items is not None and depth >= max_items:
        return CheckResult(
            Outcome.WARN,
            text + f": full (STATUS_OUTBOX_MAX_ITEMS={max_items}); the worker takes no new job "
            "until the API takes them",
            "make the status API reachable; the worker replays the outbox oldest-first",
        )
    return CheckResult(Outcome.OK, text)


def _size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"
