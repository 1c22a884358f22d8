"""The job-type table: every type runs through its schema and handler to a contract §5 result."""

import json
import random

import pytest

from python_worker.application.job_types import JOB_TYPES, run_job
from python_worker.domain.errors import InvalidPayload, UnknownJobType
from python_worker.domain.limits import DEFAULT_COUNT, MAX_COUNT, MAX_NUMBERS, MAX_PATTERN_LENGTH


def _failure(job_type: str, payload: dict[str, object]) -> str:
    with pytest.raises(InvalidPayload) as caught:
        run_job(job_type, payload)
    return str(caught.value)


def test_knows_exactly_the_job_types_the_spec_lists():
    spec_types = {
        "calculate", "sum", "average", "min", "max", "sort", "aggregate",
        "transform", "uppercase", "lowercase", "reverse", "filter", "normalize",
        "validate", "email", "phone", "numeric", "required", "range", "length", "regex",
    }  # fmt: skip

    assert spec_types == JOB_TYPES


@pytest.mark.parametrize(
    ("job_type", "value"),
    [("sum", 10), ("average", 2.5), ("min", 1), ("max", 4), ("sort", [1, 2, 3, 4])],
)
def test_returns_operation_value_and_count_when_a_calculation_type_is_given(job_type, value):
    result = run_job(job_type, {"numbers": [3, 1, 4, 2]})

    assert result == {"operation": job_type, "value": value, "count": 4}


def test_sorts_descending_when_the_order_says_so():
    result = run_job("sort", {"numbers": [3, 1, 2], "order": "desc"})

    assert result["value"] == [3, 2, 1]


def test_runs_the_operation_named_in_the_payload_when_the_type_is_calculate():
    result = run_job("calculate", {"operation": "max", "numbers": [3, 9, 4]})

    assert result == {"operation": "max", "value": 9, "count": 3}


def test_accepts_a_payload_operation_when_it_agrees_with_the_specific_type():
    result = run_job("sum", {"operation": "sum", "numbers": [1, 2]})

    assert result["value"] == 3


def test_fails_when_the_payload_operation_contradicts_the_specific_type():
    message = _failure("sum", {"operation": "max", "numbers": [1, 2]})

    assert message == (
        "payload.operation is 'max' but the job type is 'sum'; leave it out or make them agree"
    )


def test_fails_and_lists_the_choices_when_calculate_has_no_operation():
    message = _failure("calculate", {"numbers": [1]})

    assert message.startswith("payload.operation is required for calculate jobs; one of: sum,")


def test_fails_when_calculate_names_an_operation_of_another_family():
    message = _failure("calculate", {"operation": "uppercase", "numbers": [1]})

    assert message.startswith("payload.operation 'uppercase' is not a calculation; one of:")


def test_returns_the_aggregate_shape_when_the_type_is_aggregate():
    result = run_job("aggregate", {"numbers": [1, 2, 3, 4.5]})

    assert result == {"operation": "aggregate", "count": 4, "sum": 10.5, "average": 2.625,
                      "min": 1, "max": 4.5}  # fmt: skip


def test_returns_statistics_with_camel_case_keys_when_calculate_asks_for_statistics():
    result = run_job("calculate", {"operation": "statistics", "numbers": [2, 4, 4, 4, 5, 5, 7, 9]})

    assert set(result) == {
        "operation", "count", "sum", "average", "min", "max", "median", "modes", "range",
        "populationVariance", "sampleVariance", "populationStdev", "sampleStdev", "quartiles",
    }  # fmt: skip
    assert result["populationStdev"] == 2.0
    assert result["quartiles"] == [4.0, 4.5, 5.5]
    assert result["modes"] == [4]


def test_gives_null_sample_measures_when_statistics_has_one_number():
    result = run_job("calculate", {"operation": "statistics", "numbers": [3]})

    assert result["sampleVariance"] is None
    assert result["sampleStdev"] is None
    assert result["quartiles"] == [3, 3, 3]


def test_refuses_statistics_as_a_job_type_of_its_own():
    with pytest.raises(UnknownJobType):
        run_job("statistics", {"numbers": [1]})


