"""Turns a message body into a `Job`, or says in one line why it is not one."""

from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from domain.errors import InvalidMessage
from domain.jobs import Job, json_kind

MAX_MESSAGE_BYTES = 1_048_576
"""Largest message body accepted (1 MiB); a bigger one is dead-lettered unread."""
MAX_JOB_ID_LENGTH = 256
MAX_JOB_TYPE_LENGTH = 64


class JobEnvelope(BaseModel):
    """The SPEC §4 message: `id`, `type`, optional `payload`; extra fields kept and ignored."""

    model_config = ConfigDict(extra="allow", strict=True)

    id: str = Field(min_length=1, max_length=MAX_JOB_ID_LENGTH)
    type: str = Field(min_length=1, max_length=MAX_JOB_TYPE_LENGTH)
    payload: dict[str, Any] = Field(default_factory=dict)

    @field_validator("payload", mode="before")
    @classmethod
    def _null_payload_is_empty(cls, value: object) -> object:
        return {} if value is None else value


def parse_job(body: bytes) -> Job:
    """Decode and validate one message body; raises `InvalidMessage` with a readable reason."""
    if len(body) > MAX_MESSAGE_BYTES:
        raise InvalidMessage(
            f"message body is {len(body)} bytes; the limit is {MAX_MESSAGE_BYTES} bytes"
        )
    try:
        # orjson is strict where the stdlib is lenient: it refuses NaN/Infinity, invalid UTF-8
        # and nesting deeper than 1024 levels (the stdlib would raise RecursionError).
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidMessage(f"message body is not valid UTF-8 JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidMessage(f"message body is {json_kind(data)}, not a JSON object")
    readable_id = _readable_id(data)
    try:
        envelope = JobEnvelope.model_validate(data)
    except ValidationError as exc:
        raise InvalidMessage(describe_validation_error(exc), job_id=readable_id) from None
    return Job(id=envelope.id, type=envelope.type, payload=envelope.payload)


def describe_validation_error(exc: ValidationError) -> str:
    """The first problem of a pydantic error as one line: `field: what is wrong`."""
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"])
    message = first["msg"]
    if first["type"] == "missing":
        message = "is required"
    return f"{where or 'message'}: {message}{more_problems(exc.error_count())}"


def more_problems(count: int) -> str:
    """The suffix saying how many problems a one-line message leaves out of `count`."""
    if count < 2:
        return ""
    return f" (and {count - 1} more problem{'s' if count > 2 else ''})"


def _readable_id(data: dict[str, Any]) -> str | None:
    value = data.get("id")
    if isinstance(value, str) and 0 < len(value) <= MAX_JOB_ID_LENGTH:
        return value
    return None
