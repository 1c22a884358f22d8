"""Posts job status updates to the status API in order per job; a durable outbox covers outages."""

import email.utils
import logging
import math
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import requests

from adapters.backoff import full_jitter
from adapters.http.outbox import Outbox, OutboxRow
from adapters.http.transport import KeepAliveAdapter
from application.ports import OnHandled, StatusReporter, StatusUpdate

log = logging.getLogger(__name__)

_BODY_EXCERPT = 500


@dataclass(frozen=True, slots=True)
class _Pending:
    job_id: str
    idempotency_key: str
    body: bytes
    on_handled: OnHandled | None


@dataclass(frozen=True, slots=True)
class _Transient:
    """The API could not take the update now; worth trying again later."""

    reason: str
    retry_after: float | None = None


_DELIVERED = "delivered"
_REFUSED = "refused"  # a 4xx: logged, never retried
_Outcome = str | _Transient


class HttpStatusReporter(StatusReporter):
    """Posts each update to the status API; keeps it in a local SQLite outbox while it is down.

    Ordering. `report` hands the update to one of `lanes` lanes (a queue and a thread each),
    picked by the job id: updates of one job are posted one after another by one thread, so
    `running` reaches the API before the final status, while different jobs go out in parallel.

    Failures. A lane retries a connection error, a timeout, a 5xx or a 429 a few times with
    jittered exponential backoff (honouring a short Retry-After), then stores the update in the
    outbox. A 4xx other than 429 is logged with the API's answer and dropped: sending the same
    body again would get the same answer.

    Outage mode. While the outbox holds anything, lanes store new updates there at once instead
    of posting them: a dead API then costs one durable append per update instead of a timeout,
    and a job's later update can never overtake an earlier one waiting in the outbox. One
    replayer thread drains the outbox oldest first (also rows a previous process left behind):
    it probes with a single row, with backoff, until the API answers, then posts batches in
    parallel, still one job's rows in order on one thread.

    Why the lanes' "is the outbox empty?" check needs no lock shared with the replayer: rows
    of a job are only ever appended by that job's lane, one at a time, and the replayer deletes
    a row only after the API took it. So when a lane sees an empty outbox, every earlier update
    of its job has reached the API (or was refused for good) and posting directly keeps order.
    When it sees rows, appending keeps order too: the new row's `seq` is after all of them, and
    the replayer never posts a job's row while an older row of that job is still undelivered.

    The bearer token is a secret: it lives only in the prepared requests' headers, never in a
    log line, a repr or an exception message.
    """

    def __init__(
        self,
        url: str,
        outbox_dir: str | Path,
        *,
        token: str | None = None,
        lanes: int = 8,
        connect_timeout: float = 3.05,
        read_timeout: float = 10.0,
        max_attempts: int = 3,
        backoff_base: float = 0.2,
        backoff_cap: float = 2.0,
        probe_cap: float = 30.0,
        outbox_max_items: int = 100_000,
        replay_batch: int = 256,
        outbox: Outbox | None = None,
    ) -> None:
        """Start the lanes and the replayer.

        `url` is the full status endpoint (STATUS_UPDATE_URL). `max_attempts` posts per update
        in a lane before it goes to the outbox; waits between them are jittered, at most
        `backoff_cap` seconds (a longer Retry-After sends the update to the outbox, where the
        replayer waits it out). `probe_cap` caps the replayer's wait between probes of a dead
        API. `outbox` overrides the one opened in `outbox_dir`. Requests go straight to the API
        (no proxy, no .netrc): the transport is built for this one endpoint.
        """
        if lanes < 1 or max_attempts < 1:
            raise ValueError("lanes and max_attempts must be at least 1")
        self._url = url
        self._token = token
        self._timeouts = (connect_timeout, read_timeout)
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._probe_cap = probe_cap
        self._replay_batch = replay_batch
        self._transport = KeepAliveAdapter()
        # Prepared once; each POST copies it and sets only the body and the idempotency key,
        # skipping requests' per-call merging of settings, hooks and environment.
        template = requests.Request("POST", url, data=b"{}", headers=_headers(token))
        self._template = template.prepare()
        self._outbox = outbox if outbox is not None else Outbox(outbox_dir, outbox_max_items)

        self._local = threading.local()
        self._lock = threading.Lock()
        self._closed = False
        self._outage = False
        self._delivery_failures = 0
        self._replay_not_before = 0.0  # monotonic; set by a lane that gave up on the API
        # Notified whenever something leaves a lane or the outbox: `flush` waits on it.
        self._progress = threading.Condition()
        self._in_lanes = 0

        self._closing = threading.Event()  # lanes store instead of posting; waits end early
        self._stopping = threading.Event()  # the replayer exits
        self._rows_added = threading.Event()  # wakes an idle replayer
        self._kick = threading.Event()  # cuts a replayer's backoff short (flush, close)

        self._lanes: list[queue.SimpleQueue[_Pending | None]] = []
        self._lane_threads: list[threading.Thread] = []
        for index in range(lanes):
            lane: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
            thread = threading.Thread(
                target=self._run_lane, args=(lane,), name=f"status-lane-{index}", daemon=True
            )
            self._lanes.append(lane)
            self._lane_threads.append(thread)
        self._replay_pool = ThreadPoolExecutor(lanes, thread_name_prefix="status-replay")

        left_over = self._outbox.count()
        if left_over:
            self._outage = True
            log.warning(
                "status outbox holds %d updates from an earlier run; replaying them first",
                left_over,
            )
        for thread in self._lane_threads:
            thread.start()
        self._replayer = threading.Thread(
            target=self._run_replayer, name="status-replayer", daemon=True
        )
        self._replayer.start()

    # -- the port ------------------------------------------------------------------------------

    def report(self, update: StatusUpdate, on_handled: OnHandled | None = None) -> None:
        pending = _Pending(update.job_id, update.idempotency_key, _encode(update), on_handled)
        lane = self._lanes[hash(update.job_id) % len(self._lanes)]
        # Under the lock so `close` cannot slip its end-of-lane marker in front of this update.
        with self._lock:
            if self._closed:
                raise RuntimeError("status reporter is closed")
            with self._progress:
                self._in_lanes += 1
            lane.put(pending)

    def accepting(self) -> bool:
        return not self._outbox.is_full()

    def backlog(self) -> int:
        with self._progress:
            return self._in_lanes + self._outbox.count()

    def flush(self, timeout: float) -> bool:
        """Wait until no update is left in a lane, then try to empty the outbox in the time left.

        True once every update is handled (delivered, refused, or stored in the outbox): that
        is the port's contract, so a dead API still lets a shutdown finish in time.
        """
        deadline = time.monotonic() + timeout
        with self._progress:
            if not self._progress.wait_for(lambda: self._in_lanes == 0, timeout):
                return False
        if self._outbox.count():
            self._kick.set()
            with self._progress:
                self._progress.wait_for(
                    lambda: self._outbox.count() == 0, max(0.0, deadline - time.monotonic())
                )
        return True

    def close(self) -> None:
        """Stop the threads; whatever is still in a lane goes to the outbox, not the wire."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._closing.set()
            for lane in self._lanes:
                lane.put(None)
        for thread in self._lane_threads:
            thread.join()
        self._stopping.set()
        self._kick.set()
        self._rows_added.set()
        self._replayer.join()
        self._replay_pool.shutdown(wait=True)
        self._transport.close()
        left = self._outbox.count()
        self._outbox.close()
        if left:
            log.warning("status reporter closed with %d updates kept in the outbox", left)

    def __repr__(self) -> str:
        return f"HttpStatusReporter(url={self._url!r}, lanes={len(self._lanes)})"

    # -- lanes ---------------------------------------------------------------------------------

    def _run_lane(self, lane: "queue.SimpleQueue[_Pending | None]") -> None:
        while (pending := lane.get()) is not None:
            try:
                self._deliver_or_store(pending)
            except Exception:
                log.exception("status update for job %s could not be handled", pending.job_id)
            finally:
                with self._progress:
                    self._in_lanes -= 1
                    self._progress.notify_all()

    def _deliver_or_store(self, pending: _Pending) -> None:
        # See the class docstring for why this unlocked check keeps per-job order.
        if self._closing.is_set() or self._outbox.count():
            self._store(pending)
            return
        reason = ""
        retry_after: float | None = None
        for attempt in range(1, self._max_attempts + 1):
            outcome = self._post(pending.job_id, pending.idempotency_key, pending.body)
            if not isinstance(outcome, _Transient):
                _call(pending.on_handled, pending.job_id)
                return
            reason, retry_after = outcome.reason, outcome.retry_after
            if attempt == self._max_attempts:
                break
            wait = outcome.retry_after
            if wait is None:
                wait = full_jitter(self._backoff_base, attempt, self._backoff_cap)
            # A long Retry-After is the replayer's to honour; this lane has other jobs to post.
            # Once another lane has declared an outage, more attempts would only cost time.
            if wait > self._backoff_cap or self._closing.wait(wait) or self._outbox.count():
                break
        if not self._closing.is_set():
            self._enter_outage(reason)
            self._defer_replay(retry_after)
        self._store(pending)

    def _store(self, pending: _Pending) -> None:
        while True:
            try:
                self._outbox.append(pending.job_id, pending.idempotency_key, pending.body)
                break
            except Exception:
                # Without a durable copy the message must not be acked: keep trying, loudly.
                log.exception("could not store status update for job %s", pending.job_id)
                if self._stopping.wait(1.0):
                    return
        self._rows_added.set()
        _call(pending.on_handled, pending.job_id)

    # -- replay --------------------------------------------------------------------------------

    def _run_replayer(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            # Clear before looking, so an append between the look and the wait still wakes us.
            self._rows_added.clear()
            if not self._outbox.count():
                self._leave_outage()
                self._rows_added.wait()
                continue
            # A lane that just gave up has seen the API fail: don't hammer it at once.
            with self._lock:
                hold = self._replay_not_before - time.monotonic()
            if hold > 0 and not failures:
                failures = 1
                self._kick.wait(hold)
                self._kick.clear()
                continue
            # While the API is away, probe it with the oldest row alone, not a whole batch.
            rows = self._outbox.peek(1 if failures else self._replay_batch)
            handled, failure = self._replay(rows)
            if handled:
                self._outbox.delete(*handled)
                with self._progress:
                    self._progress.notify_all()
            if failure is None:
                failures = 0
                continue
            failures += 1
            self._enter_outage(failure.reason)
            if failure.retry_after is not None:
                wait = min(failure.retry_after, self._probe_cap)
            else:
                wait = full_jitter(self._backoff_base, failures, self._probe_cap)
            # Cleared after the wait, so a flush that kicked just before it is not missed.
            self._kick.wait(wait)
            self._kick.clear()

    def _replay(self, rows: Sequence[OutboxRow]) -> tuple[list[int], _Transient | None]:
        """Post `rows`; one job's rows in order on one thread. Returns the handled seqs."""
        groups: dict[int, list[OutboxRow]] = {}
        for row in rows:
            groups.setdefault(hash(row.job_id) % len(self._lanes), []).append(row)
        if len(groups) == 1:
            return self._replay_group(rows)
        handled: list[int] = []
        failure: _Transient | None = None
        for group_handled, group_failure in self._replay_pool.map(
            self._replay_group, groups.values()
        ):
            handled.extend(group_handled)
            failure = failure or group_failure
        return handled, failure

    def _replay_group(self, rows: Sequence[OutboxRow]) -> tuple[list[int], _Transient | None]:
        handled: list[int] = []
        for row in rows:
            if self._stopping.is_set():
                break
            outcome = self._post(row.job_id, row.idempotency_key, row.body)
            if isinstance(outcome, _Transient):
                # Later rows of this group may belong to the same job: they must wait.
                return handled, outcome
            handled.append(row.seq)
        return handled, None

    # -- HTTP ----------------------------------------------------------------------------------

    def _post(self, job_id: str, key: str, body: bytes) -> _Outcome:
        # Each thread posts one request at a time, so it can reuse its own prepared request.
        request: requests.PreparedRequest | None = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._template.copy()
        request.body = body
        request.headers["Content-Length"] = str(len(body))
        request.headers["Idempotency-Key"] = key
        try:
            # Straight to the transport adapter: a Session would add cookie, hook and redirect
            # handling the status API does not use, at about 40 µs per POST (measured).
            response = self._transport.send(request, timeout=self._timeouts)
        except requests.RequestException as exc:
            self._count_failure()
            return _Transient(_describe(exc))
        code = response.status_code
        if 200 <= code < 300:
            return _DELIVERED
        self._count_failure()
        if code == 429 or code >= 500:
            return _Transient(f"HTTP {code}", _retry_after(response.headers))
        if 400 <= code < 500:
            log.warning(
                "status API refused update %s for job %s: HTTP %d %s",
                key,
                job_id,
                code,
                _excerpt(response.text),
            )
            return _REFUSED
        # A redirect or other surprise means a misconfigured URL: keep the update (outbox,
        # then `accepting()` turns False) rather than lose it.
        return _Transient(f"unexpected HTTP {code}")

    def _count_failure(self) -> None:
        with self._lock:
            self._delivery_failures += 1

    def delivery_failures(self) -> int:
        with self._lock:
            return self._delivery_failures

    # -- outage bookkeeping --------------------------------------------------------------------

    def _defer_replay(self, retry_after: float | None) -> None:
        """Have the replayer's first probe wait out the Retry-After a lane was given."""
        if retry_after is None:
            wait = full_jitter(self._backoff_base, 1, self._probe_cap)
        else:
            wait = min(retry_after, self._probe_cap)
        with self._lock:
            self._replay_not_before = max(self._replay_not_before, time.monotonic() + wait)

    def _enter_outage(self, reason: str) -> None:
        with self._lock:
            if self._outage:
                return
            self._outage = True
        log.warning(
            "status API unavailable (%s); keeping updates in the outbox (%d stored)",
            reason,
            self._outbox.count() + 1,
        )

    def _leave_outage(self) -> None:
        with self._lock:
            if not self._outage:
                return
            self._outage = False
        log.info("status API reachable again; outbox drained (%d left)", self._outbox.count())


