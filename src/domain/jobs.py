"""The job model: what a message asks the worker to do."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Priority(Enum):
    """A queue tier; tiers are declared in the order they are served."""

    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"

    @property
    def queue(self) -> str:
        return f"job.{self.value}"

    @classmethod
    def from_queue(cls, queue: str) -> "Priority":
        return cls(queue.removeprefix("job."))

    @classmethod
    def by_rank(cls) -> "list[Priority]":
        """Highest tier first (an Enum iterates in declaration order)."""
        return list(cls)


class JobStatus(Enum):
    """A job's reported state; `running` always comes before one final state."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        return self is not JobStatus.RUNNING


def json_kind(value: object) -> str:
    """What kind of JSON value this is, for an error message: "a list", "null"..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


@dataclass(frozen=True)
class Job:
    """One unit of work: `type` picks the handler, `payload` is its input."""

    id: str
    type: str
    payload: Mapping[str, Any] = field(default_factory=dict)
