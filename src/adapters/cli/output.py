"""What the commands print to: a stdout whose reader may go away (`… | head -1`)."""

import contextlib
import os
import signal
import sys
import threading
from typing import Any, NoReturn, TextIO

SOCKETLESS_COMMANDS = frozenset({"process", "demo"})
"""Commands on the in-memory adapters only: SIGPIPE may end them (see `prepare_stdout`)."""


class ExitOnClosedPipe:
    """stdout for the commands that print: a reader that went away ends the command at once.

    `python-worker check | head -1` closes the pipe after one line. Like any Unix tool, the
    command then ends as if SIGPIPE killed it (status 141 in the shell), without a traceback.
    SIGPIPE itself stays ignored, as Python sets it, in commands that talk to a broker or an
    API, so that a socket closed by its peer is an error the adapters handle; `process` and
    `demo` use no sockets and take SIGPIPE's default instead, which ends them from whichever
    thread wrote.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            _die_of_sigpipe()

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            _die_of_sigpipe()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def prepare_stdout(command: str) -> None:
    """Make a closed stdout end `command` the Unix way (see ExitOnClosedPipe)."""
    if command in SOCKETLESS_COMMANDS:
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    if not isinstance(sys.stdout, ExitOnClosedPipe):
        sys.stdout = ExitOnClosedPipe(sys.stdout)


def _die_of_sigpipe() -> NoReturn:
    with contextlib.suppress(OSError):
        sys.stderr.flush()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGPIPE)
    os._exit(128 + signal.SIGPIPE)  # off the main thread, or if the signal did not end us
