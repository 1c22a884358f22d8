"""Calculation handlers: each operation, refused inputs, limits and rules that hold for any list."""

import itertools
import math
import random
import statistics
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from python_worker.domain.calculation import (
    GENERATED_MAX,
    GENERATED_MIN,
    aggregate,
    average,
    describe,
    generate_numbers,
    maximum,
    minimum,
    sort_numbers,
    total,
)
from python_worker.domain.errors import InvalidPayload
from python_worker.domain.limits import MAX_COUNT, MAX_NUMBERS, MAX_SAFE_INTEGER

finite_floats = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e100, max_value=1e100)
safe_ints = st.integers(min_value=-MAX_SAFE_INTEGER, max_value=MAX_SAFE_INTEGER)


def test_sums_integers_to_an_exact_integer_when_all_numbers_are_integers():
    numbers = [MAX_SAFE_INTEGER, MAX_SAFE_INTEGER, 1]

    result = total(numbers)

    assert result == 2 * MAX_SAFE_INTEGER + 1
    assert isinstance(result, int)


def test_sums_floats_exactly_rounded_when_naive_addition_loses_precision():
    numbers = [0.1] * 10

    result = total(numbers)

    assert result == 1.0


def test_sums_to_zero_when_the_list_is_empty():
    assert total([]) == 0


def test_refuses_a_sum_when_it_overflows_a_float():
    with pytest.raises(InvalidPayload, match="overflow a float in the sum"):
        total([1.7e308, 1.7e308])


def test_averages_a_mixed_list_of_integers_and_floats():
    assert average([1, 2, 3.5, 5.5]) == 3.0


def test_averages_without_overflow_when_only_the_intermediate_sum_is_too_large():
    assert average([1.7e308, 1.7e308]) == 1.7e308


def test_finds_minimum_and_maximum_keeping_the_original_number():
    numbers = [3, -2.5, 10, 7]

    smallest, largest = minimum(numbers), maximum(numbers)

    assert smallest == -2.5
    assert largest == 10
    assert isinstance(largest, int)


def test_sorts_ascending_by_default_and_descending_when_asked():
    numbers = [3, 1.5, -2, 10]

    ascending, descending = sort_numbers(numbers), sort_numbers(numbers, "desc")

    assert ascending == [-2, 1.5, 3, 10]
    assert descending == [10, 3, 1.5, -2]


def test_refuses_to_sort_when_the_order_is_unknown():
    with pytest.raises(InvalidPayload, match="order must be 'asc' or 'desc'"):
        sort_numbers([1, 2], "up")  # type: ignore[arg-type]


def test_sorts_an_empty_list_to_an_empty_list():
    assert sort_numbers([]) == []


def test_aggregates_count_sum_average_min_and_max():
    result = aggregate([4, 1, 7])

    assert (result.count, result.sum, result.average, result.min, result.max) == (3, 12, 4.0, 1, 7)


@pytest.mark.parametrize(
    ("operation", "name"),
    [(average, "average"), (minimum, "min"), (maximum, "max"), (aggregate, "aggregate")],
)
def test_refuses_an_operation_that_needs_values_when_the_list_is_empty(operation, name):
    with pytest.raises(InvalidPayload, match=f"{name} needs at least one number"):
        operation([])


def test_refuses_statistics_when_the_list_is_empty():
    with pytest.raises(InvalidPayload, match="statistics needs at least one number"):
        describe([])


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (True, "booleans are not numbers"),
        (False, "booleans are not numbers"),
        ("3", "strings are not numbers"),
        (None, "null is not a number"),
        (math.nan, "NaN is not a number"),
        (math.inf, "infinities are not numbers"),
        (-math.inf, "infinities are not numbers"),
        ([1], "list values are not numbers"),
    ],
)
def test_refuses_an_item_and_names_its_index_when_it_is_not_a_finite_number(bad, reason):
    with pytest.raises(InvalidPayload) as caught:
        total([1, 2, bad])

    assert str(caught.value) == f"numbers[2]: {reason}"


def test_refuses_an_integer_when_it_has_thousands_of_digits():
    huge = 10**5000

    with pytest.raises(InvalidPayload, match=r"numbers\[0\]: integers are limited to"):
        total([huge])


