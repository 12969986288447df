"""The outbox dispatcher: claims due rows with a lease, delivers them, records the result.

It knows no peer: the wiring (``server.py``) registers a handler per job kind — Slack's from
``slack.delivery``, the executor webhook's from ``outbox.webhook`` — and, optionally, a
planning hook (``Dispatcher.plan``: Slack's digests). A kind without a handler is dead.

- A row is claimed for ``LEASE`` seconds; if the process dies mid-delivery the lease runs
  out and another process (or this one, restarted) picks it up again.
- Failures retry with backoff: the first retry within 1 s, then doubling, capped at 15 s;
  a handler may ask for a precise delay (Slack's ``Retry-After``).
- A handler may ``Defer`` (e.g. an update whose message is not posted yet): no attempt is
  counted.
- Rows of one request are delivered in order; different requests in parallel.
- A handler may return a ``Record``: a write that completes the delivery (e.g. where Slack
  put a message, with its evidence event). It runs in the transaction that finishes the
  row, together with other rows' results, so a delivery costs no write of its own; it is
  committed before the next row of the same request is delivered.
- Running (``start``), deliveries overlap: rows are claimed whenever fewer than ``workers``
  are under way, not once the previous claim is all delivered, so a Slack call's latency
  (~100 ms) does not cap the rate at ``workers`` calls per latency per claim. A row of a
  request that still has a row under way (or a result not yet recorded) waits behind it,
  and reads afresh once that is committed. ``run_once`` (tests) is one claim, delivered.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import or_, select, update

from signoff.logs import log_context
from signoff.store import fast
from signoff.store.db import is_retryable
from signoff.store.repo import Repo
from signoff.store.tables import OutboxRow
from signoff.usecases.ports import Context

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=10)
FINISH_EVERY = 0.02  # seconds: delivery results are recorded together at most this late
FINISH_MAX = 64  # … or as soon as this many are waiting
BACKOFF = [0.5, 1, 2, 4, 8, 15]
DEFER = 0.25  # seconds: a deferred row's wait when its handler names none
MIN_WAIT = 0.05  # seconds: the least a row waits behind one that did not go through
_DONE = {
    d: "UPDATE outbox SET state = 'done', done_at = {at}, last_error = NULL, claimed_by = NULL, "
    "claimed_until = NULL, in_flight = {no} WHERE id = {id}".format(
        **{k: (f":{k}" if d == "sqlite" else f"%({k})s") for k in ("at", "no", "id")}
    )
    for d in ("sqlite", "postgresql")
}


class Retry(Exception):
    """Deliver again later; ``after`` seconds when the peer said so (Retry-After)."""

    def __init__(self, reason: str, after: float | None = None):
        super().__init__(reason)
        self.after = after


class Defer(Exception):
    """Not deliverable yet (depends on another row); try again soon, no attempt counted.
    ``alone``: only this row waits (it is paced: its peer's limit for that call, not the
    request's order, holds it back); the request's later rows may go meanwhile."""

    def __init__(self, reason: str, after: float = DEFER, *, alone: bool = False):
        super().__init__(reason)
        self.after = after
        self.alone = alone


class GiveUp(Exception):
    """Delivery can never succeed (e.g. a grant that expired): mark the row dead."""


@dataclass(frozen=True)
class Record:
    """What a handler returns when its delivery still has to be written down: ``write``
    runs (in a savepoint) in the transaction that marks the row done; it must be safe to
    run again. ``key`` orders the writes of one transaction (row locks in a stable order)."""

    write: Callable[[Any], None]  # given the transaction's Repository
    key: Any = 0


class Claim:
    """The rows one pass claimed, shared by their jobs: a handler may read for all of them
    at once and keep it in ``cache`` (under ``lock``; groups are delivered in parallel).
    Nothing a handler returns as a ``Record`` is committed before the request's next row
    runs, so such a read stays valid for a request until one of its rows writes directly."""

    def __init__(self, worker_id: str = "") -> None:
        self.worker_id = worker_id  # who holds the rows (their ``claimed_by``)
        self.jobs: list[Job] = []
        self.cache: dict[str, Any] = {}
        self.lock = threading.Lock()


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    request_id: str | None
    payload: dict[str, Any]
    attempts: int
    was_in_flight: bool  # claimed before without a recorded result: a crash mid-delivery
    claim: Claim | None = field(default=None, compare=False, repr=False)
    created_at: datetime | None = None  # when the side effect was committed


Handler = Callable[[Job], "Record | None"]


class Result(NamedTuple):
    """How one delivery went: ``outcome`` is done, defer, paced (a defer of this row
    alone), retry or dead."""

    job: Job
    outcome: str
    error: str | None = None
    after: float | None = None  # seconds before the next attempt, when the peer said so
    record: Record | None = None


def _drain(q: queue.SimpleQueue) -> list:
    out = []
    while True:
        try:
            out.append(q.get_nowait())
        except queue.Empty:
            return out


def backoff(attempts: int) -> float:
    return BACKOFF[min(attempts, len(BACKOFF) - 1)]


def next_attempt_in(result: Result, record_failed: bool = False) -> float:
    """Seconds until a row that did not go through is due again."""
    if record_failed:  # delivered, not recorded: soon, looking for the delivery first
        return backoff(result.job.attempts)
    if result.outcome in ("defer", "paced"):
        return result.after or DEFER
    delay = result.after if result.after is not None else backoff(result.job.attempts)
    return min(max(delay, 0), 60)


class _Group:
    """The rows of one request this process holds while running: delivered one at a time,
    in order; the next waits until the last one's result is recorded (``pending``)."""

    __slots__ = ("blocked_by", "blocked_until", "jobs", "pending", "running")

    def __init__(self) -> None:
        self.jobs: deque[Job] = deque()
        self.running = False  # a pool thread is delivering them
        self.pending = 0  # results handed to the finisher, not yet committed
        # The row that did not go through (deferred, to retry, or its record failed) and
        # when it is due again (monotonic): rows of the request *after* it wait until then.
        # A row before it (one a crashed process left leased, say) goes: order is by id.
        self.blocked_by: int | None = None
        self.blocked_until = 0.0

    def wait_for(self, job: Job, now: float) -> float | None:
        """Seconds ``job`` must wait behind the row that did not go through, or None."""
        if self.blocked_by is None or job.id <= self.blocked_by:
            return None
        if now >= self.blocked_until + LEASE.total_seconds():
            # that row is long due and was not seen again here: another process took it
            self.blocked_by = None
            return None
        return max(self.blocked_until - now, MIN_WAIT)

    def went(self, result: Result, now: float, record_failed: bool = False) -> None:
        """Note how ``result``'s delivery went."""
        job = result.job
        if result.outcome == "paced" and not record_failed:
            return  # held back by its peer's limit alone: the rows after it need not wait
        if result.outcome in ("done", "dead") and not record_failed:
            if job.id == self.blocked_by:
                self.blocked_by = None
        elif self.blocked_by is None or job.id <= self.blocked_by:
            self.blocked_by = job.id
            self.blocked_until = now + next_attempt_in(result, record_failed)


class Dispatcher:
    # Deliveries wait on Slack (tens of milliseconds a call against the real one), not on
    # the CPU: enough of them in flight is what makes hundreds of calls a second possible.
    def __init__(self, ctx: Context, handlers: dict[str, Handler], *, workers: int = 128, batch: int = 128):
        self.ctx = ctx
        self.handlers = handlers
        # Called with each claim before its rows are delivered; may take some of them over
        # (finishing them itself, in its own transaction) and returns their ids: e.g. Slack
        # posts merged into one digest message.
        self.plan: Callable[[Claim], set[int]] | None = None
        # (kind, committed at, delivered at) for each row delivered: the lag histogram
        self.on_delivered: Callable[[str, datetime | None, datetime], None] | None = None
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.batch = batch
        self.workers = workers
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="outbox")
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # the running loop's state (see ``_loop``)
        self._lock = threading.Lock()
        self._groups: dict[str, _Group] = {}
        self._active = 0  # rows claimed and not yet finished
        self._done: queue.SimpleQueue = queue.SimpleQueue()  # (key, Result) to record; None: a wake-up

    # ------------------------------------------------------------------ running
    def wake(self) -> None:
        self._wake.set()
        self._done.put(None)

    def start(self, idle_interval: float = 1.0) -> None:
        self._thread = threading.Thread(target=self._loop, args=(idle_interval,), name="outbox-dispatcher", daemon=True)
        self._thread.start()

    def _loop(self, idle_interval: float) -> None:
        """Claim while fewer than ``workers`` rows are under way; record results in batches
        (one transaction for those that finished within FINISH_EVERY of each other)."""
        more = True  # the last claim was full, or we were woken: rows may be due
        buffered: list[tuple[str, Result]] = []
        oldest = 0.0
        last_claim = 0.0
        while True:
            stopping = self._stop.is_set()
            if stopping and not self._active and not buffered:
                return
            if self._wake.is_set():
                self._wake.clear()
                more = True
            free = self.workers - self._active
            if not stopping and free > 0 and (more or time.monotonic() - last_claim >= idle_interval):
                last_claim = time.monotonic()
                try:
                    want = min(self.batch, free)
                    jobs = self._claim(want)
                    more = len(jobs) == want
                    if jobs:
                        self._dispatch(jobs)
                except Exception:  # keep the loop alive; the rows stay owed
                    log.exception("outbox dispatch failed")
                    more = False
            # wait for results or a wake-up (each puts an item in _done)
            free = self.workers - self._active
            if buffered:
                timeout = max(0.0, oldest + FINISH_EVERY - time.monotonic())
            elif more and free > 0 and not stopping:
                timeout = 0.0  # claim again at once
            elif stopping:
                timeout = FINISH_EVERY
            else:
                timeout = max(0.0, last_claim + idle_interval - time.monotonic())
            got = []
            try:
                got.append(self._done.get(timeout=timeout) if timeout > 0 else self._done.get_nowait())
            except queue.Empty:
                pass
            got += _drain(self._done)
            results = [g for g in got if g is not None]
            if results and not buffered:
                oldest = time.monotonic()
            buffered += results
            if buffered and (
                len(buffered) >= FINISH_MAX
                or time.monotonic() - oldest >= FINISH_EVERY
                or len(buffered) >= self._active
            ):
                self._record([r for _k, r in buffered], [k for k, _r in buffered])
                buffered = []

    def _dispatch(self, jobs: list[Job]) -> None:
        """Hand a claim's rows to the pool, each behind its request's rows still under way."""
        deliver = jobs
        if self.plan is not None and jobs[0].claim is not None:
            try:
                taken = self.plan(jobs[0].claim)
            except Exception:  # planning is an optimisation: the rows are delivered as they are
                log.exception("planning the outbox claim failed")
                taken = set()
            if taken:
                deliver = [j for j in jobs if j.id not in taken]
        start = []
        with self._lock:
            held = set(self._groups)
            for job in deliver:
                key = job.request_id or f"#{job.id}"
                group = self._groups.get(key)
                if group is None:
                    group = self._groups[key] = _Group()
                if key in held:
                    # the claim's read predates what the rows under way will record: read afresh
                    job = replace(job, claim=None)
                group.jobs.append(job)
                self._active += 1
                if not group.running and not group.pending:
                    group.running = True
                    start.append((key, group))
        for key, group in start:
            self._start_group(key, group)

    def _start_group(self, key: str, group: _Group) -> None:
        try:
            self.pool.submit(self._run_group, key, group)
        except RuntimeError:  # the pool is shut down (stopping): the rows' lease frees them
            with self._lock:
                group.running = False
                self._drop(key, group)

    def _drop(self, key: str, group: _Group) -> None:
        """Forget a group's queued rows (under ``_lock``): their claim runs out, they are
        delivered again then."""
        self._active -= len(group.jobs)
        group.jobs.clear()
        if not group.running and not group.pending:
            self._groups.pop(key, None)

    def _run_group(self, key: str, group: _Group) -> None:
        held = False  # a row taken off the group and not yet handed on (counted in _active)
        try:
            while True:
                with self._lock:
                    if not group.jobs or group.pending:
                        group.running = False
                        if not group.jobs and not group.pending:
                            self._groups.pop(key, None)
                        return
                    job = group.jobs.popleft()
                    held = True
                # the order marks are this thread's alone: one runner per group at a time
                result = self._attempt(group, job)
                with self._lock:
                    more = bool(group.jobs)
                    if not (result.record is not None and more):
                        group.pending += 1
                        held = False
                if result.record is not None and more:
                    # the request's next row may read what this one records: commit it first
                    failed = self._finish_many([result])
                    if failed:
                        group.went(result, time.monotonic(), record_failed=True)
                    with self._lock:
                        self._active -= 1
                        held = False
                else:
                    self._done.put((key, result))
        except Exception:  # the rows stay claimed until their lease runs out, then go again
            log.exception("outbox delivery failed")
            with self._lock:
                if held:
                    self._active -= 1
                group.running = False
                self._drop(key, group)

    def _record(self, results: list[Result], keys: list[str]) -> None:
        """Record results; then the rows waiting behind them may go."""
        try:
            self._finish_many(results)
        except Exception:  # the rows stay claimed until their lease runs out, then go again
            log.exception("recording outbox results failed")
        start = []
        with self._lock:
            self._active -= len(results)
            for key in keys:
                group = self._groups.get(key)
                if group is None:
                    continue
                group.pending -= 1
                if group.pending:
                    continue
                if group.jobs and not group.running:
                    if self._stop.is_set():
                        self._drop(key, group)
                    else:
                        group.running = True
                        start.append((key, group))
                elif not group.jobs and not group.running:
                    self._groups.pop(key, None)
        for key, group in start:
            self._start_group(key, group)

    def stop(self) -> None:
        """Finish the deliveries under way (no new ones start), then release every row this
        process still holds, so that another replica takes them at once instead of when
        their lease runs out."""
        self._stop.set()
        self.wake()
        if self._thread:
            self._thread.join(timeout=10)
        self.pool.shutdown(wait=True, cancel_futures=True)
        try:
            released = self.release()
        except Exception:
            log.exception("releasing the outbox rows this process holds failed; their lease (%s) frees them", LEASE)
        else:
            if released:
                log.info("released %d outbox row(s) for the other replicas", released)

    def release(self) -> int:
        """Give up the claims of this process on rows not yet delivered (in-flight marks
        stay: a row that may have reached Slack is looked for before it is sent again)."""

        def tx(session) -> int:
            t = OutboxRow.__table__
            return (
                session.execute(
                    update(t)
                    .where(t.c.claimed_by == self.worker_id, t.c.state == "pending")
                    .values(claimed_by=None, claimed_until=None)
                ).rowcount
                or 0
            )

        return self.ctx.store.transaction(tx)

    # ------------------------------------------------------------------ one pass
    def run_once(self) -> int:
        """Claim and deliver what is due now; returns how many rows were handled."""
        jobs = self._claim()
        if not jobs:
            return 0
        deliver = jobs
        if self.plan is not None and jobs[0].claim is not None:
            try:
                taken = self.plan(jobs[0].claim)
            except Exception:  # planning is an optimisation: the rows are delivered as they are
                log.exception("planning the outbox claim failed")
                taken = set()
            if taken:
                deliver = [j for j in jobs if j.id not in taken]
        groups: dict[str | None, list[Job]] = defaultdict(list)
        for job in deliver:
            groups[job.request_id or f"#{job.id}"].append(job)
        # Results are recorded in batches, one transaction for all that finished within a
        # few milliseconds of each other (well inside the lease), not one per row: under
        # load every write transaction queues behind the agents' submissions.
        results: queue.SimpleQueue = queue.SimpleQueue()
        futures = [self.pool.submit(self._deliver_group, group, results) for group in groups.values()]
        pending = set(futures)
        buffered: list[Result] = []
        oldest = 0.0  # when the oldest buffered result arrived
        while pending:
            timeout = FINISH_EVERY if not buffered else max(0.0, oldest + FINISH_EVERY - time.monotonic())
            _done, pending = wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)
            got = _drain(results)
            if got and not buffered:
                oldest = time.monotonic()
            buffered += got
            if buffered and (not pending or len(buffered) >= FINISH_MAX or time.monotonic() - oldest >= FINISH_EVERY):
                self._finish_many(buffered)
                buffered = []
        self._finish_many(buffered + _drain(results))
        for f in futures:
            f.result()
        return len(jobs)

    def _claim(self, limit: int | None = None) -> list[Job]:
        def tx(session) -> list[Job]:
            now = self.ctx.clock()
            t = OutboxRow.__table__
            q = (
                select(t.c.id, t.c.kind, t.c.request_id, t.c.payload, t.c.attempts, t.c.in_flight, t.c.created_at)
                .where(
                    t.c.state == "pending",
                    t.c.next_attempt_at <= now,
                    or_(t.c.claimed_until.is_(None), t.c.claimed_until < now),
                )
                .order_by(t.c.id)
                .limit(limit or self.batch)
            )
            if session.bind.dialect.name == "postgresql":
                q = q.with_for_update(skip_locked=True)
            rows = session.execute(q).all()
            if not rows:
                return []
            # one UPDATE for the batch (the rows are locked: BEGIN IMMEDIATE / FOR UPDATE)
            session.execute(
                update(t)
                .where(t.c.id.in_([r.id for r in rows]))
                .values(claimed_by=self.worker_id, claimed_until=now + LEASE, in_flight=True)
            )
            claim = Claim(self.worker_id)
            claim.jobs = [
                Job(r.id, r.kind, r.request_id, dict(r.payload), r.attempts, bool(r.in_flight), claim, r.created_at)
                for r in rows
            ]
            return claim.jobs

        return self.ctx.store.transaction(tx)

    def _deliver_group(self, jobs: list[Job], results: queue.SimpleQueue | None = None) -> None:
        """Deliver one request's rows in order; results go to ``results`` (recorded by the
        caller) or, without it, are recorded at once."""
        group = _Group()  # the same order rule as the running loop's
        for i, job in enumerate(jobs):
            result = self._attempt(group, job)
            if results is None or (result.record is not None and i + 1 < len(jobs)):
                # the request's next row may read what this one records: commit it first
                if self._finish_many([result]):
                    group.went(result, time.monotonic(), record_failed=True)
            else:
                results.put(result)

    def _attempt(self, group: _Group, job: Job) -> Result:
        """Deliver ``job`` (noting how it went on its ``group``), or defer it: when stopping,
        for another process (or this one, restarted); or, to keep its request's order,
        until the row before it that did not go through is due again."""
        if self._stop.is_set():
            return Result(job, "defer", after=0.1)
        wait = group.wait_for(job, time.monotonic())
        if wait is not None:
            return Result(job, "defer", after=wait)
        result = Result(job, *self._deliver(job))
        group.went(result, time.monotonic())
        return result

    def _deliver(self, job: Job) -> tuple[str, str | None, float | None, Record | None]:
        handler = self.handlers.get(job.kind)
        if handler is None:
            return "dead", f"no handler for {job.kind!r}", None, None
        with log_context(request_id=job.request_id):
            return self._run(handler, job)

    def _run(self, handler, job: Job) -> tuple[str, str | None, float | None, Record | None]:
        try:
            record = handler(job)
            if self.on_delivered is not None:
                self.on_delivered(job.kind, job.created_at, self.ctx.clock())
            return "done", None, None, record if isinstance(record, Record) else None
        except Defer as d:
            return ("paced" if d.alone else "defer"), str(d), d.after, None
        except Retry as r:
            log.warning("outbox %s #%s failed (attempt %s): %s", job.kind, job.id, job.attempts + 1, r)
            return "retry", str(r), r.after, None
        except GiveUp as g:
            log.error("outbox %s #%s given up: %s", job.kind, job.id, g)
            return "dead", str(g), None, None
        except Exception as exc:  # an unexpected error must not lose the row
            log.exception("outbox %s #%s raised", job.kind, job.id)
            return "retry", f"{type(exc).__name__}: {exc}", None, None

    def _finish_many(self, results: list[Result]) -> set[int]:
        """Record delivery results (and the handlers' ``Record`` writes), all in one
        transaction. Returns the ids of rows whose ``Record`` write failed: they stay owed,
        marked in flight, so the next attempt first looks for what the last one did."""
        if not results:
            return set()

        def tx(session) -> set[int]:
            now = self.ctx.clock()
            repo = Repo(session)  # what a Record writes through (usecases.ports.Repository)
            failed: dict[int, str] = {}
            writes = sorted(
                ((r.record.key, i) for i, r in enumerate(results) if r.outcome == "done" and r.record is not None),
                key=lambda kv: (str(kv[0]), kv[1]),
            )
            if len(writes) > 1:
                # All in one savepoint (two statements, not two per write); only if one of
                # them fails is each run again in its own, to find which (they are safe to
                # run again).
                try:
                    with session.begin_nested():
                        for _key, i in writes:
                            results[i].record.write(repo)
                    writes = []
                except Exception as exc:
                    if is_retryable(exc):
                        raise
            for _key, i in writes:
                job, record = results[i].job, results[i].record
                try:
                    with session.begin_nested():
                        record.write(repo)
                except Exception as exc:
                    if is_retryable(exc):
                        raise  # a lost race: the whole transaction runs again
                    log.exception("outbox %s #%s: recording the delivery failed", job.kind, job.id)
                    failed[job.id] = f"recording failed: {type(exc).__name__}: {exc}"
            done = [job.id for job, outcome, _e, _a, _r in results if outcome == "done" and job.id not in failed]
            if done:  # one prepared UPDATE, executemany (the usual outcome, hundreds a second)
                at = fast.bind(session, OutboxRow.__table__.c.done_at, now)
                no = fast.bind(session, OutboxRow.__table__.c.in_flight, False)
                fast.execute_many(session, _DONE, [{"id": i, "at": at, "no": no} for i in done])
            for result in results:
                job, outcome, error = result.job, result.outcome, result.error
                if outcome == "done" and job.id not in failed:
                    continue
                values: dict[str, Any] = {"claimed_by": None, "claimed_until": None, "in_flight": False}
                due = now + timedelta(seconds=next_attempt_in(result, job.id in failed))
                if job.id in failed:
                    # delivered but not recorded: retry soon, looking for the delivery first
                    values.update(
                        attempts=job.attempts + 1, last_error=failed[job.id], in_flight=True, next_attempt_at=due
                    )
                elif outcome == "dead":
                    values.update(state="dead", done_at=now, last_error=error)
                elif outcome in ("defer", "paced"):
                    values.update(next_attempt_at=due)
                else:
                    values.update(attempts=job.attempts + 1, last_error=error, next_attempt_at=due)
                session.execute(update(OutboxRow).where(OutboxRow.id == job.id).values(**values))
            return set(failed)

        failed = self.ctx.store.transaction(tx)
        for result in results:
            if result.outcome in ("defer", "paced", "retry") or result.job.id in failed:
                timer = threading.Timer(min(next_attempt_in(result, result.job.id in failed), 15), self.wake)
                timer.daemon = True  # a pending wake-up must not hold a stopping process
                timer.start()
        return failed
