"""Validation handlers: each rule's pass and fail, bad requests, limits and linear-time regexes."""

import math
import time

import pytest
import re2
from hypothesis import given
from hypothesis import strategies as st

from python_worker.domain.errors import InvalidPayload
from python_worker.domain.limits import MAX_PATTERN_LENGTH, MAX_SAFE_INTEGER, MAX_STRING_LENGTH
from python_worker.domain.validation import (
    Verdict,
    validate_email,
    validate_length,
    validate_numeric,
    validate_phone,
    validate_range,
    validate_regex,
    validate_required,
)


def test_accepts_an_email_and_lowercases_its_domain():
    verdict = validate_email("Ada.Lovelace@EXAMPLE.com")

    assert verdict == Verdict(valid=True, reason=None, normalized="Ada.Lovelace@example.com")


def test_accepts_an_email_when_the_domain_is_internationalized():
    verdict = validate_email("user@bücher.de")

    assert verdict.valid
    assert verdict.normalized == "user@bücher.de"


@pytest.mark.parametrize("address", ["no-at-sign", "two@@example.com", "a@b", "a b@example.com"])
def test_rejects_an_email_with_a_reason_when_it_breaks_the_syntax(address):
    verdict = validate_email(address)

    assert not verdict.valid
    assert verdict.reason
    assert verdict.normalized is None


def test_rejects_an_email_when_the_value_is_not_a_string():
    assert validate_email(42) == Verdict(valid=False, reason="a number is not a string")


def test_fails_the_request_when_an_email_value_is_missing():
    with pytest.raises(InvalidPayload, match="value is required for email validation"):
        validate_email(None)


def test_fails_the_request_and_names_the_limit_when_a_value_is_too_long():
    with pytest.raises(InvalidPayload, match=f"the limit is {MAX_STRING_LENGTH}"):
        validate_email("a" * (MAX_STRING_LENGTH + 1))


def test_accepts_an_international_phone_number_and_gives_it_in_e164():
    verdict = validate_phone("+44 20 7946 0958")

    assert verdict == Verdict(valid=True, reason=None, normalized="+442079460958")


def test_reads_a_national_phone_number_when_a_region_is_given():
    verdict = validate_phone("(650) 253-0000", region="us")

    assert verdict.normalized == "+16502530000"


def test_rejects_a_national_phone_number_when_no_region_is_given():
    verdict = validate_phone("(650) 253-0000")

    assert not verdict.valid
    assert "country code" in (verdict.reason or "")


def test_rejects_a_phone_number_when_it_does_not_exist_in_the_numbering_plan():
    verdict = validate_phone("+1 555 000 0000")

    assert verdict == Verdict(valid=False, reason="not a valid phone number in its numbering plan")


def test_fails_the_request_when_the_phone_region_is_unknown():
    with pytest.raises(InvalidPayload, match="region 'ZZ' is not a known region code"):
        validate_phone("123", region="ZZ")


@pytest.mark.parametrize(
    ("value", "normalized"),
    [
        (42, 42),
        (-1.5, -1.5),
        (" -1.5e3 ", -1500.0),
        ("007", 7),
        ("+12", 12),
        (".5", 0.5),
        ("12345678901234567890", 1.2345678901234567e19),
        (2**60, float(2**60)),
    ],
)
def test_accepts_a_number_or_numeric_string_and_normalizes_it(value, normalized):
    verdict = validate_numeric(value)

    assert verdict == Verdict(valid=True, reason=None, normalized=normalized)
    assert type(verdict.normalized) is type(normalized)


@pytest.mark.parametrize(
    "value", ["abc", "1_000", "1e", "--1", "", "١٢", "NaN", "inf", "0x1F", "1e400", True, [1]]
)
def test_rejects_a_value_when_it_is_not_a_finite_number(value):
    verdict = validate_numeric(value)

    assert not verdict.valid
    assert verdict.reason


def test_rejects_a_float_when_it_is_nan():
    assert not validate_numeric(math.nan).valid


def test_rejects_a_numeric_string_promptly_when_it_has_many_digits_and_a_bad_end():
    text = "1" * MAX_STRING_LENGTH

    started = time.perf_counter()
    verdict = validate_numeric(text[:-1] + "x")

    assert not verdict.valid
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize("value", [0, False, "x", [0], {"a": None}, 0.0])
def test_counts_a_value_as_present_when_it_is_falsy_but_given(value):
    assert validate_required(value) == Verdict(valid=True)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "value is missing"),
        ("  \t", "value is blank"),
        ([], "value is empty"),
        ({}, "value is empty"),
    ],
)
def test_counts_a_value_as_absent_when_it_is_null_blank_or_empty(value, reason):
    assert validate_required(value) == Verdict(valid=False, reason=reason)


