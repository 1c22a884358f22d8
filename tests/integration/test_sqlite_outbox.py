"""The SQLite status outbox: order, durability across instances, the fullness signal."""

import fcntl
import os
import threading
from pathlib import Path

import pytest

from python_worker.adapters.sqlite.outbox import (
    LOCK_FILENAME,
    OUTBOX_FILENAME,
    Outbox,
    OutboxInUse,
    OutboxUnavailable,
)
from tests.support.outbox_holder import outbox_held


def test_returns_rows_oldest_first_when_peeking(tmp_path: Path):
    outbox = Outbox(tmp_path)
    for n in range(5):
        outbox.append(f"job-{n}", f"job-{n}:running:1", b'{"n": %d}' % n)

    rows = outbox.peek(3)

    assert [row.job_id for row in rows] == ["job-0", "job-1", "job-2"]
    assert rows[0].body == b'{"n": 0}'
    assert rows[0].idempotency_key == "job-0:running:1"
    assert rows[0].seq < rows[1].seq < rows[2].seq


def test_forgets_only_deleted_rows_when_deleting(tmp_path: Path):
    outbox = Outbox(tmp_path)
    seqs = [outbox.append("job", f"key-{n}", b"{}") for n in range(4)]

    outbox.delete(seqs[0], seqs[2])

    assert [row.idempotency_key for row in outbox.peek(10)] == ["key-1", "key-3"]
    assert outbox.count() == 2


def test_sees_rows_of_earlier_instance_when_reopened_on_same_directory(tmp_path: Path):
    first = Outbox(tmp_path / "nested" / "outbox")
    first.append("job-1", "job-1:running:1", b"a")
    first.append("job-1", "job-1:completed:1", b"b")
    first.close()

    second = Outbox(tmp_path / "nested" / "outbox")
    later = second.append("job-2", "job-2:running:1", b"c")

    assert (tmp_path / "nested" / "outbox" / OUTBOX_FILENAME).exists()
    assert second.count() == 3
    assert [row.body for row in second.peek(10)] == [b"a", b"b", b"c"]
    assert second.peek(10)[-1].seq == later


def test_refuses_a_second_outbox_on_a_directory_while_the_first_is_open(tmp_path: Path):
    first = Outbox(tmp_path)
    first.append("job-1", "job-1:running:1", b"a")

    with pytest.raises(OutboxInUse) as refused:
        Outbox(tmp_path)

    assert refused.value.holder == f"pid {os.getpid()}"
    assert Outbox.holder_in(tmp_path) == f"pid {os.getpid()}"
    first.close()
    assert Outbox.holder_in(tmp_path) is None
    assert Outbox(tmp_path).count() == 1


def test_names_the_other_process_and_frees_the_directory_when_it_is_killed(tmp_path: Path):
    with outbox_held(tmp_path) as holder:
        with pytest.raises(OutboxInUse) as refused:
            Outbox(tmp_path)
        assert refused.value.holder == f"pid {holder.pid}"
        holder.kill()  # -9: no close(), no clean-up; the kernel drops the lock
        holder.wait(timeout=30)

        reopened = Outbox(tmp_path)

    assert reopened.count() == 0
    assert Outbox.holder_in(tmp_path) == f"pid {os.getpid()}"


def test_opens_once_a_check_looking_at_the_lock_is_done(tmp_path: Path):
    Outbox(tmp_path).close()
    # What `check` does for an instant (Outbox.holder_in): hold the lock shared.
    looking = os.open(tmp_path / LOCK_FILENAME, os.O_RDONLY)
    fcntl.flock(looking, fcntl.LOCK_SH)
    threading.Timer(0.1, os.close, [looking]).start()

    outbox = Outbox(tmp_path)

    assert Outbox.holder_in(tmp_path) == f"pid {os.getpid()}"
    outbox.close()


def test_keeps_storing_and_reports_full_when_bound_is_reached(tmp_path: Path):
    outbox = Outbox(tmp_path, max_items=3)

    fullness = []
    for n in range(5):
        outbox.append("job", f"key-{n}", b"{}")
        fullness.append(outbox.is_full())

    assert fullness == [False, False, True, True, True]
    assert outbox.count() == 5


def test_counts_every_row_when_threads_append_concurrently(tmp_path: Path):
    outbox = Outbox(tmp_path)

    def append_many(thread: int) -> None:
        for n in range(100):
            outbox.append(f"job-{thread}", f"job-{thread}:{n}", b"{}")

    threads = [threading.Thread(target=append_many, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert outbox.count() == 400
    assert len(outbox.peek(1000)) == 400
    for thread in range(4):
        keys = [r.idempotency_key for r in outbox.peek(1000) if r.job_id == f"job-{thread}"]
        assert keys == [f"job-{thread}:{n}" for n in range(100)]


def test_raises_one_line_error_naming_directory_when_it_cannot_be_created(tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")

    with pytest.raises(OutboxUnavailable) as raised:
        Outbox(blocker / "outbox")

    assert str(blocker / "outbox") in str(raised.value)
    assert "\n" not in str(raised.value)
