"""The job-type table: each `type` names its payload schema and the domain handler that runs it."""

import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from python_worker.application.messages import more_problems
from python_worker.domain import calculation, transformation, validation
from python_worker.domain.calculation import Aggregate, Number, number_problem
from python_worker.domain.errors import InvalidPayload, UnknownJobType
from python_worker.domain.jobs import json_kind
from python_worker.domain.limits import (
    DEFAULT_COUNT,
    MAX_SEED,
)
from python_worker.domain.transformation import JsonObject, lowercase, normalize, reverse, uppercase
from python_worker.domain.validation import Verdict

RngFactory = Callable[[int | None], random.Random]
"""Makes the random source for generated numbers from the payload's `seed` (None: unseeded)."""


# --- Payload schemas ------------------------------------------------------------------------


def _number(value: object) -> Number:
    problem = number_problem(value)
    if problem is not None:
        raise PydanticCustomError("number", problem)
    assert isinstance(value, int | float)  # number_problem has just ruled out the rest
    return value


# A plain validator, so that `true`, `"3"` and `NaN` each get one clear reason rather than
# one complaint per member of an `int | float` union. The rule itself is the domain's.
JsonNumber = Annotated[int | float, PlainValidator(_number)]


class _Payload(BaseModel):
    """A payload's shape and types. Its limits (how many numbers, how long a pattern...) are
    the domain's to enforce, once, where the handler meets the value: see `run_job`."""

    # A misspelt option ("feilds") must fail loudly, not be silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class CalculationPayload(_Payload):
    operation: str | None = None
    numbers: list[JsonNumber] | None = None
    count: StrictInt | None = None
    # The seed never reaches the domain (it seeds the random source here): its bound lives here.
    seed: StrictInt | None = Field(default=None, ge=-MAX_SEED, le=MAX_SEED)

    @model_validator(mode="after")
    def _numbers_or_count(self) -> "CalculationPayload":
        if self.numbers is not None and (self.count is not None or self.seed is not None):
            raise PydanticCustomError(
                "numbers_and_count",
                "give numbers, or count and seed to generate them, not both",
            )
        return self


class SortPayload(CalculationPayload):
    order: StrictStr = "asc"


class TransformPayload(_Payload):
    operation: str | None = None
    data: dict[str, Any]


class FilterPayload(TransformPayload):
    fields: list[StrictStr] | None = None
    exclude: list[StrictStr] | None = None


class ValuePayload(_Payload):
    type: str | None = None
    value: Any = None


class PhonePayload(ValuePayload):
    region: StrictStr | None = Field(default=None, max_length=8)


class RangePayload(ValuePayload):
    min: JsonNumber | None = None
    max: JsonNumber | None = None


class LengthPayload(ValuePayload):
    min: StrictInt | None = Field(default=None, ge=0)
    max: StrictInt | None = Field(default=None, ge=0)


class RegexPayload(ValuePayload):
    pattern: StrictStr


# --- Handlers: validated payload in, contract §5 result out -------------------------------------

Result = dict[str, Any]
Handler = Callable[[str, Any, RngFactory], Result]


def _numbers_of(
    payload: CalculationPayload, rng_factory: RngFactory
) -> tuple[list[Number], list[int] | None]:
    if payload.numbers is not None:
        return payload.numbers, None
    count = DEFAULT_COUNT if payload.count is None else payload.count
    generated = calculation.generate_numbers(count, rng_factory(payload.seed))
    return list(generated), generated


def _with_generated(result: Result, generated: list[int] | None) -> Result:
    if generated is not None:
        result["numbers"] = generated
    return result


def _value_of(compute: Callable[[list[Number]], object]) -> Handler:
    def run(operation: str, payload: CalculationPayload, rng_factory: RngFactory) -> Result:
        numbers, generated = _numbers_of(payload, rng_factory)
        result = {"operation": operation, "value": compute(numbers), "count": len(numbers)}
        return _with_generated(result, generated)

    return run


def _sorted(operation: str, payload: SortPayload, rng_factory: RngFactory) -> Result:
    numbers, generated = _numbers_of(payload, rng_factory)
    value = calculation.sort_numbers(numbers, payload.order)
    return _with_generated(
        {"operation": operation, "value": value, "count": len(numbers)}, generated
    )


def _summary_of(compute: Callable[[list[Number]], Aggregate]) -> Handler:
    def run(operation: str, payload: CalculationPayload, rng_factory: RngFactory) -> Result:
        numbers, generated = _numbers_of(payload, rng_factory)
        summary = compute(numbers)
        result: Result = {"operation": operation}
        result.update({_camel(f.name): getattr(summary, f.name) for f in fields(summary)})
        return _with_generated(result, generated)

    return run


def _transformed(change: Callable[[Mapping[str, object]], JsonObject]) -> Handler:
    def run(operation: str, payload: TransformPayload, _rng: RngFactory) -> Result:
        return {"operation": operation, "data": change(payload.data)}

    return run


