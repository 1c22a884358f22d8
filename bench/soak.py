"""Soak: a long mixed load on a real worker process with periodic faults; the ledger must hold.

Starts a private RabbitMQ node, the stand-in status API and one `python-worker run` process, then
for `--minutes` publishes a mix of every job type on all three priorities (plus a bad message
every few seconds) while, every `--fault-every` seconds, one fault from the cycle

    kill -9 the worker + restart it | close_all_connections | API refuses for 20 s |
    broker stop_app, 10 s, start_app

hits it. Once a minute it prints the ledger's progress and the worker's memory (VmRSS). At the
end it stops publishing, waits for everything to settle and prints the ledger report; exit 1
if the ledger does not hold.

    .venv/bin/python bench/soak.py --minutes 10
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]  # tests.support; python_worker comes from the installed package

from devtools.stand_in_api import StandInApi  # noqa: E402
from tests.support.ledger import Ledger, process_rss_mib  # noqa: E402
from tests.support.rabbitmq_node import RabbitMQNode  # noqa: E402
from tests.support.worker_process import WorkerProcess  # noqa: E402

FAULTS = ("kill -9 + restart", "close_all_connections", "API refuses 20 s", "stop_app 10 s")


def bad_messages() -> itertools.cycle[tuple[str, bytes, str, bool]]:
    """(queue, body, reason, id readable?) — the bodies get a serial number to stay unique."""
    return itertools.cycle(
        [
            ("job.high", b"not json %d", "not valid UTF-8 JSON", False),
            ("job.medium", b"[%d]", "is a list, not a JSON object", False),
            ("job.low", b'{"id": "bad-%d", "type": "teleport"}', "unknown job type", True),
            (
                "job.low",
                b'{"id": "bad-%d", "type": "average", "payload": {"numbers": []}}',
                "at least one number",
                True,
            ),
        ]
    )


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="pw-soak-"))
        self.node = RabbitMQNode()
        self.api = StandInApi()
        self.workers: list[WorkerProcess] = []
        self.rss: list[tuple[float, int, float | None]] = []  # (minute, worker no., MiB)
        self.faults_done: list[str] = []
        self.began = time.monotonic()
        self.stop = threading.Event()

    @property
    def worker(self) -> WorkerProcess:
        return self.workers[-1]

    def start_worker(self) -> None:
        n = len(self.workers)
        self.workers.append(
            WorkerProcess(
                self.workdir / f"worker-{n}.log",
                rabbitmq_host=self.node.host,
                rabbitmq_port=self.node.port,
                rabbitmq_heartbeat=5,
                status_update_url=self.api.status_url,
                orchestrator_url=self.api.url,
                heartbeat_interval=1,
                status_outbox_dir=self.workdir / "outbox",
                worker_id=f"soak-{n}",
                worker_capacity=self.args.capacity,
                shutdown_grace_seconds=20,
                metrics_log_interval=60,
            ).start()
        )

    def logs(self) -> str:
        return "\n".join(worker.log() for worker in self.workers)

    def elapsed(self) -> float:
        return time.monotonic() - self.began

    def say(self, text: str) -> None:
        print(f"[{self.elapsed():6.0f}s] {text}", flush=True)

    # -- faults --------------------------------------------------------------------------------

    def fault(self, name: str) -> None:
        self.say(f"fault: {name}")
        if name.startswith("kill"):
            self.worker.kill()
            self.start_worker()
        elif name.startswith("close_all"):
            self.node.close_all_connections()
        elif name.startswith("API"):
            self.api.refuse()
            self.stop.wait(20)
            self.api.resume()
        else:
            self.node.stop_app()
            self.stop.wait(10)
            self.node.start_app()
        self.faults_done.append(name)
        self.say(f"fault over: {name}")

    def run_faults(self) -> None:
        for name in itertools.cycle(FAULTS):
            if self.stop.wait(self.args.fault_every):
                return
            try:
                self.fault(name)
            except Exception as exc:  # keep soaking; the ledger judges the outcome
                self.say(f"fault {name} raised {exc!r}")
                self.node.ensure_running()

    # -- the run -------------------------------------------------------------------------------

    def minute_line(self, minute: int) -> None:
        rss = process_rss_mib(self.worker.pid)
        self.rss.append((minute, len(self.workers) - 1, rss))
        counts = self.ledger.counts()
        self.say(
            f"minute {minute}: "
            + " ".join(f"{k}={v}" for k, v in counts.items())
            + f" pending={len(self.ledger.pending())} worker=#{len(self.workers) - 1} "
            f"rss={rss if rss is None else round(rss, 1)}MiB faults={len(self.faults_done)}"
        )

    def run(self) -> int:
        self.node.start()
        self.api.start()
        self.ledger = Ledger(self.node, self.api, prefix="soak", logs=self.logs)
        try:
            return self._run()
        finally:
            self.stop.set()
            self.ledger.close()
            for worker in self.workers:
                worker.stop()
            self.api.stop()
            self.node.close()
            print(f"worker logs in {self.workdir}")

    def _run(self) -> int:
        self.start_worker()
        self.ledger.start_background(None, per_second=self.args.rate)
        faults = threading.Thread(target=self.run_faults, daemon=True)
        faults.start()
        bad = bad_messages()
        serial = itertools.count()
        end = self.began + self.args.minutes * 60
        next_minute, next_bad, minute = self.began + 60, self.began + 5, 0
        while time.monotonic() < end:
            time.sleep(0.5)
            now = time.monotonic()
            if now >= next_bad:
                next_bad += 5
                queue, body, reason, has_id = next(bad)
                n = next(serial)
                raw = body % n
                self.ledger.publish_bad(queue, raw, reason, job_id=f"bad-{n}" if has_id else None)
            if now >= next_minute:
                next_minute += 60
                minute += 1
                self.minute_line(minute)
        self.say("publishing stops; waiting for the fault in progress and for everything to settle")
        self.stop.set()
        faults.join(60)
        self.ledger.stop_background()
        self.node.ensure_running()
        settled = self.ledger.wait_until_settled(self.args.settle_timeout)
        self.say(f"settled: {settled}")
        self.minute_line(minute + 1)
        print(self.ledger.report())
        print(
            "worker memory (VmRSS, MiB) by minute: "
            + ", ".join(f"{m}:#{w}={'-' if r is None else round(r, 1)}" for m, w, r in self.rss)
        )
        print(f"faults: {len(self.faults_done)} ({', '.join(self.faults_done)})")
        print(
            f"worker processes: {len(self.workers)}; lost-connection lines: "
            f"{self.logs().count('broker connection to')}"
        )
        return 0 if settled and not self.ledger.failing(self.ledger.problems()) else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=float, default=30, help="good jobs published per second")
    parser.add_argument("--fault-every", type=float, default=60, help="seconds between faults")
    parser.add_argument("--capacity", type=int, default=4)
    parser.add_argument("--settle-timeout", type=float, default=300)
    sys.exit(Soak(parser.parse_args()).run())


if __name__ == "__main__":
    main()
