"""Reading a message body: what a lenient reader forgives only to name the job it refuses."""

import json

import pytest

from python_worker.application.messages import job_id_of, parse_job
from python_worker.domain.errors import InvalidMessage

BOM = "\ufeff".encode()


def refusal(body: bytes) -> InvalidMessage:
    with pytest.raises(InvalidMessage) as caught:
        parse_job(body)
    return caught.value


def test_names_the_job_and_nan_when_json_dumps_wrote_nan():
    body = json.dumps({"id": "x1", "type": "sum", "payload": {"numbers": [float("nan")]}})

    error = refusal(body.encode())

    assert error.job_id == "x1"
    assert error.reason == (
        "message body is not valid JSON: it holds NaN, which JSON has no place for "
        "(send a number or null)"
    )


@pytest.mark.parametrize(
    ("value", "name"), [(float("inf"), "Infinity"), (float("-inf"), "-Infinity")]
)
def test_names_the_job_and_the_infinity_when_json_dumps_wrote_one(value: float, name: str):
    body = json.dumps({"id": "x2", "type": "sum", "payload": {"numbers": [1, value]}})

    error = refusal(body.encode())

    assert error.job_id == "x2"
    assert f"it holds {name}, which JSON has no place for" in error.reason


def test_names_each_constant_once_when_a_body_holds_several():
    numbers = [float("nan"), float("inf"), float("nan"), float("-inf"), float("inf")]
    body = json.dumps({"id": "x3", "type": "sum", "payload": {"numbers": numbers}})

    error = refusal(body.encode())

    assert error.job_id == "x3"
    assert "it holds NaN, Infinity, -Infinity, which JSON" in error.reason


def test_names_the_job_and_the_byte_order_mark_when_a_body_starts_with_one():
    body = BOM + json.dumps({"id": "x4", "type": "sum", "payload": {"numbers": [1]}}).encode()

    error = refusal(body)

    assert error.job_id == "x4"
    assert error.reason == (
        "message body is not valid JSON: it starts with a UTF-8 byte-order mark"
    )


def test_names_both_problems_when_a_body_has_a_byte_order_mark_and_nan():
    body = BOM + b'{"id": "x5", "type": "sum", "payload": {"numbers": [NaN]}}'

    error = refusal(body)

    assert error.job_id == "x5"
    assert error.reason == (
        "message body is not valid JSON: it starts with a UTF-8 byte-order mark; it holds NaN, "
        "which JSON has no place for (send a number or null)"
    )


@pytest.mark.parametrize(
    "body",
    [
        b'{"type": "sum", "payload": {"numbers": [NaN]}}',  # no id
        b'{"id": 7, "type": "sum", "payload": {"numbers": [NaN]}}',  # id not a string
        b'{"id": "", "type": "sum", "payload": {"numbers": [NaN]}}',  # id empty
        b'{"id": "' + b"i" * 257 + b'", "type": "sum", "payload": [Infinity]}',  # id too long
        b'[{"id": "x6", "n": NaN}]',  # not an object
        b"NaN",
    ],
)
def test_names_no_job_but_still_the_constant_when_lenient_reading_finds_no_usable_id(
    body: bytes,
):
    error = refusal(body)

    assert error.job_id is None
    assert "which JSON has no place for" in error.reason


@pytest.mark.parametrize(
    "body",
    [
        b'{"id": "x7", "type": "sum", "payload": {"n',  # cut off
        b'{"id": "x8", "type": "sum", "x": "caf\xe9"}',  # not UTF-8
        BOM + b'{"id": "x9", "type": "sum",',  # a byte-order mark does not excuse broken JSON
        b'{"id": "x10", "type": "sum", "payload": {"numbers": [nan]}}',  # not what json writes
        b"{'id': 'x11', 'type': 'sum'}",  # single quotes
    ],
)
def test_names_no_job_and_keeps_the_strict_reason_when_the_body_is_not_readable_leniently(
    body: bytes,
):
    error = refusal(body)

    assert error.job_id is None
    assert error.reason.startswith("message body is not valid UTF-8 JSON: ")


def test_leaves_the_lenient_path_alone_when_strict_json_fails_validation():
    error = refusal(b'{"id": "x12", "payload": {"numbers": [1]}}')

    assert error.job_id == "x12"
    assert error.reason == "type: is required"


def test_reads_the_id_for_log_lines_when_the_body_holds_nan_or_a_byte_order_mark():
    nan_body = b'{"id": "x13", "type": "sum", "payload": {"numbers": [NaN]}}'
    bom_body = BOM + b'{"id": "x14", "type": "sum"}'

    assert job_id_of(nan_body) == "x13"
    assert job_id_of(bom_body) == "x14"
    assert job_id_of(b'{"id": "x15", "type": "sum", "payload": {"n') is None