def _filtered(operation: str, payload: FilterPayload, _rng: RngFactory) -> Result:
    data = transformation.filter_data(payload.data, payload.fields, payload.exclude)
    return {"operation": operation, "data": data}


def _verdict(check: Callable[[Any], Verdict], *, normalizes: bool = False) -> Handler:
    def run(rule: str, payload: ValuePayload, _rng: RngFactory) -> Result:
        verdict = check(payload)
        result: Result = {"type": rule, "valid": verdict.valid, "reason": verdict.reason}
        if normalizes:
            result["normalized"] = verdict.normalized
        return result

    return run


def _email(payload: ValuePayload) -> Verdict:
    return validation.validate_email(payload.value)


def _phone(payload: PhonePayload) -> Verdict:
    return validation.validate_phone(payload.value, payload.region)


def _numeric(payload: ValuePayload) -> Verdict:
    return validation.validate_numeric(payload.value)


def _required(payload: ValuePayload) -> Verdict:
    return validation.validate_required(payload.value)


def _range(payload: RangePayload) -> Verdict:
    return validation.validate_range(payload.value, payload.min, payload.max)


def _length(payload: LengthPayload) -> Verdict:
    return validation.validate_length(payload.value, payload.min, payload.max)


def _regex(payload: RegexPayload) -> Verdict:
    return validation.validate_regex(payload.value, payload.pattern)


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(word.capitalize() for word in rest)


# --- The table ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Family:
    """Operations of one kind, and the generic job type that picks one by a payload field."""

    generic_type: str
    selector: str
    noun: str


CALCULATION = _Family(generic_type="calculate", selector="operation", noun="calculation")
TRANSFORMATION = _Family(generic_type="transform", selector="operation", noun="transformation")
VALIDATION = _Family(generic_type="validate", selector="type", noun="validation")


@dataclass(frozen=True)
class _Operation:
    family: _Family
    schema: type[_Payload]
    run: Handler
    is_job_type: bool = True
    """False for operations reached only through their family's generic type."""


# One line per operation: a new job type touches the domain and this table.
_OPERATIONS: Mapping[str, _Operation] = {
    "sum": _Operation(CALCULATION, CalculationPayload, _value_of(calculation.total)),
    "average": _Operation(CALCULATION, CalculationPayload, _value_of(calculation.average)),
    "min": _Operation(CALCULATION, CalculationPayload, _value_of(calculation.minimum)),
    "max": _Operation(CALCULATION, CalculationPayload, _value_of(calculation.maximum)),
    "sort": _Operation(CALCULATION, SortPayload, _sorted),
    "aggregate": _Operation(CALCULATION, CalculationPayload, _summary_of(calculation.aggregate)),
    "statistics": _Operation(
        CALCULATION, CalculationPayload, _summary_of(calculation.describe), is_job_type=False
    ),
    "uppercase": _Operation(TRANSFORMATION, TransformPayload, _transformed(uppercase)),
    "lowercase": _Operation(TRANSFORMATION, TransformPayload, _transformed(lowercase)),
    "reverse": _Operation(TRANSFORMATION, TransformPayload, _transformed(reverse)),
    "normalize": _Operation(TRANSFORMATION, TransformPayload, _transformed(normalize)),
    "filter": _Operation(TRANSFORMATION, FilterPayload, _filtered),
    "email": _Operation(VALIDATION, ValuePayload, _verdict(_email, normalizes=True)),
    "phone": _Operation(VALIDATION, PhonePayload, _verdict(_phone, normalizes=True)),
    "numeric": _Operation(VALIDATION, ValuePayload, _verdict(_numeric, normalizes=True)),
    "required": _Operation(VALIDATION, ValuePayload, _verdict(_required)),
    "range": _Operation(VALIDATION, RangePayload, _verdict(_range)),
    "length": _Operation(VALIDATION, LengthPayload, _verdict(_length)),
    "regex": _Operation(VALIDATION, RegexPayload, _verdict(_regex)),
}

_GENERIC: Mapping[str, _Family] = {
    family.generic_type: family for family in (CALCULATION, TRANSFORMATION, VALIDATION)
}

JOB_TYPES: frozenset[str] = frozenset(_GENERIC) | frozenset(
    name for name, operation in _OPERATIONS.items() if operation.is_job_type
)
"""Every job `type` the worker runs."""


# --- Test-only job types, opt-in (WORKER_TEST_HANDLERS) -------------------------------------


class EscapingJobError(BaseException):
    """Raised by the test job type `test.escape`: a fault no handler error stands for."""


def _crash(_payload: Mapping[str, Any]) -> dict[str, Any]:
    # Stands in for a job that takes the process down (a segfault in a C extension...).
    os._exit(70)


def _sleep(payload: Mapping[str, Any]) -> dict[str, Any]:
    seconds = min(float(payload.get("seconds", 1)), 60.0)
    time.sleep(seconds)
    return {"slept": seconds}


