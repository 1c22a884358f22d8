"""Validation handlers: each checks one value against one rule and says why it fails.

email_validator, phonenumbers and re2 are imported on first use: together they are about 3 MiB
of resident memory, which a worker that never gets a validation job should not carry.
"""

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from python_worker.domain.calculation import Number, number_problem
from python_worker.domain.errors import InvalidPayload
from python_worker.domain.jobs import json_kind
from python_worker.domain.limits import MAX_PATTERN_LENGTH, MAX_SAFE_INTEGER, MAX_STRING_LENGTH


@dataclass(frozen=True)
class Verdict:
    """Whether a value passes a rule, why not, and the value in canonical form where one exists."""

    valid: bool
    reason: str | None = None
    normalized: str | Number | None = None


def validate_email(value: object) -> Verdict:
    """An email address by the RFCs (syntax only, no DNS); normalized to its canonical form."""
    text = _text("email", value)
    if text is None:
        return _not_a_string(value)
    import email_validator

    try:
        address = email_validator.validate_email(text, check_deliverability=False)
    except email_validator.EmailNotValidError as exc:
        return Verdict(valid=False, reason=str(exc))
    return Verdict(valid=True, normalized=address.normalized)


def validate_phone(value: object, region: str | None = None) -> Verdict:
    """A phone number valid in its numbering plan; `region` reads numbers without `+country`."""
    import phonenumbers

    if region is not None:
        region = region.upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise InvalidPayload(
                f"region {region!r} is not a known region code; use ISO 3166-1 alpha-2, e.g. 'US'"
            )
    text = _text("phone", value)
    if text is None:
        return _not_a_string(value)
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        return Verdict(
            valid=False, reason=_parse_reasons().get(exc.error_type, "not a phone number")
        )
    if not phonenumbers.is_valid_number(number):
        return Verdict(valid=False, reason="not a valid phone number in its numbering plan")
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return Verdict(valid=True, normalized=e164)


def validate_numeric(value: object) -> Verdict:
    """A finite number, or a string holding one (`" -1.5e3 "`); normalized to the number."""
    _require("numeric", value)
    if isinstance(value, str):
        _check_length(value)
        number = _parse_number(value)
        if number is None:
            return Verdict(valid=False, reason=f"{_preview(value)} is not a number")
        return _finite_number(number)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return Verdict(valid=False, reason=number_problem(value))
    return _finite_number(value)


def validate_required(value: object) -> Verdict:
    """Present: not absent or null, not a blank string, not an empty list or object."""
    # 0 and false are deliberate answers, so they count as present.
    if value is None:
        return Verdict(valid=False, reason="value is missing")
    if isinstance(value, str) and not value.strip():
        return Verdict(valid=False, reason="value is blank")
    if isinstance(value, list | dict) and not value:
        return Verdict(valid=False, reason="value is empty")
    return Verdict(valid=True)


def validate_range(
    value: object, minimum: Number | None = None, maximum: Number | None = None
) -> Verdict:
    """A number from `minimum` to `maximum`, both inclusive; either bound may be left out."""
    _check_bounds("range", minimum, maximum, number_problem)
    _require("range", value)
    problem = number_problem(value)
    if problem is not None:
        return Verdict(valid=False, reason=problem)
    assert isinstance(value, int | float)  # number_problem has just ruled out the rest
    if minimum is not None and value < minimum:
        return Verdict(valid=False, reason=f"{value} is less than the minimum {minimum}")
    if maximum is not None and value > maximum:
        return Verdict(valid=False, reason=f"{value} is greater than the maximum {maximum}")
    return Verdict(valid=True)


def validate_length(
    value: object, minimum: int | None = None, maximum: int | None = None
) -> Verdict:
    """A string (counted in characters) or list (in items) from `minimum` to `maximum` long."""
    _check_bounds("length", minimum, maximum, _length_bound_problem)
    _require("length", value)
    if isinstance(value, str):
        _check_length(value)
        length, unit = len(value), "characters"
    elif isinstance(value, list):
        length, unit = len(value), "items"
    else:
        return Verdict(valid=False, reason=f"{json_kind(value)} has no length")
    if minimum is not None and length < minimum:
        return Verdict(valid=False, reason=f"{length} {unit}, fewer than the minimum {minimum}")
    if maximum is not None and length > maximum:
        return Verdict(valid=False, reason=f"{length} {unit}, more than the maximum {maximum}")
    return Verdict(valid=True)


