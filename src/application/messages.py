"""Turns a message body into a `Job`, or says in one line why it is not one."""

import json
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from python_worker.domain.errors import InvalidMessage
from python_worker.domain.jobs import Job, json_kind

MAX_MESSAGE_BYTES = 1_048_576
"""Largest message body accepted (1 MiB); a bigger one is dead-lettered unread."""
MAX_JOB_ID_LENGTH = 256
MAX_JOB_TYPE_LENGTH = 64


class JobEnvelope(BaseModel):
    """The contract §4 message: `id`, `type`, optional `payload`; extra fields kept and ignored."""

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
        lenient = _lenient_parse(body)
        if lenient is None:
            raise InvalidMessage(f"message body is not valid UTF-8 JSON: {exc}") from None
        found, problem = lenient
        raise InvalidMessage(
            f"message body is not valid JSON: {problem}",
            job_id=_readable_id(found) if isinstance(found, dict) else None,
        ) from None
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


def job_id_of(body: bytes) -> str | None:
    """The job id a body names, if one can be read at all (for log lines about it)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        lenient = _lenient_parse(body) if len(body) <= MAX_MESSAGE_BYTES else None
        data = lenient[0] if lenient is not None else None
    return _readable_id(data) if isinstance(data, dict) else None


def _lenient_parse(body: bytes) -> tuple[Any, str] | None:
    """What a lenient reader makes of a body strict JSON refused, and what it had to forgive.

    Forgives what common encoders write by mistake: NaN and ±Infinity (Python's `json.dumps`
    writes them by default) and a UTF-8 byte-order mark. None when that is not enough.
    The result only serves to name the job in a `failed` status: the message is still
    refused, and NaN is still no number.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    forgiven: list[str] = []
    if text.startswith("\ufeff"):
        text = text[1:]
        forgiven.append("it starts with a UTF-8 byte-order mark")
    constants: list[str] = []

    def constant(name: str) -> None:
        constants.append(name)

    try:
        data = json.loads(text, parse_constant=constant)
    except (ValueError, RecursionError):
        return None
    if constants:
        names = ", ".join(dict.fromkeys(constants))
        forgiven.append(f"it holds {names}, which JSON has no place for (send a number or null)")
    if not forgiven:
        return None
    return data, "; ".join(forgiven)


def _readable_id(data: dict[str, Any]) -> str | None:
    value = data.get("id")
    if isinstance(value, str) and 0 < len(value) <= MAX_JOB_ID_LENGTH:
        return value
    return None
