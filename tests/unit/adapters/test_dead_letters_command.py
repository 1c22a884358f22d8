"""`dead-letters` driven over the embedded broker, wired as bootstrap wires it; and its replays."""

import json

import pytest

from python_worker.adapters.cli import dead_letters
from python_worker.adapters.cli.parser import build_parser
from python_worker.adapters.memory import InMemorySource
from python_worker.adapters.memory.dead_letters import InMemoryDeadLetters
from python_worker.application.ports import DeadLetterSelection, Settlement
from tests.conftest import MemoryWorker, make_memory_worker

UNKNOWN_TYPE_JOB = {"id": "job-1", "type": "no.such.type"}


def run(worker: MemoryWorker, *args: str) -> int:
    parsed = build_parser("test").parse_args(["dead-letters", *args])
    return dead_letters.run(worker.container.dead_letters(), parsed)


@pytest.fixture
def refused() -> MemoryWorker:
    worker = make_memory_worker()
    worker.publish("job.low", UNKNOWN_TYPE_JOB)
    worker.publish("job.high", b"not json")
    worker.run_until_idle()
    assert len(worker.source.dead_lettered) == 2
    return worker


def test_lists_each_message_with_its_queue_and_reason_when_the_worker_refused_it(
    refused: MemoryWorker, capsys: pytest.CaptureFixture[str]
):
    status = run(refused, "list", "--json")

    assert status == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_queue = {line["queue"]: line for line in lines}
    assert by_queue["job.low"]["id"] == "job-1"
    assert by_queue["job.low"]["reason"].startswith("unknown job type 'no.such.type'")
    assert by_queue["job.high"]["id"].startswith("sha256:")
    assert by_queue["job.high"]["jobId"] is None


def test_puts_the_message_back_on_its_queue_when_requeued_by_id(
    refused: MemoryWorker, capsys: pytest.CaptureFixture[str]
):
    status = run(refused, "requeue", "--id", "job-1")

    assert status == 0
    assert "requeued 1 message(s)" in capsys.readouterr().out
    assert refused.source.pending() == 1
    assert [entry.queue for entry in refused.source.dead_lettered] == ["job.high"]


def test_puts_one_copy_back_when_the_same_body_was_dead_lettered_twice(
    capsys: pytest.CaptureFixture[str],
):
    worker = make_memory_worker()
    worker.publish("job.low", UNKNOWN_TYPE_JOB)
    worker.publish("job.low", UNKNOWN_TYPE_JOB)
    worker.run_until_idle()

    status = run(worker, "requeue", "--all")

    assert status == 0
    assert "requeued 1 message(s)" in capsys.readouterr().out
    assert worker.source.pending() == 1
    assert worker.source.dead_lettered == []


def test_lists_copies_of_one_body_as_one_message_counted_twice_when_there_are_two(
    capsys: pytest.CaptureFixture[str],
):
    worker = make_memory_worker()
    worker.publish("job.low", UNKNOWN_TYPE_JOB)
    worker.publish("job.low", UNKNOWN_TYPE_JOB)
    worker.run_until_idle()

    run(worker, "list", "--json")

    [line] = capsys.readouterr().out.splitlines()
    assert json.loads(line)["times"] == 2


def test_exits_1_and_moves_nothing_when_no_message_answers_to_the_id(
    refused: MemoryWorker, capsys: pytest.CaptureFixture[str]
):
    status = run(refused, "requeue", "--id", "job-2")

    assert status == 1
    assert "not found: no dead-lettered message answers to job-2" in capsys.readouterr().err
    assert len(refused.source.dead_lettered) == 2


def test_keeps_every_message_when_purge_lacks_yes(
    refused: MemoryWorker, capsys: pytest.CaptureFixture[str]
):
    status = run(refused, "purge")

    assert status == 2
    assert "--yes" in capsys.readouterr().err
    assert len(refused.source.dead_lettered) == 2


def test_escapes_control_characters_when_a_job_id_holds_them(capsys: pytest.CaptureFixture[str]):
    worker = make_memory_worker()
    worker.publish("job.low", {"id": "red\x1b[31m\u202eflip", "type": "no.such.type"})
    worker.run_until_idle()

    run(worker, "list")

    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert "\u202e" not in out
    assert out.splitlines()[1].startswith("sha256:")


def test_shows_the_body_when_given_the_handle_of_a_message_without_an_id(
    refused: MemoryWorker, capsys: pytest.CaptureFixture[str]
):
    run(refused, "list", "--json")
    handle = next(
        line["handle"]
        for line in map(json.loads, capsys.readouterr().out.splitlines())
        if line["jobId"] is None
    )

    status = run(refused, "show", handle)

    assert status == 0
    assert capsys.readouterr().out.rstrip().endswith("body (8 bytes):\nnot json")


def test_counts_the_replay_s_attempts_on_from_the_first_run_when_requeued():
    source = InMemorySource()
    source.publish("job.low", b'{"id": "job-1"}')
    for _ in range(2):  # delivered twice: the second time it is dead-lettered
        first = source.receive(0)
        assert first is not None
        outcome = Settlement.REQUEUE if first.attempt == 1 else Settlement.DEAD_LETTER
        source.settle(first, outcome, "refused")

    InMemoryDeadLetters(source).requeue(DeadLetterSelection(keys=frozenset({"job-1"})))
    replay = source.receive(0)

    # A fresh first delivery, but its statuses say attempt 3: their Idempotency-Keys
    # (`job-1:running:3`, …) are none an API has seen from the first run.
    assert replay is not None
    assert (replay.attempt, replay.is_redelivery, replay.job_attempt) == (1, False, 3)
