"""Posts job status updates to the status API in order per job; a durable outbox covers outages."""

import asyncio
import collections
import concurrent.futures
import email.utils
import logging
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from python_worker.adapters.backoff import full_jitter
from python_worker.adapters.http.headers import JSON, authorization
from python_worker.adapters.http.transport import KeepAlivePool, request_head
from python_worker.adapters.sqlite.outbox import Outbox, OutboxUnavailable
from python_worker.adapters.wire import encode_status, idempotency_key
from python_worker.application.ports import OnHandled, StatusReporter, StatusUpdate

log = logging.getLogger(__name__)

_BODY_EXCERPT = 500
_CLOSE_SECONDS = 10.0
"""Longest `close` waits for the event loop to put away what is left (one outbox write)."""


@dataclass(frozen=True, slots=True)
class _Pending:
    job_id: str
    idempotency_key: str
    body: bytes
    on_handled: OnHandled | None


@dataclass(frozen=True, slots=True, eq=False)
class _Stored:
    """An update the replayer posts: an outbox row (`seq`), or one held in memory (no seq)."""

    seq: int | None
    pending: _Pending


@dataclass(frozen=True, slots=True)
class _Transient:
    """The API could not take the update now; worth trying again later."""

    reason: str
    retry_after: float | None = None


_DELIVERED = "delivered"
_REFUSED = "refused"  # a 4xx: logged, never retried
_Outcome = str | _Transient


class _Chain:
    """One job's updates not yet handled, oldest first, and the task that posts them in turn."""

    __slots__ = ("items", "task")

    def __init__(self, first: _Pending) -> None:
        self.items = [first]  # rarely more than two: a list is a tenth of a deque's size
        self.task: asyncio.Task[None] | None = None


