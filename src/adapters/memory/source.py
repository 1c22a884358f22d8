"""An in-memory broker with the three priority queues and a dead-letter list."""

import collections
import itertools
import threading
import time
from dataclasses import dataclass

from python_worker.application.ports import Delivery, MessageSource, Settlement, SourceStatus
from python_worker.domain.jobs import Priority


@dataclass(frozen=True)
class DeadLetter:
    """A message rejected without requeue, why, and after how many attempts at the job."""

    body: bytes
    queue: str
    reason: str | None
    attempts: int = 1


@dataclass(frozen=True)
class _Message:
    body: bytes
    priority: Priority
    deliveries: int = 0
    earlier_attempts: int = 0


class InMemorySource(MessageSource):
    """Three FIFO queues served highest tier first, with broker-like settlement.

    A requeued message goes back to the head of its queue and counts one more delivery, as on
    RabbitMQ. State lives on the instance; `acked`, `dead_lettered`, `requeued` and `started`
    are there for the demo and the tests to look at.
    """

    def __init__(self) -> None:
        self._queues: dict[Priority, collections.deque[_Message]] = {
            priority: collections.deque() for priority in Priority
        }
        self._ready = threading.Condition()
        self._unsettled: dict[int, _Message] = {}
        self._tags = itertools.count(1)
        self._receiving = True
        self.acked: list[bytes] = []
        self.dead_lettered: list[DeadLetter] = []
        self.requeued: list[bytes] = []
        self.started: list[tuple[str, bytes]] = []
        """Every delivery handed out, in order: (queue, body)."""

    def publish(self, queue: str | Priority, body: bytes, *, earlier_attempts: int = 0) -> None:
        """Enqueue a message on `job.high|medium|low` (or a `Priority`); `earlier_attempts`
        for a dead-lettered one put back (`Delivery.earlier_attempts`)."""
        priority = queue if isinstance(queue, Priority) else Priority.from_queue(queue)
        with self._ready:
            self._queues[priority].append(_Message(body, priority, 0, earlier_attempts))
            self._ready.notify()

    def receive(self, timeout: float) -> Delivery | None:
        deadline = time.monotonic() + timeout
        with self._ready:
            while True:
                if not self._receiving:
                    return None
                for priority in Priority.by_rank():
                    queue = self._queues[priority]
                    if queue:
                        return self._deliver(queue.popleft())
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._ready.wait(remaining):
                    return None

    def _deliver(self, message: _Message) -> Delivery:
        tag = next(self._tags)
        delivered = _Message(
            message.body, message.priority, message.deliveries + 1, message.earlier_attempts
        )
        self._unsettled[tag] = delivered
        self.started.append((message.priority.queue, message.body))
        return Delivery(
            body=message.body,
            priority=message.priority,
            handle=tag,
            attempt=delivered.deliveries,
            redelivered=delivered.deliveries > 1,
            earlier_attempts=delivered.earlier_attempts,
        )

    def settle(self, delivery: Delivery, outcome: Settlement, reason: str | None = None) -> None:
        with self._ready:
            message = self._unsettled.pop(delivery.handle, None)
            if message is None:
                raise ValueError(f"delivery {delivery.handle} was already settled")
            if outcome is Settlement.ACK:
                self.acked.append(message.body)
            elif outcome is Settlement.DEAD_LETTER:
                self.dead_lettered.append(
                    DeadLetter(message.body, message.priority.queue, reason, delivery.job_attempt)
                )
            else:
                self.requeued.append(message.body)
                self._queues[message.priority].appendleft(message)
                self._ready.notify()

    def stop_receiving(self) -> None:
        with self._ready:
            self._receiving = False
            self._ready.notify_all()

    def close(self) -> None:
        # Like a closed channel: whatever was handed out and not settled becomes ready again.
        with self._ready:
            for tag in sorted(self._unsettled, reverse=True):
                message = self._unsettled.pop(tag)
                self._queues[message.priority].appendleft(message)

    def status(self) -> SourceStatus:
        with self._ready:
            waiting = sum(len(queue) for queue in self._queues.values())
        return SourceStatus(connected=True, consuming=self._receiving, waiting=waiting)

    def pending(self) -> int:
        """Messages ready plus messages handed out and not yet settled."""
        with self._ready:
            return sum(len(queue) for queue in self._queues.values()) + len(self._unsettled)

    def is_drained(self) -> bool:
        return self.pending() == 0