def test_accepts_a_number_when_it_lies_on_the_range_bounds():
    assert validate_range(10, minimum=10, maximum=20).valid
    assert validate_range(20.0, minimum=10, maximum=20).valid


def test_rejects_a_number_and_says_which_bound_when_it_is_outside_the_range():
    below = validate_range(9, minimum=10)
    above = validate_range(20.5, maximum=20)

    assert below.reason == "9 is less than the minimum 10"
    assert above.reason == "20.5 is greater than the maximum 20"


@pytest.mark.parametrize("value", [True, "5", math.nan, [5]])
def test_rejects_a_range_value_when_it_is_not_a_finite_number(value):
    assert not validate_range(value, minimum=0).valid


def test_fails_the_request_when_a_range_has_no_bounds():
    with pytest.raises(InvalidPayload, match="range validation needs min, max or both"):
        validate_range(5)


def test_fails_the_request_when_range_min_is_above_max():
    with pytest.raises(InvalidPayload, match="min 10 is greater than max 1"):
        validate_range(5, minimum=10, maximum=1)


def test_fails_the_request_when_a_range_bound_is_a_boolean():
    with pytest.raises(InvalidPayload, match="min: booleans are not numbers"):
        validate_range(5, minimum=True)


def test_measures_strings_in_characters_and_lists_in_items():
    assert validate_length("日本語", minimum=3, maximum=3).valid
    assert validate_length([1, 2], maximum=1) == Verdict(
        valid=False, reason="2 items, more than the maximum 1"
    )
    assert validate_length("ab", minimum=3) == Verdict(
        valid=False, reason="2 characters, fewer than the minimum 3"
    )


def test_rejects_a_length_value_when_it_has_no_length():
    assert validate_length(12345, maximum=3) == Verdict(
        valid=False, reason="a number has no length"
    )


@pytest.mark.parametrize(("minimum", "maximum"), [(-1, None), (None, 1.5), (True, None)])
def test_fails_the_request_when_a_length_bound_is_not_a_non_negative_integer(minimum, maximum):
    with pytest.raises(InvalidPayload):
        validate_length("abc", minimum=minimum, maximum=maximum)


def test_accepts_a_value_when_the_pattern_matches_it_in_full():
    assert validate_regex("abc-123", r"[a-z]+-\d+") == Verdict(valid=True)


def test_rejects_a_value_when_the_pattern_matches_only_part_of_it():
    verdict = validate_regex("abc-123!", r"[a-z]+-\d+")

    assert verdict == Verdict(valid=False, reason="value does not match the pattern")


def test_matches_unicode_characters_as_single_characters():
    assert validate_regex("naïve", r"na.ve").valid


def test_rejects_promptly_when_a_catastrophic_pattern_meets_a_long_non_matching_value():
    value = "a" * 50_000 + "!"

    started = time.perf_counter()
    verdict = validate_regex(value, r"(a+)+$")

    assert not verdict.valid
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize(
    "pattern", [r"(a)\1", r"(?=a)a", r"(", r"a{2,1}", r"((a{1000}){1000}){1000}"]
)
def test_fails_the_request_when_the_pattern_does_not_compile(pattern):
    with pytest.raises(InvalidPayload, match="pattern does not compile"):
        validate_regex("a", pattern)


def test_fails_the_request_and_names_the_limit_when_the_pattern_is_too_long():
    with pytest.raises(InvalidPayload) as caught:
        validate_regex("a", "a" * (MAX_PATTERN_LENGTH + 1))

    assert str(caught.value) == (
        f"pattern has {MAX_PATTERN_LENGTH + 1} characters; the limit is {MAX_PATTERN_LENGTH}"
    )


def test_fails_the_request_even_when_the_value_is_not_a_string_if_the_pattern_is_bad():
    with pytest.raises(InvalidPayload, match="pattern does not compile"):
        validate_regex(5, r"(a)\1")


def test_rejects_a_regex_value_when_it_is_not_a_string():
    assert validate_regex(5, r"\d") == Verdict(valid=False, reason="a number is not a string")


@given(st.integers(min_value=-MAX_SAFE_INTEGER, max_value=MAX_SAFE_INTEGER))
def test_numeric_normalizes_the_decimal_text_of_any_safe_integer_back_to_it(number):
    verdict = validate_numeric(str(number))

    assert verdict.valid
    assert verdict.normalized == number


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_numeric_normalizes_the_repr_of_any_finite_float_back_to_it(number):
    verdict = validate_numeric(repr(number))

    assert verdict.normalized == number


@given(st.text(max_size=200))
def test_regex_accepts_any_string_against_its_own_escaped_pattern(text):
    verdict = validate_regex(text, re2.escape(text))

    assert verdict == Verdict(valid=True)


@given(st.text(max_size=200))
def test_regex_full_match_rejects_any_string_with_an_extra_character_appended(text):
    verdict = validate_regex(text + "!", re2.escape(text))

    assert not verdict.valid