class HttpStatusReporter(StatusReporter):
    """Posts each update to the status API; keeps it in a local SQLite outbox while it is down.

    One event loop thread carries every request, up to `max_in_flight` at once over kept-alive
    connections: a status API 10 ms away costs waiting, not threads, so throughput follows the
    CPU and the API's capacity instead of `threads / latency`. Job threads hand updates over in
    `report` and move on; the loop is woken once per batch of them.

    Ordering. Each job's updates form a chain posted one after another (`running` reaches the
    API before the final status); different jobs' chains run side by side.

    Failures. A chain retries a connection error, a timeout, a 5xx or a 429 a few times with
    jittered exponential backoff (honouring a short Retry-After), then stores the update in the
    outbox. A 4xx other than 429 is logged with the API's answer and dropped: sending the same
    body again would get the same answer.

    Outage mode. While anything is stored, new updates are stored at once instead of posted:
    a dead API then costs one durable append per batch of updates instead of a timeout each,
    and a job's later update can never overtake an earlier one waiting in the outbox. The
    replayer drains the outbox oldest first (also rows a previous process left behind): it
    probes with a single row, with backoff, until the API answers, then posts batches, one
    job's rows in order.

    A full or failing disk. Updates to store wait in memory, in order, and the outbox write
    is retried every `store_retry` seconds; meanwhile `pause_reason` says why, so the worker
    takes no new jobs, and the replayer may deliver them straight from memory once the API
    answers. An update is never dropped: it is handled (and its message acknowledged) only
    once delivered, refused for good, or written.

    Why order needs no locks: every chain, the replayer and every outbox operation run on the
    one event loop thread, and a job's update joins the outbox (or the in-memory queue in
    front of it) only after every earlier update of that job has been delivered or joined it
    before. The outbox is written on the loop thread too: an outage batches updates, so its
    fsyncs are few, and a store that cannot keep up only makes the loop, not a job, wait.

    The bearer token is a secret: it lives only in the prepared request's headers, never in a
    log line, a repr or an exception message.
    """

    def __init__(
        self,
        url: str,
        outbox_dir: str | Path,
        *,
        token: str | None = None,
        max_in_flight: int = 450,
        connect_timeout: float = 3.05,
        read_timeout: float = 10.0,
        max_attempts: int = 3,
        backoff_base: float = 0.2,
        backoff_cap: float = 2.0,
        probe_cap: float = 30.0,
        outbox_max_items: int = 100_000,
        replay_batch: int = 256,
        store_retry: float = 1.0,
        outbox: Outbox | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """Start the event loop thread and the replayer.

        `url` is the full status endpoint (STATUS_UPDATE_URL). `max_in_flight` bounds requests
        in flight (and connections to the API). `max_attempts` posts per update before it goes
        to the outbox; waits between them are jittered, at most `backoff_cap` seconds (a longer
        Retry-After sends the update to the outbox, where the replayer waits it out).
        `probe_cap` caps the replayer's wait between probes of a dead API. `outbox` overrides
        the one opened in `outbox_dir`. Requests go straight to the API (no proxy, no .netrc):
        the transport is built for this one endpoint. `ssl_context` verifies an https API
        (its CA bundle and the client certificate for mutual TLS); by default the system's
        trust store.
        """
        if max_in_flight < 1 or max_attempts < 1:
            raise ValueError("max_in_flight and max_attempts must be at least 1")
        self._max_in_flight = max_in_flight
        self._timeouts = (connect_timeout, read_timeout)
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._probe_cap = probe_cap
        self._replay_batch = replay_batch
        self._store_retry = store_retry
        # Prepared once, as requests prepares any request (URL and headers checked), and
        # written out once: each POST adds its idempotency key, length and body to these bytes
        # and reads the answer without building requests' objects (a PreparedRequest copy and
        # a Response cost a third of a POST's CPU, measured with py-spy).
        template = requests.Request(
            "POST", url, data=b"{}", headers={**JSON, **authorization(token)}
        ).prepare()
        del template.headers["Content-Length"]
        self._url = template.url or url
        self._head = request_head(template)
        self._outbox = outbox if outbox is not None else Outbox(outbox_dir, outbox_max_items)
        self._max_items = self._outbox.max_items

        # Shared with job threads and `flush`, under `_progress`'s lock.
        self._progress = threading.Condition()
        self._intake: collections.deque[_Pending] = collections.deque()
        self._wake_scheduled = False
        self._unhandled = 0  # reported, not yet delivered, refused or stored
        self._flush_waiters = 0
        self._closed = False

        # The event loop's own; other threads only read them (reads of a reference are atomic).
        self._chains: dict[str, _Chain] = {}
        self._spill: collections.deque[_Pending] = collections.deque()  # to store, in order
        self._borrowed = 0  # spilled updates the replayer is posting from memory right now
        self._undeleted: set[int] = set()  # outbox rows delivered, not yet deleted
        self._store_problem: str | None = None
        self._store_retry_due = False
        self._flush_scheduled = False
        self._closing = False
        self._outage = False
        self._delivery_failures = 0
        self._replay_not_before = 0.0  # loop time; set by a chain that gave up on the API

        self._loop = asyncio.new_event_loop()
        self._pool = KeepAlivePool(max_in_flight, ssl_context)
        self._rows_added = asyncio.Event()
        self._kick = asyncio.Event()
        left_over = self._outbox.count()
        if left_over:
            self._outage = True
            log.warning(
                "status outbox holds %d updates from an earlier run; replaying them first",
                left_over,
            )
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="status-http", daemon=True
        )
        self._thread.start()
        self._replayer: asyncio.Task[None] = asyncio.run_coroutine_threadsafe(
            self._start_replayer(), self._loop
        ).result()

    # -- the port ------------------------------------------------------------------------------

    def report(self, update: StatusUpdate, on_handled: OnHandled | None = None) -> None:
        key, body = idempotency_key(update), encode_status(update)
        pending = _Pending(update.job_id, key, body, on_handled)
        with self._progress:
            if self._closed:
                raise RuntimeError("status reporter is closed")
            self._intake.append(pending)
            self._unhandled += 1
            if self._wake_scheduled:
                return
            self._wake_scheduled = True
        # One wake-up of the loop per batch of updates, not per update.
        self._loop.call_soon_threadsafe(self._take_intake)

    def pause_reason(self) -> str | None:
        problem = self._store_problem
        if problem is not None:
            return problem
        depth = self._outbox.count() + len(self._spill) + self._borrowed
        if depth >= self._max_items:
            return (
                f"status outbox is full ({depth} updates; STATUS_OUTBOX_MAX_ITEMS="
                f"{self._max_items})"
            )
        return None

    def backlog(self) -> int:
        with self._progress:
            return self._unhandled + self._outbox.count()

    def delivery_failures(self) -> int:
        return self._delivery_failures

    def flush(self, timeout: float) -> bool:
        """Wait until every update is handled, then try to empty the outbox in the time left.

        True once every update is handled (delivered, refused, or stored in the outbox): that
        is the port's contract, so a dead API still lets a shutdown finish in time.
        """
        deadline = time.monotonic() + timeout
        if not self._wait(lambda: self._unhandled == 0, timeout):
            return False
        if self._outbox.count():
            self._loop.call_soon_threadsafe(self._kick.set)
            self._wait(lambda: self._outbox.count() == 0, max(0.0, deadline - time.monotonic()))
        return True

    def close(self) -> None:
        """Stop the loop; whatever was not delivered yet goes to the outbox, not the wire."""
        with self._progress:
            if self._closed:
                return
            self._closed = True
        shutdown = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        try:
            shutdown.result(timeout=_CLOSE_SECONDS)
        except concurrent.futures.TimeoutError:
            log.error("status reporter did not finish closing within %.0f s", _CLOSE_SECONDS)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=_CLOSE_SECONDS)
        if not self._thread.is_alive():
            self._loop.close()
        left = self._outbox.count()
        self._outbox.close()
        if left:
            log.warning("status reporter closed with %d updates kept in the outbox", left)

    def __repr__(self) -> str:
        return f"HttpStatusReporter(url={self._url!r}, max_in_flight={self._max_in_flight})"

    # -- chains (event loop) -------------------------------------------------------------------

    def _take_intake(self) -> None:
        with self._progress:
            taken = list(self._intake)
            self._intake.clear()
            self._wake_scheduled = False
        for pending in taken:
            chain = self._chains.get(pending.job_id)
            if chain is not None:
                chain.items.append(pending)
                continue
            chain = self._chains[pending.job_id] = _Chain(pending)
            if not self._closing:
                chain.task = self._loop.create_task(self._run_chain(pending.job_id, chain))

    async def _run_chain(self, job_id: str, chain: _Chain) -> None:
        try:
            while chain.items:
                await self._deliver_or_store(chain.items[0])
                del chain.items[0]
        finally:
            if not chain.items:  # a cancelled chain's updates are put away by `_shutdown`
                del self._chains[job_id]

    async def _deliver_or_store(self, pending: _Pending) -> None:
        """Post `pending` (retrying what may succeed later) or hand it to the outbox."""
        # See the class docstring for why this check keeps per-job order.
        if self._stored_backlog():
            self._store(pending)
            return
        reason = ""
        retry_after: float | None = None
        for attempt in range(1, self._max_attempts + 1):
            outcome = await self._post(pending.job_id, pending.idempotency_key, pending.body)
            if not isinstance(outcome, _Transient):
                self._handled([pending])
                return
            reason, retry_after = outcome.reason, outcome.retry_after
            if attempt == self._max_attempts:
                break
            wait = outcome.retry_after
            if wait is None:
                wait = full_jitter(self._backoff_base, attempt, self._backoff_cap)
            # A long Retry-After is the replayer's to honour. Once another chain has declared
            # an outage, more attempts would only cost time.
            if wait > self._backoff_cap or self._stored_backlog():
                break
            await asyncio.sleep(wait)
            if self._stored_backlog():
                break
        self._enter_outage(reason)
        self._defer_replay(retry_after)
        self._store(pending)

    def _handled(self, done: Sequence[_Pending]) -> None:
        for pending in done:
            if pending.on_handled is None:
                continue
            try:
                pending.on_handled()
            except Exception:
                # The caller's bug must not stop the loop from posting other jobs' updates.
                log.exception("on_handled callback for job %s failed", pending.job_id)
        with self._progress:
            self._unhandled -= len(done)
            if self._flush_waiters:
                self._progress.notify_all()

    # -- the outbox (event loop) ---------------------------------------------------------------

    def _stored_backlog(self) -> int:
        return self._outbox.count() + len(self._spill) + self._borrowed

    def _store(self, pending: _Pending) -> None:
        """Queue `pending` for the outbox; it is written with whatever else queued meanwhile."""
        self._spill.append(pending)
        if not self._flush_scheduled and not self._store_retry_due:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush_spill)
        if self._store_problem is not None:
            self._rows_added.set()  # the replayer may deliver it from memory

    def _flush_spill(self) -> None:
        self._flush_scheduled = False
        if self._borrowed:
            return  # the replayer holds some: their order comes first; it flushes after
        if not self._spill:
            self._nothing_left_to_store()
            return
        batch = list(self._spill)
        try:
            self._outbox.append_many(
                [(pending.job_id, pending.idempotency_key, pending.body) for pending in batch]
            )
        except OutboxUnavailable as exc:
            if self._store_problem is None:
                log.error(
                    "%s; keeping %d status update(s) in memory and taking no new jobs until it "
                    "can (retrying every %.0f s)",
                    exc,
                    len(batch),
                    self._store_retry,
                )
            self._store_problem = f"{exc}"
            self._store_retry_due = True
            self._loop.call_later(self._store_retry, self._retry_store)
            self._rows_added.set()
            return
        for _ in batch:
            self._spill.popleft()
        if self._store_problem is not None:
            log.info("status outbox is writable again; %d update(s) stored", len(batch))
            self._store_problem = None
        self._handled(batch)
        self._rows_added.set()

    def _retry_store(self) -> None:
        self._store_retry_due = False
        self._flush_spill()

    def _nothing_left_to_store(self) -> None:
        """The replayer delivered what the disk would not take: nothing waits for it now."""
        if self._store_problem is not None:
            self._store_problem = None
            log.info(
                "no status update waits for the outbox any more (delivered to the API while "
                "the outbox could not be written); the next one to store tries it again"
            )

    # -- replay (event loop) -------------------------------------------------------------------

    async def _start_replayer(self) -> "asyncio.Task[None]":
        return asyncio.get_running_loop().create_task(self._replay_forever())

    async def _replay_forever(self) -> None:
        failures = 0
        while True:
            # Cleared before looking, so an append between the look and the wait still wakes us.
            self._rows_added.clear()
            if not self._stored_backlog():
                self._leave_outage()
                await self._rows_added.wait()
                continue
            # A chain that just gave up has seen the API fail: don't hammer it at once.
            hold = self._replay_not_before - self._loop.time()
            if hold > 0 and not failures:
                failures = 1
                await self._wait_for_kick(hold)
                continue
            # While the API is away, probe it with the oldest update alone, not a whole batch.
            batch = self._replay_candidates(1 if failures else self._replay_batch)
            if not batch:
                # What is stored is being written, or delivered and waiting to be deleted.
                self._delete_delivered()
                await self._wait_for_rows(self._store_retry)
                continue
            handled: set[_Stored] = set()
            try:
                failure = await self._replay(batch, handled)
            finally:
                self._put_away_replayed(batch, handled)
            if failure is None:
                failures = 0
                continue
            failures += 1
            self._enter_outage(failure.reason)
            if failure.retry_after is not None:
                wait = min(failure.retry_after, self._probe_cap)
            else:
                wait = full_jitter(self._backoff_base, failures, self._probe_cap)
            await self._wait_for_kick(wait)

    def _replay_candidates(self, limit: int) -> list[_Stored]:
        """The oldest stored updates: outbox rows first, then (disk failing) those in memory."""
        if self._outbox.count() > len(self._undeleted):
            try:
                rows = self._outbox.peek(limit + len(self._undeleted))
            except OutboxUnavailable as exc:
                log.warning("could not read the status outbox: %s", exc)
                rows = []
            fresh = [row for row in rows if row.seq not in self._undeleted][:limit]
            if fresh:
                return [
                    _Stored(row.seq, _Pending(row.job_id, row.idempotency_key, row.body, None))
                    for row in fresh
                ]
        if self._store_problem is not None and self._spill and not self._borrowed:
            taken = [self._spill.popleft() for _ in range(min(limit, len(self._spill)))]
            self._borrowed = len(taken)
            return [_Stored(None, pending) for pending in taken]
        return []

    async def _replay(self, batch: Sequence[_Stored], handled: set[_Stored]) -> _Transient | None:
        """Post `batch`, one job's updates in order; adds what was handled to `handled`."""
        groups: dict[str, list[_Stored]] = {}
        for stored in batch:
            groups.setdefault(stored.pending.job_id, []).append(stored)
        failures = await asyncio.gather(
            *(self._replay_group(group, handled) for group in groups.values())
        )
        return next((failure for failure in failures if failure is not None), None)

    async def _replay_group(
        self, group: Sequence[_Stored], handled: set[_Stored]
    ) -> _Transient | None:
        for stored in group:
            pending = stored.pending
            outcome = await self._post(pending.job_id, pending.idempotency_key, pending.body)
            if isinstance(outcome, _Transient):
                # Later updates of this group belong to the same job: they must wait.
                return outcome
            handled.add(stored)
        return None

    def _put_away_replayed(self, batch: Sequence[_Stored], handled: set[_Stored]) -> None:
        delivered_rows = [s.seq for s in batch if s.seq is not None and s in handled]
        if delivered_rows:
            self._undeleted.update(delivered_rows)
            self._delete_delivered()
        held = [stored for stored in batch if stored.seq is None]
        if held:
            # Back at the head, in their order: they are older than anything spilled since.
            self._spill.extendleft(reversed([s.pending for s in held if s not in handled]))
            self._borrowed = 0
            self._handled([s.pending for s in held if s in handled])
            if not self._spill:
                self._nothing_left_to_store()
            elif not self._flush_scheduled and not self._store_retry_due:
                self._flush_scheduled = True
                self._loop.call_soon(self._flush_spill)
        with self._progress:
            if self._flush_waiters:
                self._progress.notify_all()

    def _delete_delivered(self) -> None:
        if not self._undeleted:
            return
        try:
            self._outbox.delete(*self._undeleted)
        except OutboxUnavailable as exc:
            # Delivered already: sent again later at worst, with the same idempotency key.
            log.warning("could not delete %d delivered outbox rows: %s", len(self._undeleted), exc)
            return
        self._undeleted.clear()

    async def _wait_for_kick(self, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                await self._kick.wait()
        except TimeoutError:
            pass
        # Cleared after the wait, so a flush that kicked just before it is not missed.
        self._kick.clear()

    async def _wait_for_rows(self, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                await self._rows_added.wait()
        except TimeoutError:
            pass

    # -- shutting down (event loop) ------------------------------------------------------------

    async def _shutdown(self) -> None:
        self._closing = True
        self._take_intake()
        tasks = [chain.task for chain in self._chains.values() if chain.task is not None]
        tasks.append(self._replayer)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Chains' updates are newer than anything of their job already spilled: append them.
        for chain in self._chains.values():
            self._spill.extend(chain.items)
        self._chains.clear()
        self._store_retry_due = False
        self._flush_spill()
        if self._spill:
            log.error(
                "%d status update(s) could be neither delivered nor stored; their messages were "
                "not acknowledged, so the broker redelivers them",
                len(self._spill),
            )
        self._pool.close()

    # -- HTTP ----------------------------------------------------------------------------------

    async def _post(self, job_id: str, key: str, body: bytes) -> _Outcome:
        # The key is printable ASCII: wire.idempotency_key percent-encodes the rest.
        message = b"%bIdempotency-Key: %b\r\nContent-Length: %d\r\n\r\n%b" % (
            self._head,
            key.encode("ascii"),
            len(body),
            body,
        )
        try:
            answer = await self._pool.exchange(self._url, message, self._timeouts)
        except requests.RequestException as exc:
            self._delivery_failures += 1
            return _Transient(_describe(exc))
        code = answer.status
        if 200 <= code < 300:
            return _DELIVERED
        self._delivery_failures += 1
        if code == 429 or code >= 500:
            return _Transient(f"HTTP {code}", _retry_after(answer.header("Retry-After")))
        if 400 <= code < 500:
            log.warning(
                "status API refused update %s for job %s: HTTP %d %s",
                key,
                job_id,
                code,
                _excerpt(answer.text()),
            )
            return _REFUSED
        # A redirect or other surprise means a misconfigured URL: keep the update (outbox,
        # then `pause_reason()` says so) rather than lose it.
        return _Transient(f"unexpected HTTP {code}")

    # -- outage bookkeeping (event loop) -------------------------------------------------------

    def _defer_replay(self, retry_after: float | None) -> None:
        """Have the replayer's first probe wait out the Retry-After a chain was given."""
        if retry_after is None:
            wait = full_jitter(self._backoff_base, 1, self._probe_cap)
        else:
            wait = min(retry_after, self._probe_cap)
        self._replay_not_before = max(self._replay_not_before, self._loop.time() + wait)

    def _enter_outage(self, reason: str) -> None:
        if self._outage:
            return
        self._outage = True
        log.warning(
            "status API unavailable (%s); keeping updates in the outbox (%d stored)",
            reason,
            self._stored_backlog() + 1,
        )

    def _leave_outage(self) -> None:
        if not self._outage:
            return
        self._outage = False
        log.info("status API reachable again; outbox drained (%d left)", self._outbox.count())

    # -- waiting (other threads) ---------------------------------------------------------------

    def _wait(self, condition: Any, timeout: float) -> bool:
        with self._progress:
            self._flush_waiters += 1
            try:
                return bool(self._progress.wait_for(condition, timeout))
            finally:
                self._flush_waiters -= 1


def _retry_after(value: str | None) -> float | None:
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