def validate_regex(value: object, pattern: str) -> Verdict:
    """A string that the RE2 `pattern` matches in full; RE2 runs in time linear in the value."""
    compiled = compile_pattern(pattern)
    text = _text("regex", value)
    if text is None:
        return _not_a_string(value)
    if compiled.fullmatch(text) is None:
        return Verdict(valid=False, reason="value does not match the pattern")
    return Verdict(valid=True)


def compile_pattern(pattern: str) -> Any:
    """`pattern` compiled by RE2; a pattern too long or not valid RE2 syntax is a bad payload."""
    if not isinstance(pattern, str):
        raise InvalidPayload(f"pattern must be a string, not {json_kind(pattern)}")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise InvalidPayload(
            f"pattern has {len(pattern)} characters; the limit is {MAX_PATTERN_LENGTH}",
            field="pattern",
        )
    import re2

    try:
        return re2.compile(pattern, options=_quiet())
    except re2.error as exc:
        # RE2 refuses what it cannot run in linear time, backreferences and lookaround included.
        raise InvalidPayload(f"pattern does not compile: {_re2_message(exc)}") from exc


# Raise only: by default RE2 also writes every bad pattern to stderr, bypassing our logging.
@functools.cache
def _quiet() -> Any:
    import re2

    options = re2.Options()
    options.log_errors = False
    return options


# RE2 rather than `re`: the value is user input too, and RE2 never backtracks.
@functools.cache
def _number_syntax() -> Any:
    import re2

    return re2.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", options=_quiet())


@functools.cache
def _parse_reasons() -> dict[Any, str]:
    import phonenumbers

    return {
        phonenumbers.NumberParseException.INVALID_COUNTRY_CODE: (
            "no valid country code; start with + and the country code, or give a region"
        ),
        phonenumbers.NumberParseException.NOT_A_NUMBER: "not a phone number",
        phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD: "too short after the country code",
        phonenumbers.NumberParseException.TOO_SHORT_NSN: "too short to be a phone number",
        phonenumbers.NumberParseException.TOO_LONG: "too long to be a phone number",
    }


def _require(rule: str, value: object) -> None:
    if value is None:
        raise InvalidPayload(f"value is required for {rule} validation")


def _text(rule: str, value: object) -> str | None:
    _require(rule, value)
    if not isinstance(value, str):
        return None
    _check_length(value)
    return value


def _check_length(text: str) -> None:
    if len(text) > MAX_STRING_LENGTH:
        raise InvalidPayload(f"value has {len(text)} characters; the limit is {MAX_STRING_LENGTH}")


def _check_bounds(
    rule: str,
    minimum: Number | None,
    maximum: Number | None,
    problem_of: Callable[[object], str | None],
) -> None:
    if minimum is None and maximum is None:
        raise InvalidPayload(f"{rule} validation needs min, max or both")
    for name, bound in (("min", minimum), ("max", maximum)):
        problem = None if bound is None else problem_of(bound)
        if problem is not None:
            raise InvalidPayload(f"{name}: {problem}")
    if minimum is not None and maximum is not None and minimum > maximum:
        raise InvalidPayload(f"min {minimum} is greater than max {maximum}")


def _length_bound_problem(bound: object) -> str | None:
    if isinstance(bound, bool) or not isinstance(bound, int):
        return "must be a whole number"
    if bound < 0:
        return f"{bound} is negative"
    return None


def _parse_number(text: str) -> Number | None:
    text = text.strip()
    if _number_syntax().fullmatch(text) is None:
        return None
    is_whole = not any(mark in text for mark in ".eE")
    # Short whole numbers become ints; longer digit strings go through float, which is linear
    # where int() of a huge digit string is not (and is capped by Python anyway).
    if is_whole and len(text.lstrip("+-")) <= 16:
        return int(text)
    return float(text)


def _finite_number(number: Number) -> Verdict:
    if isinstance(number, int):
        if abs(number) <= MAX_SAFE_INTEGER:
            return Verdict(valid=True, normalized=number)
        try:
            number = float(number)
        except OverflowError:
            return Verdict(valid=False, reason="not a finite number")
    if not math.isfinite(number):
        return Verdict(valid=False, reason="not a finite number")
    return Verdict(valid=True, normalized=number)


def _not_a_string(value: object) -> Verdict:
    return Verdict(valid=False, reason=f"{json_kind(value)} is not a string")


def _preview(text: str) -> str:
    # Reasons go into status updates; a 100,000-character value would swamp them.
    return repr(text) if len(text) <= 40 else repr(text[:37] + "...")


def _re2_message(exc: Exception) -> str:
    detail = exc.args[0] if exc.args else exc
    return detail.decode(errors="replace") if isinstance(detail, bytes) else str(detail)