def _escape(_payload: Mapping[str, Any]) -> dict[str, Any]:
    # Stands in for a fault outside the handlers' own errors (a bug in the worker, a library
    # raising what it should not): it escapes the processing of the delivery.
    raise EscapingJobError("test.escape escapes the job's processing on purpose")


TEST_JOBS: Mapping[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "test.crash": _crash,
    "test.sleep": _sleep,
    "test.escape": _escape,
}
"""Job types the fault tests need and a production worker must not run: the worker takes them
only when WORKER_TEST_HANDLERS is set."""


def job_table(with_test_jobs: bool) -> tuple[frozenset[str], Callable[..., dict[str, Any]]]:
    """The job types a worker runs and the function that runs them: the built-in ones, and the
    test-only ones when asked for."""
    if not with_test_jobs:
        return JOB_TYPES, _run_with_system_randomness

    def run(job_type: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        test_job = TEST_JOBS.get(job_type)
        if test_job is not None:
            return test_job(payload)
        return _run_with_system_randomness(job_type, payload)

    return JOB_TYPES | frozenset(TEST_JOBS), run


def _run_with_system_randomness(job_type: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    return run_job(job_type, payload, rng_factory=random.Random)


def run_job(
    job_type: str,
    payload: Mapping[str, Any],
    *,
    rng_factory: RngFactory = random.Random,
) -> dict[str, Any]:
    """The contract §5 result of running `job_type` on `payload`; JSON-ready, camelCase keys.

    Raises UnknownJobType for a type not in JOB_TYPES and InvalidPayload, with a one-line
    message naming the field, for a payload the handler cannot run. Generated numbers come from
    `rng_factory(payload seed)`.
    """
    name = _operation_name(job_type, payload)
    operation = _OPERATIONS[name]
    try:
        return operation.run(name, _parse(operation.schema, payload), rng_factory)
    except InvalidPayload as exc:
        if exc.field is None:
            raise
        # A limit the domain enforces on a payload field: name it where the job has it.
        raise InvalidPayload(f"payload.{exc}") from None


def _operation_name(job_type: str, payload: Mapping[str, Any]) -> str:
    family = _GENERIC.get(job_type)
    if family is not None:
        choices = [name for name, op in _OPERATIONS.items() if op.family is family]
        field = f"payload.{family.selector}"
        chosen = payload.get(family.selector)
        if chosen is None:
            raise InvalidPayload(
                f"{field} is required for {job_type} jobs; one of: {', '.join(choices)}"
            )
        if chosen not in choices:
            raise InvalidPayload(
                f"{field} {_short(chosen)} is not a {family.noun}; one of: {', '.join(choices)}"
            )
        return str(chosen)
    operation = _OPERATIONS.get(job_type)
    if operation is None or not operation.is_job_type:
        raise UnknownJobType.naming(job_type[:80], JOB_TYPES)
    stated = payload.get(operation.family.selector)
    if stated is not None and stated != job_type:
        raise InvalidPayload(
            f"payload.{operation.family.selector} is {_short(stated)} but the job type is "
            f"{job_type!r}; leave it out or make them agree"
        )
    return job_type


def _parse(schema: type[_Payload], payload: Mapping[str, Any]) -> _Payload:
    try:
        return schema.model_validate(dict(payload))
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        raise InvalidPayload(_describe(errors[0], schema) + more_problems(len(errors))) from exc


def _describe(error: ErrorDetails, schema: type[_Payload]) -> str:
    path = "payload" + "".join(
        f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"]
    )
    kind, context, given = error["type"], error.get("ctx", {}), error.get("input")
    if kind == "missing":
        return f"{path} is required"
    if kind == "extra_forbidden":
        allowed = ", ".join(schema.model_fields)
        return f"{path} is not a known field here; allowed fields: {allowed}"
    if kind == "too_long" and isinstance(given, list):
        return f"{path} has {len(given)} items; the limit is {context['max_length']}"
    if kind == "string_too_long" and isinstance(given, str):
        return f"{path} has {len(given)} characters; the limit is {context['max_length']}"
    if kind == "less_than_equal":
        return f"{path} is {given!r}; the limit is {context['le']}"
    if kind == "greater_than_equal":
        return f"{path} is {given!r}; it must be at least {context['ge']}"
    if kind == "literal_error":
        return f"{path} must be {context['expected']}, not {_short(given)}"
    if kind == "int_type":
        return f"{path} must be a whole number, not {json_kind(given)}"
    if kind == "string_type":
        return f"{path} must be a string, not {json_kind(given)}"
    if kind == "dict_type":
        return f"{path} must be a JSON object, not {json_kind(given)}"
    if kind == "list_type":
        return f"{path} must be a list, not {json_kind(given)}"
    message = error["msg"]
    if kind in _OUR_ERRORS:
        return f"{path}: {message}"
    return f"{path}: {message[:1].lower()}{message[1:]}"


# Error types raised by our own validators; their messages are already written for users.
_OUR_ERRORS = frozenset({"number", "numbers_and_count"})


def _short(value: object) -> str:
    # Messages end up in status updates and logs; a huge bogus value must not swamp them.
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
