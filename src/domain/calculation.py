"""Calculation handlers: sums, extremes, sorting and statistics over a list of finite numbers."""

import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from python_worker.domain.errors import InvalidPayload
from python_worker.domain.limits import MAX_COUNT, MAX_NUMBERS, MAX_SAFE_INTEGER

Number = int | float

GENERATED_MIN = 1
"""Smallest generated number; generated numbers are integers, so every result is exact."""

GENERATED_MAX = 1_000
"""Largest generated number."""


@dataclass(frozen=True)
class Aggregate:
    """Count, sum, average and extremes of a non-empty list of numbers."""

    count: int
    sum: Number
    average: float
    min: Number
    max: Number


@dataclass(frozen=True)
class Statistics(Aggregate):
    """An aggregate plus the shape of the distribution; sample measures need two values."""

    median: Number
    modes: list[Number]
    range: Number
    population_variance: float
    sample_variance: float | None
    population_stdev: float
    sample_stdev: float | None
    quartiles: list[Number]


def number_problem(value: object) -> str | None:
    """Why `value` is not an acceptable number, or None when it is one."""
    # bool is a subclass of int: without this check `true` would count as 1.
    if isinstance(value, bool):
        return "booleans are not numbers"
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            return (
                f"integers are limited to ±{MAX_SAFE_INTEGER} (2**53 - 1); "
                "send larger numbers as floats, e.g. 1e20"
            )
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN is not a number"
        if math.isinf(value):
            return "infinities are not numbers"
        return None
    if isinstance(value, str):
        return "strings are not numbers"
    if value is None:
        return "null is not a number"
    return f"{type(value).__name__} values are not numbers"


def check_numbers(numbers: Sequence[object]) -> list[Number]:
    """The numbers themselves, once each is known to be acceptable and the list within limits."""
    if len(numbers) > MAX_NUMBERS:
        raise InvalidPayload(
            f"numbers has {len(numbers)} items; the limit is {MAX_NUMBERS}", field="numbers"
        )
    checked: list[Number] = []
    for index, value in enumerate(numbers):
        problem = number_problem(value)
        if problem is not None:
            raise InvalidPayload(f"numbers[{index}]: {problem}")
        assert isinstance(value, int | float)  # number_problem has just ruled out the rest
        checked.append(value)
    return checked


def total(numbers: Sequence[Number]) -> Number:
    """The sum: exact for integers, correctly rounded (`math.fsum`) once a float is involved."""
    return _sum(check_numbers(numbers))


def average(numbers: Sequence[Number]) -> float:
    """The arithmetic mean of a non-empty list."""
    return _average(_values_for("average", numbers))


def minimum(numbers: Sequence[Number]) -> Number:
    """The smallest number of a non-empty list."""
    return min(_values_for("min", numbers))


def maximum(numbers: Sequence[Number]) -> Number:
    """The largest number of a non-empty list."""
    return max(_values_for("max", numbers))


def sort_numbers(numbers: Sequence[Number], order: str = "asc") -> list[Number]:
    """The numbers in ascending or descending order; an empty list sorts to itself."""
    if order not in ("asc", "desc"):
        raise InvalidPayload(f"order must be 'asc' or 'desc', not {order!r}", field="order")
    return sorted(check_numbers(numbers), reverse=order == "desc")


def aggregate(numbers: Sequence[Number]) -> Aggregate:
    """Count, sum, average, min and max of a non-empty list."""
    values = _values_for("aggregate", numbers)
    return _aggregate(values)


def describe(numbers: Sequence[Number]) -> Statistics:
    """The aggregate plus median, modes, range, variances, standard deviations and quartiles."""
    values = _values_for("statistics", numbers)
    summary = _aggregate(values)
    try:
        two_or_more = len(values) >= 2
        result = Statistics(
            count=summary.count,
            sum=summary.sum,
            average=summary.average,
            min=summary.min,
            max=summary.max,
            median=statistics.median(values),
            modes=statistics.multimode(values),
            range=summary.max - summary.min,
            population_variance=float(statistics.pvariance(values)),
            sample_variance=float(statistics.variance(values)) if two_or_more else None,
            population_stdev=float(statistics.pstdev(values)),
            sample_stdev=float(statistics.stdev(values)) if two_or_more else None,
            # statistics.quantiles wants two data points; one value is every quartile at once.
            quartiles=(
                list(statistics.quantiles(values, n=4, method="inclusive"))
                if two_or_more
                else [values[0]] * 3
            ),
        )
    except OverflowError as exc:
        raise InvalidPayload(_OVERFLOW.format(what="statistics")) from exc
    measures = [result.median, result.range, *result.quartiles]
    measures += [result.population_variance, result.population_stdev]
    measures += [m for m in (result.sample_variance, result.sample_stdev) if m is not None]
    if not all(math.isfinite(measure) for measure in measures):
        raise InvalidPayload(_OVERFLOW.format(what="statistics"))
    return result


def generate_numbers(count: int, rng: random.Random) -> list[int]:
    """`count` random integers from GENERATED_MIN to GENERATED_MAX, drawn from `rng`."""
    if isinstance(count, bool) or not isinstance(count, int):
        raise InvalidPayload(f"count must be an integer, not {count!r}", field="count")
    if count > MAX_COUNT:
        raise InvalidPayload(f"count is {count}; the limit is {MAX_COUNT}", field="count")
    if count < 1:
        raise InvalidPayload(f"count is {count}; it must be at least 1", field="count")
    return [rng.randint(GENERATED_MIN, GENERATED_MAX) for _ in range(count)]


_OVERFLOW = "these numbers overflow a float in the {what} (beyond ±1.8e308)"


def _values_for(operation: str, numbers: Sequence[Number]) -> list[Number]:
    values = check_numbers(numbers)
    if not values:
        raise InvalidPayload(f"{operation} needs at least one number; numbers is empty")
    return values


def _aggregate(values: list[Number]) -> Aggregate:
    return Aggregate(
        count=len(values),
        sum=_sum(values),
        average=_average(values),
        min=min(values),
        max=max(values),
    )


def _sum(values: list[Number]) -> Number:
    if all(isinstance(value, int) for value in values):
        return sum(values)
    try:
        result = math.fsum(values)
    except OverflowError as exc:
        raise InvalidPayload(_OVERFLOW.format(what="sum")) from exc
    if not math.isfinite(result):
        raise InvalidPayload(_OVERFLOW.format(what="sum"))
    return result


def _average(values: list[Number]) -> float:
    if all(isinstance(value, int) for value in values):
        # int / int is correctly rounded in Python, however large the sum.
        return sum(values) / len(values)
    try:
        return math.fsum(values) / len(values)
    except OverflowError:
        # The sum overflows but the mean may not (two values near the float maximum);
        # statistics.fmean would overflow the same way, statistics.mean works in fractions.
        pass
    try:
        result = float(statistics.mean(values))
    except OverflowError as exc:
        raise InvalidPayload(_OVERFLOW.format(what="average")) from exc
    if not math.isfinite(result):
        raise InvalidPayload(_OVERFLOW.format(what="average"))
    return result
