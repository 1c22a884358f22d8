"""The embedded broker's dead-letter list behind the `DeadLetters` port, as RabbitMQ's behaves."""

from collections.abc import Sequence

from python_worker.adapters.memory.source import DeadLetter, InMemorySource
from python_worker.application.dead_letters import (
    RequeuePlan,
    Step,
    dead_lettered_message,
    merge_copies,
)
from python_worker.application.ports import (
    DeadLetteredMessage,
    DeadLetters,
    DeadLetterSelection,
    RequeueReport,
)
from python_worker.domain.jobs import Priority

JOB_QUEUES = frozenset(priority.queue for priority in Priority)


class InMemoryDeadLetters(DeadLetters):
    """`source.dead_lettered`, oldest first: a requeue publishes a message back into the source
    before it leaves the list, copies of one body go back once, and each call works on the
    messages there when it began. The embedded broker records no worker and no time."""

    def __init__(self, source: InMemorySource) -> None:
        self._source = source

    def count(self) -> int:
        return len(self._source.dead_lettered)

    def list(self, limit: int) -> Sequence[DeadLetteredMessage]:
        return merge_copies(_describe(entry) for entry in self._source.dead_lettered[:limit])

    def find(self, key: str) -> Sequence[DeadLetteredMessage]:
        messages = merge_copies(_describe(entry) for entry in list(self._source.dead_lettered))
        return [message for message in messages if message.answers_to(key)]

    def requeue(self, selection: DeadLetterSelection) -> RequeueReport:
        plan = RequeuePlan(selection, JOB_QUEUES, "the dead-letter list")
        for entry in list(self._source.dead_lettered):
            message = _describe(entry)
            step = plan.step(message)
            if step is Step.LEAVE:
                continue
            if step is Step.PUT_BACK:
                self._source.publish(entry.queue, entry.body, earlier_attempts=entry.attempts)
                plan.moved(message)
            self._source.dead_lettered.remove(entry)
        return plan.finish()

    def purge(self) -> int:
        count = len(self._source.dead_lettered)
        # Only those there now: a message dead-lettered meanwhile stays.
        del self._source.dead_lettered[:count]
        return count


def _describe(entry: DeadLetter) -> DeadLetteredMessage:
    return dead_lettered_message(
        entry.body,
        queue=entry.queue,
        reason=entry.reason or "(no reason given)",
        dead_lettered_at=None,
        worker_id=None,
    )
