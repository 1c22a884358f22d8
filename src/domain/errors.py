"""The domain's own error types; each carries a message fit to show a user as `errorMessage`."""

from collections.abc import Iterable


class JobError(Exception):
    """Raised when a job cannot be run; the base of every domain error."""


class InvalidMessage(JobError):
    """Raised when a message body is not a job envelope (not UTF-8 JSON, not an object, ...)."""

    def __init__(self, reason: str, job_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.job_id = job_id


class UnknownJobType(JobError):
    """Raised when a job's `type` names no built-in handler."""

    @classmethod
    def naming(cls, job_type: str, known: Iterable[str]) -> "UnknownJobType":
        """The error for `job_type`, listing the types that do exist."""
        return cls(f"unknown job type {job_type!r}; known types: {', '.join(sorted(known))}")


class InvalidPayload(JobError):
    """Raised when a job's payload is missing something, has a wrong value or exceeds a limit."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        """The payload field a limit's message starts with: a job names it `payload.<field>`."""
