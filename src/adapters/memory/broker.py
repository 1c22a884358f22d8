"""The embedded in-memory broker: the demo's and the tests' source, with a publisher into it."""

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from python_worker.adapters.memory.source import InMemorySource
from python_worker.application.ports import (
    Broker,
    CheckResult,
    JobPublisher,
    Outcome,
    Preflight,
    PublishReport,
)
from python_worker.domain.jobs import Priority

if TYPE_CHECKING:
    from python_worker.adapters.memory.dead_letters import InMemoryDeadLetters


class InMemoryPublisher(JobPublisher):
    """Publishes into an `InMemorySource`; every message is taken at once."""

    def __init__(self, source: InMemorySource) -> None:
        self._source = source

    def publish(
        self,
        messages: Iterable[tuple[Priority, bytes]],
        on_confirmed: Callable[[int], None] | None = None,
    ) -> PublishReport:
        report = PublishReport()
        for position, (priority, body) in enumerate(messages):
            self._source.publish(priority, body)
            report.confirmed += 1
            if on_confirmed is not None:
                on_confirmed(position)
        return report


class InMemoryPreflight(Preflight):
    """Nothing to reach: the broker lives in the worker's own process."""

    def checks(self) -> Iterator[CheckResult]:
        yield CheckResult(Outcome.OK, "embedded in-memory broker (WORKER_BROKER=memory)")


class InMemoryBroker(Broker):
    """One `InMemorySource` per broker, shared by the worker and the publisher."""

    def __init__(self) -> None:
        self._source = InMemorySource()

    def describe(self) -> str:
        return "embedded in-memory broker (in this process; gone when it exits)"

    def source(self) -> InMemorySource:
        return self._source

    def publisher(self) -> InMemoryPublisher:
        return InMemoryPublisher(self._source)

    def preflight(self) -> InMemoryPreflight:
        return InMemoryPreflight()

    def dead_letters(self) -> "InMemoryDeadLetters":
        # Imported when asked for: a worker never reads its dead letters (bench/: RSS).
        from python_worker.adapters.memory.dead_letters import InMemoryDeadLetters

        return InMemoryDeadLetters(self._source)
