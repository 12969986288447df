"""The outbox dispatcher: claims due rows with a lease, delivers them, records the result.

- A row is claimed for ``LEASE`` seconds; if the process dies mid-delivery the lease runs
  out and another process (or this one, restarted) picks it up again.
- Failures retry with backoff: the first retry within 1 s, then doubling, capped at 15 s;
  a handler may ask for a precise delay (Slack's ``Retry-After``).
- A handler may ``Defer`` (e.g. an update whose message is not posted yet): no attempt is
  counted.
- Rows of one request are delivered in order; different requests in parallel.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update

from signoff.store.tables import OutboxRow
from signoff.usecases.ports import Context

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=10)
FINISH_EVERY = 0.02  # seconds: delivery results are recorded together at most this late
BACKOFF = [0.5, 1, 2, 4, 8, 15]


class Retry(Exception):
    """Deliver again later; ``after`` seconds when the peer said so (Retry-After)."""

    def __init__(self, reason: str, after: float | None = None):
        super().__init__(reason)
        self.after = after


class Defer(Exception):
    """Not deliverable yet (depends on another row); try again soon, no attempt counted."""

    def __init__(self, reason: str, after: float = 0.25):
        super().__init__(reason)
        self.after = after


class GiveUp(Exception):
    """Delivery can never succeed (e.g. a grant that expired): mark the row dead."""


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    request_id: str | None
    payload: dict[str, Any]
    attempts: int
    was_in_flight: bool  # claimed before without a recorded result: a crash mid-delivery


Handler = Callable[[Job], None]


def _drain(q: queue.SimpleQueue) -> list:
    out = []
    while True:
        try:
            out.append(q.get_nowait())
        except queue.Empty:
            return out


def backoff(attempts: int) -> float:
    return BACKOFF[min(attempts, len(BACKOFF) - 1)]


class Dispatcher:
    def __init__(self, ctx: Context, handlers: dict[str, Handler], *, workers: int = 4, batch: int = 64):
        self.ctx = ctx
        self.handlers = handlers
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.batch = batch
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="outbox")
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ running
    def wake(self) -> None:
        self._wake.set()

    def start(self, idle_interval: float = 1.0) -> None:
        def loop():
            while not self._stop.is_set():
                try:
                    while self.run_once() and not self._stop.is_set():
                        pass
                except Exception:  # keep the loop alive; the rows stay owed
                    log.exception("outbox dispatch failed")
                self._wake.wait(idle_interval)
                self._wake.clear()

        self._thread = threading.Thread(target=loop, name="outbox-dispatcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=10)
        self.pool.shutdown(wait=True, cancel_futures=True)

    # ------------------------------------------------------------------ one pass
    def run_once(self) -> int:
        """Claim and deliver what is due now; returns how many rows were handled."""
        jobs = self._claim()
        if not jobs:
            return 0
        groups: dict[str | None, list[Job]] = defaultdict(list)
        for job in jobs:
            groups[job.request_id or f"#{job.id}"].append(job)
        # Results are recorded in batches, one transaction for all that finished within a
        # few milliseconds of each other (well inside the lease), not one per row: under
        # load every write transaction queues behind the agents' submissions.
        results: queue.SimpleQueue = queue.SimpleQueue()
        futures = [self.pool.submit(self._deliver_group, group, results) for group in groups.values()]
        pending = set(futures)
        while pending:
            _done, pending = wait(pending, timeout=FINISH_EVERY, return_when=FIRST_COMPLETED)
            self._finish_many(_drain(results))
        self._finish_many(_drain(results))
        for f in futures:
            f.result()
        return len(jobs)

    def _claim(self) -> list[Job]:
        def tx(session) -> list[Job]:
            now = self.ctx.clock()
            q = (
                select(OutboxRow)
                .where(OutboxRow.state == "pending", OutboxRow.next_attempt_at <= now,
                       or_(OutboxRow.claimed_until.is_(None), OutboxRow.claimed_until < now))
                .order_by(OutboxRow.id)
                .limit(self.batch)
            )
            if session.bind.dialect.name == "postgresql":
                q = q.with_for_update(skip_locked=True)
            rows = list(session.scalars(q))
            jobs = []
            for row in rows:
                jobs.append(Job(row.id, row.kind, row.request_id, dict(row.payload), row.attempts,
                                bool(row.in_flight)))
                row.claimed_by = self.worker_id
                row.claimed_until = now + LEASE
                row.in_flight = True
            return jobs

        return self.ctx.store.transaction(tx)

    def _deliver_group(self, jobs: list[Job], results: queue.SimpleQueue | None = None) -> None:
        """Deliver one request's rows in order; results go to ``results`` (recorded by the
        caller) or, without it, are recorded at once."""
        blocked = False
        for job in jobs:
            if blocked:
                # keep order within a request: release the rest for the next pass
                result = (job, "defer", None, 0.1)
            else:
                result = (job, *self._deliver(job))
                blocked = result[1] != "done"
            if results is None:
                self._finish_many([result])
            else:
                results.put(result)

    def _deliver(self, job: Job) -> tuple[str, str | None, float | None]:
        handler = self.handlers.get(job.kind)
        if handler is None:
            return "dead", f"no handler for {job.kind!r}", None
        try:
            handler(job)
            return "done", None, None
        except Defer as d:
            return "defer", str(d), d.after
        except Retry as r:
            log.warning("outbox %s #%s failed (attempt %s): %s", job.kind, job.id, job.attempts + 1, r)
            return "retry", str(r), r.after
        except GiveUp as g:
            log.error("outbox %s #%s given up: %s", job.kind, job.id, g)
            return "dead", str(g), None
        except Exception as exc:  # an unexpected error must not lose the row
            log.exception("outbox %s #%s raised", job.kind, job.id)
            return "retry", f"{type(exc).__name__}: {exc}", None

    def _finish(self, job: Job, outcome: str, error: str | None, after: float | None) -> None:
        self._finish_many([(job, outcome, error, after)])

    def _finish_many(self, results: list[tuple[Job, str, str | None, float | None]]) -> None:
        """Record delivery results, all in one transaction."""
        if not results:
            return

        def tx(session) -> None:
            now = self.ctx.clock()
            done = [job.id for job, outcome, _e, _a in results if outcome == "done"]
            if done:
                session.execute(update(OutboxRow).where(OutboxRow.id.in_(done)).values(
                    state="done", done_at=now, last_error=None, claimed_by=None, claimed_until=None,
                    in_flight=False))
            for job, outcome, error, after in results:
                if outcome == "done":
                    continue
                values: dict[str, Any] = {"claimed_by": None, "claimed_until": None, "in_flight": False}
                if outcome == "dead":
                    values.update(state="dead", done_at=now, last_error=error)
                elif outcome == "defer":
                    values.update(next_attempt_at=now + timedelta(seconds=after or 0.25))
                else:
                    delay = after if after is not None else backoff(job.attempts)
                    values.update(attempts=job.attempts + 1, last_error=error,
                                  next_attempt_at=now + timedelta(seconds=min(max(delay, 0), 60)))
                session.execute(update(OutboxRow).where(OutboxRow.id == job.id).values(**values))

        self.ctx.store.transaction(tx)
        for job, outcome, _error, after in results:
            if outcome in ("defer", "retry"):
                delay = after if after is not None else (0.25 if outcome == "defer" else backoff(job.attempts))
                threading.Timer(min(delay, 15), self.wake).start()