def test_generates_the_default_count_of_numbers_and_returns_them_when_none_are_given():
    result = run_job("sum", {})

    assert len(result["numbers"]) == DEFAULT_COUNT
    assert result["count"] == DEFAULT_COUNT
    assert result["value"] == sum(result["numbers"])


def test_generates_the_same_numbers_when_the_same_seed_is_given():
    payload = {"count": 50, "seed": 7}

    first = run_job("aggregate", payload)
    second = run_job("aggregate", payload)

    assert first == second
    assert len(first["numbers"]) == 50


def test_passes_the_seed_to_the_random_source_factory():
    seeds: list[int | None] = []

    def factory(seed: int | None) -> random.Random:
        seeds.append(seed)
        return random.Random(0)

    run_job("sum", {"count": 3, "seed": 99}, rng_factory=factory)
    run_job("sum", {"count": 3}, rng_factory=factory)

    assert seeds == [99, None]


def test_fails_when_numbers_are_given_together_with_count():
    message = _failure("sum", {"numbers": [1], "count": 3})

    assert message == "payload: give numbers, or count and seed to generate them, not both"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"numbers": [1, 2, 3, True]}, "payload.numbers[3]: booleans are not numbers"),
        ({"numbers": [1, "2"]}, "payload.numbers[1]: strings are not numbers"),
        ({"numbers": [float("nan")]}, "payload.numbers[0]: NaN is not a number"),
        ({"numbers": [float("inf")]}, "payload.numbers[0]: infinities are not numbers"),
        ({"numbers": "1,2"}, "payload.numbers must be a list, not a string"),
        ({"count": MAX_COUNT + 1}, f"payload.count is {MAX_COUNT + 1}; the limit is {MAX_COUNT}"),
        ({"count": 0}, "payload.count is 0; it must be at least 1"),
        ({"count": 2.0}, "payload.count must be a whole number, not a number"),
        ({"seed": "abc"}, "payload.seed must be a whole number, not a string"),
        ({"numbers": [1], "nums": [2]}, "payload.nums is not a known field here; "
                                        "allowed fields: operation, numbers, count, seed"),
    ],
)  # fmt: skip
def test_fails_with_a_message_naming_the_field_when_a_calculation_payload_is_bad(payload, message):
    assert _failure("sum", payload) == message


def test_fails_and_names_the_limit_when_numbers_are_too_many():
    message = _failure("sum", {"numbers": [1] * (MAX_NUMBERS + 1)})

    assert message == f"payload.numbers has {MAX_NUMBERS + 1} items; the limit is {MAX_NUMBERS}"


def test_fails_with_a_clear_message_when_an_integer_has_thousands_of_digits():
    message = _failure("sum", {"numbers": [1, 10**5000]})

    assert message.startswith("payload.numbers[1]: integers are limited to ±9007199254740991")
    assert len(message) < 200


def test_counts_further_problems_when_several_items_are_bad():
    message = _failure("sum", {"numbers": [True, "x", None]})

    assert message == "payload.numbers[0]: booleans are not numbers (and 2 more problems)"


def test_fails_instead_of_returning_infinity_when_a_sum_overflows():
    message = _failure("sum", {"numbers": [1.7e308, 1.7e308]})

    assert "overflow" in message


def test_fails_when_an_operation_needs_values_and_numbers_is_empty():
    assert _failure("average", {"numbers": []}) == (
        "average needs at least one number; numbers is empty"
    )


def test_fails_when_the_sort_order_is_unknown():
    message = _failure("sort", {"numbers": [1], "order": "up"})

    assert message == "payload.order must be 'asc' or 'desc', not 'up'"


def test_fails_when_a_sort_option_is_given_to_another_calculation():
    message = _failure("sum", {"numbers": [1], "order": "asc"})

    assert message.startswith("payload.order is not a known field here")