def test_accepts_an_integer_when_it_is_exactly_the_largest_safe_integer():
    assert total([-MAX_SAFE_INTEGER]) == -MAX_SAFE_INTEGER


def test_refuses_numbers_and_names_the_limit_when_the_list_is_too_long():
    numbers = [1] * (MAX_NUMBERS + 1)

    with pytest.raises(InvalidPayload) as caught:
        total(numbers)

    assert str(caught.value) == f"numbers has {MAX_NUMBERS + 1} items; the limit is {MAX_NUMBERS}"


def test_describes_a_distribution_like_the_statistics_module():
    numbers = [2, 4, 4, 4, 5, 5, 7, 9]

    result = describe(numbers)

    assert result.median == 4.5
    assert result.modes == [4]
    assert result.range == 7
    assert result.population_variance == 4.0
    assert result.population_stdev == 2.0
    assert result.sample_variance == pytest.approx(32 / 7)
    assert result.sample_stdev == pytest.approx(math.sqrt(32 / 7))
    assert result.quartiles == statistics.quantiles(numbers, n=4, method="inclusive")
    assert (result.count, result.sum, result.average) == (8, 40, 5.0)


def test_gives_every_mode_when_several_numbers_are_equally_common():
    assert describe([1, 1, 2, 2, 3]).modes == [1, 2]


def test_leaves_sample_measures_null_and_repeats_the_value_as_quartiles_when_one_number():
    result = describe([7.5])

    assert result.sample_variance is None
    assert result.sample_stdev is None
    assert result.population_variance == 0.0
    assert result.quartiles == [7.5, 7.5, 7.5]
    assert result.range == 0


def test_refuses_statistics_when_the_range_overflows_a_float():
    with pytest.raises(InvalidPayload, match="overflow a float in the statistics"):
        describe([1.7e308, -1.7e308])


def test_generates_the_same_numbers_when_the_random_source_has_the_same_seed():
    first = generate_numbers(20, random.Random(42))

    second = generate_numbers(20, random.Random(42))

    assert first == second
    assert len(first) == 20
    assert all(GENERATED_MIN <= n <= GENERATED_MAX and isinstance(n, int) for n in first)


@pytest.mark.parametrize("count", [0, -1, MAX_COUNT + 1])
def test_refuses_to_generate_numbers_when_the_count_is_out_of_bounds(count):
    with pytest.raises(InvalidPayload, match=f"count is {count}"):
        generate_numbers(count, random.Random(1))


def test_refuses_to_generate_numbers_when_the_count_is_a_boolean():
    with pytest.raises(InvalidPayload, match="count must be an integer"):
        generate_numbers(True, random.Random(1))


@given(st.lists(st.one_of(finite_floats, safe_ints)), st.sampled_from(["asc", "desc"]))
def test_sort_returns_an_ordered_permutation_for_any_list(numbers, order):
    result = sort_numbers(numbers, order)

    assert Counter(result) == Counter(numbers)
    pairs = itertools.pairwise(result)
    assert all(a <= b if order == "asc" else a >= b for a, b in pairs)


@given(st.lists(finite_floats, min_size=1))
def test_aggregate_sum_equals_fsum_for_any_list_of_floats(numbers):
    result = aggregate(numbers)

    assert result.sum == math.fsum(numbers)
    assert result.min == min(numbers)
    assert result.max == max(numbers)
    assert result.count == len(numbers)


@given(st.lists(safe_ints, min_size=1))
def test_aggregate_sum_is_the_exact_integer_sum_for_any_list_of_integers(numbers):
    result = aggregate(numbers)

    assert result.sum == sum(numbers)
    assert isinstance(result.sum, int)


@given(st.lists(st.integers(min_value=-1000, max_value=1000), min_size=1))
def test_statistics_bracket_the_values_for_any_list(numbers):
    result = describe(numbers)

    assert result.min <= result.quartiles[0] <= result.median <= result.quartiles[2] <= result.max
    assert result.population_variance >= 0
    assert all(math.isfinite(q) for q in result.quartiles)