def _headers(token: str | None) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _encode(update: StatusUpdate) -> bytes:
    """The body, encoded once; it travels as these bytes to the API or the outbox."""
    body = update.to_json()
    # orjson writes NaN and ±Infinity as null, silently; say so rather than refuse the update
    # (losing a status would be worse than a null in a result).
    if _has_non_finite([update.result, update.duration_ms]):
        log.warning(
            "status update for job %s has non-finite numbers (NaN, Infinity); sent as null",
            update.job_id,
        )
    try:
        return orjson.dumps(body)
    except TypeError as exc:
        raise ValueError(f"status update for job {update.job_id} is not JSON: {exc}") from exc


def _has_non_finite(value: Any) -> bool:
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return True
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def _call(on_handled: OnHandled | None, job_id: str) -> None:
    if on_handled is None:
        return
    try:
        on_handled()
    except Exception:
        # The caller's bug must not stop this lane from posting other jobs' updates.
        log.exception("on_handled callback for job %s failed", job_id)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _describe(exc: requests.RequestException) -> str:
    # requests' messages name the URL and the cause, never the headers.
    return _excerpt(f"{type(exc).__name__}: {exc}", 200)


def _excerpt(text: str, limit: int = _BODY_EXCERPT) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= limit else one_line[:limit] + "…"
