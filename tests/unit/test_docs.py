"""The documents' promises that code can check: the README's settings, the contract's tables."""

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from python_worker.adapters.rabbitmq.connection import (
    DEAD_LETTER_QUEUE,
    EXCHANGE,
    JOB_QUEUES,
    dead_letter_headers,
)
from python_worker.adapters.wire import heartbeat_body, status_body
from python_worker.application.job_types import JOB_TYPES, run_job
from python_worker.application.ports import Heartbeat, StatusUpdate
from python_worker.domain.jobs import JobStatus
from scripts.config_table import config_table, readme_table

CONTRACT = Path(__file__).resolve().parents[2] / "docs" / "contract.md"


def test_readme_configuration_table_is_the_one_generated_from_the_settings():
    table = readme_table()

    assert table is not None, "README lost its config-table markers"
    assert table == config_table(), (
        "README configuration table is stale: run `python scripts/config_table.py --write`"
    )


def section(number: int) -> str:
    """The text of contract §`number`, up to the next section."""
    text = CONTRACT.read_text(encoding="utf-8")
    match = re.search(rf"^## §{number} .*?(?=^## §|\Z)", text, re.S | re.M)
    assert match, f"docs/contract.md has no §{number}"
    return match.group(0)


def tables(text: str) -> list[list[list[str]]]:
    """Every Markdown table in `text`: its rows (header first), each a list of cells."""
    found: list[list[list[str]]] = []
    rows: list[list[str]] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", cell) for cell in cells):
                rows.append(cells)
        elif rows:
            found.append(rows)
            rows = []
    return found


def names(cell: str) -> set[str]:
    """The `code` names in a cell."""
    return set(re.findall(r"`([^`]+)`", cell))


def test_contract_topology_table_names_what_the_worker_declares():
    layout, headers = tables(section(3))

    assert {names(row[0]).pop() for row in layout[1:]} == {
        EXCHANGE,
        *JOB_QUEUES,
        DEAD_LETTER_QUEUE,
    }
    written = dead_letter_headers("why", "worker-1", "job.low", datetime.now(UTC))
    assert {names(row[0]).pop() for row in headers[1:]} == set(written)


def test_contract_job_type_table_lists_every_job_type_the_worker_runs():
    (families, _results) = tables(section(5))

    listed = set().union(*(names(row[1]) for row in families[1:]))

    assert listed == JOB_TYPES


_SAMPLES = {
    "sum": {"numbers": [1, 2]},
    "average": {"numbers": [1, 2]},
    "min": {"numbers": [1, 2]},
    "max": {"numbers": [1, 2]},
    "sort": {"numbers": [2, 1]},
    "aggregate": {"numbers": [1, 2]},
    "statistics": {"operation": "statistics", "numbers": [1, 2, 2]},
    "uppercase": {"data": {"a": "x"}},
    "lowercase": {"data": {"a": "X"}},
    "reverse": {"data": {"a": "xy"}},
    "filter": {"data": {"a": None, "b": 1}},
    "normalize": {"data": {"a": " x "}},
    "email": {"value": "a@example.com"},
    "phone": {"value": "+44 20 7946 0958"},
    "numeric": {"value": "1.5"},
    "required": {"value": "x"},
    "range": {"value": 2, "min": 1},
    "length": {"value": "ab", "max": 3},
    "regex": {"value": "ab", "pattern": "a.*"},
}


@pytest.mark.parametrize("operation", sorted(_SAMPLES))
def test_contract_result_table_gives_each_operations_result_keys(operation):
    (_families, results) = tables(section(5))
    documented = {op: names(row[1]) for row in results[1:] for op in names(row[0])}
    job_type = "calculate" if operation == "statistics" else operation

    result = run_job(job_type, _SAMPLES[operation])

    assert set(result) == documented[operation]


def full_update() -> StatusUpdate:
    return StatusUpdate(
        job_id="j",
        status=JobStatus.FAILED,
        worker_id="w",
        timestamp=datetime(2026, 1, 1, tzinfo=UTC),
        job_type="sum",
        queue="job.low",
        result={"value": 1},
        error_message="e",
        progress=100,
        duration_ms=1.0,
    )


def test_contract_status_table_lists_every_field_a_status_update_can_have():
    (fields,) = tables(section(6))

    assert {names(row[0]).pop() for row in fields[1:]} == set(status_body(full_update()))


def test_contract_heartbeat_table_lists_every_field_a_heartbeat_has():
    (fields,) = tables(section(7))
    heartbeat = Heartbeat(
        worker_id="w",
        worker_type="python",
        status="idle",
        capacity=1,
        current_load=0,
        processed_count=0,
        failed_count=0,
        success_rate=1.0,
        average_job_time_ms=0.0,
        timestamp=datetime(2026, 1, 1, tzinfo=UTC),
        hostname="h",
        version="0",
    )

    assert {names(row[0]).pop() for row in fields[1:]} == set(heartbeat_body(heartbeat))


def test_the_code_cites_the_contract_and_not_the_old_spec():
    root = CONTRACT.parents[1]
    sources = [*(root / "src").rglob("*.py"), *(root / "tests").rglob("*.py")]
    old = "SPEC" + " §"  # spelt apart, so this file does not cite it
    citing_spec = [str(path) for path in sources if old in path.read_text(encoding="utf-8")]

    assert citing_spec == []
