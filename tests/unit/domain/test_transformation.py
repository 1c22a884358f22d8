"""Transformation handlers: nested walking, each operation, the limits and invariant rules."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from python_worker.domain.errors import InvalidPayload
from python_worker.domain.limits import MAX_DEPTH, MAX_FIELDS, MAX_NODES, MAX_STRING_LENGTH
from python_worker.domain.transformation import (
    filter_data,
    lowercase,
    normalize,
    normalize_text,
    reverse,
    uppercase,
)

keys = st.text(max_size=8)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)
json_objects = st.dictionaries(keys, json_values, max_size=5)


def _nested(depth: int) -> dict[str, object]:
    data: dict[str, object] = {"leaf": "x"}
    for _ in range(depth - 1):
        data = {"child": data}
    return data


def _strings_in(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [text for item in value for text in _strings_in(item)]
    if isinstance(value, dict):
        return [text for item in value.values() for text in _strings_in(item)]
    return []


def test_uppercases_string_values_at_every_level_and_leaves_keys_alone():
    data = {"name": "ada", "tags": ["x", {"inner": "y"}], "n": 1, "ok": True, "none": None}

    result = uppercase(data)

    assert result == {
        "name": "ADA",
        "tags": ["X", {"inner": "Y"}],
        "n": 1,
        "ok": True,
        "none": None,
    }


def test_lowercases_unicode_strings_when_they_have_accents():
    assert lowercase({"city": "ÉCOLE", "Key": "ÄÖÜ"}) == {"city": "école", "Key": "äöü"}


def test_uppercases_sharp_s_to_double_s_as_unicode_specifies():
    assert uppercase({"word": "straße"}) == {"word": "STRASSE"}


def test_reverses_strings_and_lists_recursively():
    data = {"word": "abc", "items": [1, "xy", [2, 3]], "n": 10}

    result = reverse(data)

    assert result == {"word": "cba", "items": [[3, 2], "yx", 1], "n": 10}


def test_does_not_change_the_input_when_transforming():
    data = {"items": ["a", "b"]}

    reverse(data)

    assert data == {"items": ["a", "b"]}


def test_normalizes_strings_to_nfkc_trimmed_with_whitespace_collapsed():
    data = {
        "text": "  \ufb01ne\u00a0\u00a0 \uff34\uff45\uff53\uff54\n\tline  ",
        "nested": ["\u3000a  b\u3000"],
    }

    result = normalize(data)

    assert result == {"text": "fine Test line", "nested": ["a b"]}


def test_normalize_composes_a_letter_and_its_combining_accent_into_one_character():
    assert normalize_text("e\u0301") == "é"


def test_drops_nulls_and_empty_values_recursively_when_no_fields_are_given():
    data = {"a": None, "b": "", "c": [], "d": {}, "e": {"f": None}, "g": [None, 1, ""], "h": 0}

    result = filter_data(data)

    assert result == {"g": [1], "h": 0}


def test_keeps_false_zero_and_blank_strings_when_dropping_empty_values():
    data = {"off": False, "zero": 0, "blank": "  "}

    assert filter_data(data) == data


def test_returns_an_empty_object_when_every_value_is_empty():
    assert filter_data({"a": None, "b": [[]]}) == {}


def test_keeps_only_named_fields_when_fields_are_given():
    data = {"id": 1, "name": "ada", "secret": "x", "missing": None}

    result = filter_data(data, fields=["id", "name", "missing"])

    assert result == {"id": 1, "name": "ada", "missing": None}


def test_keeps_nested_fields_through_objects_and_lists_when_paths_are_dotted():
    data = {"user": {"name": "ada", "pw": "x"}, "orders": [{"id": 1, "card": "4242"}, 5]}

    result = filter_data(data, fields=["user.name", "orders.id"])

    assert result == {"user": {"name": "ada"}, "orders": [{"id": 1}]}


def test_keeps_a_whole_field_when_it_is_named_alongside_a_narrower_path():
    data = {"user": {"name": "ada", "age": 36}}

    result = filter_data(data, fields=["user.name", "user"])

    assert result == data


def test_drops_excluded_fields_at_any_named_depth():
    data = {"id": 1, "user": {"name": "ada", "pw": "x"}, "items": [{"pw": 1, "v": 2}]}

    result = filter_data(data, exclude=["user.pw", "items.pw"])

    assert result == {"id": 1, "user": {"name": "ada"}, "items": [{"v": 2}]}


def test_applies_exclude_after_fields_when_both_are_given():
    data = {"user": {"name": "ada", "pw": "x"}, "other": 1}

    result = filter_data(data, fields=["user"], exclude=["user.pw"])

    assert result == {"user": {"name": "ada"}}


@pytest.mark.parametrize("path", ["", "a..b", ".a", "a."])
def test_refuses_a_field_path_when_it_has_an_empty_segment(path):
    with pytest.raises(InvalidPayload, match=r"fields\[0\]: .* is not a dotted field path"):
        filter_data({"a": 1}, fields=[path])


def test_refuses_fields_when_the_list_is_empty():
    with pytest.raises(InvalidPayload, match="fields is empty"):
        filter_data({"a": 1}, fields=[])


def test_refuses_fields_and_names_the_limit_when_there_are_too_many():
    with pytest.raises(InvalidPayload, match=f"the limit is {MAX_FIELDS}"):
        filter_data({"a": 1}, exclude=["a"] * (MAX_FIELDS + 1))


def test_transforms_data_when_it_is_nested_exactly_to_the_depth_limit():
    data = _nested(MAX_DEPTH)

    result = uppercase(data)

    assert _strings_in(result) == ["X"]


def test_refuses_data_and_names_the_limit_when_it_is_nested_too_deep():
    data = _nested(MAX_DEPTH + 1)

    with pytest.raises(InvalidPayload, match=f"nested {MAX_DEPTH + 1} levels deep; the limit is"):
        uppercase(data)


def test_refuses_data_without_recursion_error_when_it_is_nested_thousands_deep():
    data = _nested(100_000)

    with pytest.raises(InvalidPayload, match="the limit is 32"):
        normalize(data)


def test_refuses_data_and_names_the_limit_when_it_has_too_many_values():
    data = {"items": list(range(MAX_NODES))}

    with pytest.raises(InvalidPayload, match=f"more than {MAX_NODES} values"):
        reverse(data)


def test_refuses_data_and_names_the_path_when_a_string_is_too_long():
    data = {"a": [{"b": "x" * (MAX_STRING_LENGTH + 1)}]}

    with pytest.raises(InvalidPayload) as caught:
        lowercase(data)

    assert str(caught.value) == (
        f"data.a[0].b has {MAX_STRING_LENGTH + 1} characters; the limit is {MAX_STRING_LENGTH}"
    )


@pytest.mark.parametrize("bad", [math.nan, math.inf, b"bytes", {1, 2}])
def test_refuses_data_when_it_holds_a_value_json_cannot_carry(bad):
    with pytest.raises(InvalidPayload, match=r"data\.x"):
        uppercase({"x": bad})


def test_refuses_data_when_it_is_not_an_object():
    with pytest.raises(InvalidPayload, match="data must be a JSON object, not a list"):
        uppercase(["a"])  # type: ignore[arg-type]


@given(json_objects)
def test_uppercase_is_idempotent_for_any_object(data):
    once = uppercase(data)

    assert uppercase(once) == once


@given(json_objects)
def test_lowercase_is_idempotent_for_any_object(data):
    once = lowercase(data)

    assert lowercase(once) == once


@given(json_objects)
def test_normalize_is_idempotent_for_any_object(data):
    once = normalize(data)

    assert normalize(once) == once


@given(st.text())
def test_normalized_text_has_no_edge_or_doubled_whitespace_for_any_string(text):
    result = normalize_text(text)

    assert result == result.strip()
    assert "  " not in result


@given(json_objects)
def test_reverse_twice_gives_back_the_original_for_any_object(data):
    assert reverse(reverse(data)) == data


@given(json_objects)
def test_filter_never_keeps_nulls_or_empty_values_for_any_object(data):
    result = filter_data(data)

    def no_empties(value: object) -> bool:
        if value is None or value in ("", [], {}):
            return False
        if isinstance(value, list):
            return all(no_empties(item) for item in value)
        if isinstance(value, dict):
            return all(no_empties(item) for item in value.values())
        return True

    assert all(no_empties(value) for value in result.values())