@pytest.mark.parametrize(
    ("job_type", "data", "expected"),
    [
        ("uppercase", {"a": "x", "b": ["y"]}, {"a": "X", "b": ["Y"]}),
        ("lowercase", {"a": "X"}, {"a": "x"}),
        ("reverse", {"a": "abc", "b": [1, 2]}, {"a": "cba", "b": [2, 1]}),
        ("normalize", {"a": "  x \u00a0 y "}, {"a": "x y"}),
        ("filter", {"a": None, "b": 1, "c": ""}, {"b": 1}),
    ],
)
def test_returns_operation_and_data_when_a_transformation_type_is_given(job_type, data, expected):
    result = run_job(job_type, {"data": data})

    assert result == {"operation": job_type, "data": expected}


def test_runs_the_operation_named_in_the_payload_when_the_type_is_transform():
    result = run_job("transform", {"operation": "reverse", "data": {"s": "ab"}})

    assert result == {"operation": "reverse", "data": {"s": "ba"}}


def test_keeps_only_the_given_fields_when_filter_has_fields():
    result = run_job("filter", {"data": {"a": 1, "b": {"c": 2, "d": 3}}, "fields": ["b.c"]})

    assert result["data"] == {"b": {"c": 2}}


def test_drops_the_excluded_fields_when_filter_has_exclude():
    result = run_job("filter", {"data": {"a": 1, "b": 2}, "exclude": ["a"]})

    assert result["data"] == {"b": 2}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({}, "payload.data is required"),
        ({"data": ["a"]}, "payload.data must be a JSON object, not a list"),
        ({"data": "text"}, "payload.data must be a JSON object, not a string"),
        ({"data": {}, "fields": ["a"]}, "payload.fields is not a known field here; "
                                        "allowed fields: operation, data"),
    ],
)  # fmt: skip
def test_fails_with_a_message_naming_the_field_when_a_transformation_payload_is_bad(
    payload, message
):
    assert _failure("uppercase", payload) == message


def test_fails_when_filter_fields_hold_something_other_than_strings():
    message = _failure("filter", {"data": {}, "fields": ["a", 3]})

    assert message == "payload.fields[1] must be a string, not a number"


def test_fails_and_names_the_limit_when_transform_data_is_nested_too_deep():
    data: dict[str, object] = {}
    for _ in range(40):
        data = {"x": data}

    message = _failure("normalize", {"data": data})

    assert "the limit is 32" in message


def test_fails_when_transform_names_a_validation():
    message = _failure("transform", {"operation": "email", "data": {}})

    assert message.startswith("payload.operation 'email' is not a transformation")


@pytest.mark.parametrize(
    ("job_type", "payload", "expected"),
    [
        ("email", {"value": "A@EXAMPLE.org"},
         {"type": "email", "valid": True, "reason": None, "normalized": "A@example.org"}),
        ("phone", {"value": "020 7946 0958", "region": "GB"},
         {"type": "phone", "valid": True, "reason": None, "normalized": "+442079460958"}),
        ("numeric", {"value": "3.50"},
         {"type": "numeric", "valid": True, "reason": None, "normalized": 3.5}),
        ("required", {"value": 0}, {"type": "required", "valid": True, "reason": None}),
        ("range", {"value": 5, "min": 1, "max": 10},
         {"type": "range", "valid": True, "reason": None}),
        ("length", {"value": [1, 2], "max": 2}, {"type": "length", "valid": True, "reason": None}),
        ("regex", {"value": "ab12", "pattern": "[a-z]+[0-9]+"},
         {"type": "regex", "valid": True, "reason": None}),
    ],
)  # fmt: skip
def test_returns_type_valid_and_reason_when_a_value_passes_its_rule(job_type, payload, expected):
    assert run_job(job_type, payload) == expected


def test_returns_valid_false_with_a_reason_when_a_value_fails_its_rule():
    result = run_job("email", {"value": "not-an-email"})

    assert result["valid"] is False
    assert result["reason"]
    assert result["normalized"] is None


def test_counts_an_absent_value_as_missing_when_the_type_is_required():
    result = run_job("required", {})

    assert result == {"type": "required", "valid": False, "reason": "value is missing"}


