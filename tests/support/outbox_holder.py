"""Another process with a status outbox open: what a second worker on one directory meets."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

HOLD = """
import sys
from python_worker.adapters.sqlite.outbox import Outbox
outbox = Outbox(sys.argv[1])
print("open", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def outbox_held(directory: Path) -> Iterator[subprocess.Popen[str]]:
    """A Python process holding an `Outbox` on `directory` until the block ends (or it is
    killed inside it)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(directory)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "open\n"
        yield holder
    finally:
        holder.kill()
        holder.wait(timeout=30)
