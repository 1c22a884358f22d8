"""A heartbeat sink that keeps what it receives."""

import threading

from python_worker.application.ports import Heartbeat, HeartbeatSink


class InMemoryHeartbeatSink(HeartbeatSink):
    """Records every heartbeat, in order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.heartbeats: list[Heartbeat] = []

    def send(self, heartbeat: Heartbeat) -> None:
        with self._lock:
            self.heartbeats.append(heartbeat)