def test_runs_the_rule_named_by_payload_type_when_the_type_is_validate():
    result = run_job("validate", {"type": "range", "value": 50, "max": 10})

    assert result == {
        "type": "range",
        "valid": False,
        "reason": "50 is greater than the maximum 10",
    }


def test_fails_and_lists_the_rules_when_validate_has_no_type():
    message = _failure("validate", {"value": "x"})

    assert message.startswith("payload.type is required for validate jobs; one of: email,")


def test_fails_when_the_payload_type_contradicts_the_specific_validation_type():
    message = _failure("email", {"type": "phone", "value": "x@example.com"})

    assert message.startswith("payload.type is 'phone' but the job type is 'email'")


def test_returns_valid_false_promptly_when_a_catastrophic_pattern_meets_a_long_value():
    payload = {"value": "a" * 50_000 + "!", "pattern": "(a+)+$"}

    result = run_job("regex", payload)

    assert result == {"type": "regex", "valid": False, "reason": "value does not match the pattern"}


@pytest.mark.parametrize(
    ("job_type", "payload", "message"),
    [
        ("email", {}, "value is required for email validation"),
        ("regex", {"value": "a"}, "payload.pattern is required"),
        ("regex", {"value": "aa", "pattern": r"(a)\1"},
         r"pattern does not compile: invalid escape sequence: \1"),
        ("regex", {"value": "a", "pattern": "a" * (MAX_PATTERN_LENGTH + 1)},
         f"payload.pattern has {MAX_PATTERN_LENGTH + 1} characters; "
         f"the limit is {MAX_PATTERN_LENGTH}"),
        ("range", {"value": 1}, "range validation needs min, max or both"),
        ("range", {"value": 1, "min": True}, "payload.min: booleans are not numbers"),
        ("length", {"value": "a", "min": -1}, "payload.min is -1; it must be at least 0"),
        ("phone", {"value": "1", "region": "QQ"},
         "region 'QQ' is not a known region code; use ISO 3166-1 alpha-2, e.g. 'US'"),
        ("email", {"value": "a@b.c", "pattern": "x"},
         "payload.pattern is not a known field here; allowed fields: type, value"),
    ],
)  # fmt: skip
def test_fails_the_job_when_the_validation_request_itself_is_wrong(job_type, payload, message):
    assert _failure(job_type, payload) == message


def test_fails_with_the_known_types_listed_when_the_type_is_unknown():
    with pytest.raises(UnknownJobType) as caught:
        run_job("fibonacci", {})

    assert str(caught.value).startswith("unknown job type 'fibonacci'; known types: aggregate,")


_NUMBERS = {"count": 5, "seed": 1}
_DATA = {"data": {"a": " B ", "n": [None, 1.5]}}
_SAMPLE_PAYLOADS: dict[str, dict[str, object]] = {
    "sum": _NUMBERS,
    "average": _NUMBERS,
    "min": _NUMBERS,
    "max": _NUMBERS,
    "sort": _NUMBERS,
    "aggregate": _NUMBERS,
    "uppercase": _DATA,
    "lowercase": _DATA,
    "reverse": _DATA,
    "filter": _DATA,
    "normalize": _DATA,
    "email": {"value": "x"},
    "phone": {"value": "x"},
    "numeric": {"value": "x"},
    "required": {"value": "x"},
    "range": {"value": 2, "min": 0, "max": 3},
    "length": {"value": "x", "max": 3},
    "regex": {"value": "x", "pattern": "x"},
    "calculate": {"operation": "statistics", "numbers": [0.1, 0.2, 0.2]},
    "transform": {"operation": "normalize", "data": {"a": "x"}},
    "validate": {"type": "numeric", "value": "1e3"},
}


def test_has_a_sample_payload_for_every_job_type():
    assert set(_SAMPLE_PAYLOADS) == JOB_TYPES


@pytest.mark.parametrize("job_type", sorted(_SAMPLE_PAYLOADS))
def test_returns_a_json_serialisable_result_for_every_job_type(job_type):
    result = run_job(job_type, _SAMPLE_PAYLOADS[job_type])

    assert json.loads(json.dumps(result, allow_nan=False)) == result
