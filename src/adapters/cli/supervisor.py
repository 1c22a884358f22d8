"""Runs N worker processes side by side: one per core gets past the GIL."""

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from python_worker.adapters.backoff import full_jitter
from python_worker.adapters.cli.commands import SUPERVISED

log = logging.getLogger(__name__)

CONFIG_ERROR = 2
"""A child exiting with this status met a bad setting: restarting it cannot help."""


@dataclass
class _Child:
    index: int
    process: subprocess.Popen[bytes] | None = None
    crashes: int = 0
    restart_at: float = 0.0
    started_at: float = field(default_factory=time.monotonic)


class Supervisor:
    """Starts `count` copies of a command, restarts one that crashes, drains all on a signal.

    Each child gets its own environment from `child_env(index)` (its worker id suffix, its own
    outbox directory...). A child that dies is restarted with backoff; one that exits with the
    configuration-error status stops everything, since every copy would fail alike. The first
    SIGTERM/SIGINT is forwarded to every child, which drains as a single worker would; a
    second one kills them at once (the broker redelivers whatever was unacknowledged).
    """

    def __init__(
        self,
        count: int,
        command: list[str],
        child_env: Callable[[int], Mapping[str, str]],
    ) -> None:
        self._command = command
        self._child_env = child_env
        self._children = [_Child(index) for index in range(count)]
        self._stopping = threading.Event()
        self._signals = 0
        self._failed_config = False

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        log.info("supervising %d worker processes", len(self._children))
        for child in self._children:
            self._start(child)
        while not self._stopping.is_set():
            self._reap_and_restart()
            self._stopping.wait(0.2)
        return self._drain()

    def _start(self, child: _Child) -> None:
        env = {**os.environ, **self._child_env(child.index)}
        child.process = subprocess.Popen(self._command, env=env)
        child.started_at = time.monotonic()
        log.info("worker process %d started (pid %d)", child.index, child.process.pid)

    def _reap_and_restart(self) -> None:
        now = time.monotonic()
        for child in self._children:
            process = child.process
            if process is None:
                if now >= child.restart_at:
                    self._start(child)
                continue
            status = process.poll()
            if status is None:
                if now - child.started_at > 60:
                    child.crashes = 0  # a minute up: the next crash starts the backoff anew
                continue
            if status == CONFIG_ERROR:
                log.error("worker process %d stopped on a configuration error", child.index)
                self._failed_config = True
                self._stopping.set()
                return
            child.crashes += 1
            delay = full_jitter(1.0, child.crashes, 30.0)
            log.warning(
                "worker process %d (pid %d) exited with status %d; restarting in %.1fs",
                child.index,
                process.pid,
                status,
                delay,
            )
            child.process = None
            child.restart_at = now + delay

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("%s received: draining every worker process", signal.Signals(signum).name)
            self._forward(signal.SIGTERM)
            self._stopping.set()
        else:
            self._forward(signal.SIGKILL)
            os._exit(128 + signum)

    def _forward(self, signum: int) -> None:
        for child in self._children:
            if child.process is not None and child.process.poll() is None:
                child.process.send_signal(signum)

    def _drain(self) -> int:
        if self._failed_config:
            self._forward(signal.SIGTERM)
        statuses = []
        for child in self._children:
            if child.process is not None:
                statuses.append(child.process.wait())
        log.info("all worker processes stopped")
        if self._failed_config:
            return CONFIG_ERROR
        # A process the forwarded SIGTERM found before it set its handlers died of it at once:
        # it had taken no job yet (run_worker sets them first), so that is a clean stop too.
        clean = (0, -signal.SIGTERM)
        return 0 if all(status in clean for status in statuses) else 1


def child_command() -> list[str]:
    """The same Python running `python-worker run` for one process."""
    # -P: the working directory is not put on sys.path, so a package there named like one of
    # ours cannot shadow it (an operator may start the supervisor from anywhere).
    return [sys.executable, "-P", "-m", "python_worker", "run"]


def child_environment(
    index: int,
    worker_id: str,
    outbox_dir: Path,
    job_memory_dir: Path,
    metrics_port: int | None,
) -> dict[str, str]:
    """One process of several: its own id, outbox and metrics port; the job memory is shared."""
    env = {
        SUPERVISED: "1",
        "WORKER_PROCESSES": "1",
        "WORKER_ID": f"{worker_id}-p{index}",
        # Process 0 keeps the plain directory, so going from one process to several (or back)
        # still replays an outbox left there.
        "STATUS_OUTBOX_DIR": str(outbox_dir if index == 0 else outbox_dir / f"p{index}"),
        "JOB_MEMORY_DIR": str(job_memory_dir),
    }
    if metrics_port is not None:
        env["METRICS_PORT"] = str(metrics_port + index)
    return env
