"""`python-worker run` as a real child process, configured through real environment variables."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from python_worker.bootstrap import setting_prefixes

CLI = [sys.executable, "-P", "-m", "python_worker"]
"""`python-worker` as this interpreter runs it: the installed package, never one in the cwd."""

PROXY_VARIABLES = frozenset({"http_proxy", "https_proxy", "all_proxy", "no_proxy"})
"""Lower-cased; `run` and `check` refuse a proxy that applies to the APIs (README: Internal
HTTPS), so a CI machine's proxy settings would stop every worker reporting to 127.0.0.1."""


def clean_environment(**env: str) -> dict[str, str]:
    """This process's environment without any of the worker's variables or a proxy's, plus
    `env`: what a test gives a `python-worker` it starts, so it means only what the test says.
    RABBITMQ_URL there names the suite's broker (and would conflict with RABBITMQ_HOST), a
    LOG_LEVEL would change the worker, a name it does not know would stop it, and `run` and
    `check` refuse a proxy that applies to the APIs (README: Internal HTTPS)."""
    inherited = {
        key: value
        for key, value in os.environ.items()
        if not key.upper().startswith(setting_prefixes()) and key.lower() not in PROXY_VARIABLES
    }
    return inherited | env


class WorkerProcess:
    """One worker process; its log goes to a file the test can read after the fact."""

    def __init__(self, log_path: Path, cwd: Path | None = None, **env: str | int | float) -> None:
        self.log_path = log_path
        self._cwd = cwd
        self._env = {key.upper(): str(value) for key, value in env.items()}
        self._process: subprocess.Popen[bytes] | None = None

    def setting(self, name: str) -> str | None:
        """The value this worker was started with for the variable `name`, if any."""
        return self._env.get(name)

    def start(self) -> WorkerProcess:
        environment = clean_environment(**self._env)
        log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [*CLI, "run"],
            env=environment,
            cwd=self._cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own process group, so tear-down reaches a supervisor's children too.
            start_new_session=True,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def signal(self, signum: int) -> None:
        assert self._process is not None
        self._process.send_signal(signum)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait(30)

    def terminate(self, timeout: float = 60) -> int:
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float) -> int:
        assert self._process is not None
        return self._process.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 30) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return True
            if not self.running():
                return False
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        """Tear-down: never leave a worker behind, whatever the test did. The whole process
        group: a supervisor killed alone leaves its worker processes running, and they would
        take the next tests' jobs off the shared broker."""
        assert self._process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL)
        if self._process.poll() is None:
            self.wait(30)
