"""The running dispatcher (``Dispatcher.start``), on SQLite and PostgreSQL, real clock: a
request's rows queued behind one that a crashed process left leased and in flight must
all be delivered, in order, once that lease runs out."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from signoff.outbox.dispatcher import Defer, Dispatcher, Job
from signoff.store.repo import Repo
from signoff.store.tables import OutboxRow
from signoff.usecases.ports import system_clock
from support import runtime, wait_until

ROWS_BEHIND = 9


@pytest.mark.timeout(60)
def test_rows_behind_a_crashed_delivery_go_once_its_lease_runs_out(db_url, monkeypatch):
    rt = runtime(db_url, clock=system_clock, monkeypatch=monkeypatch)
    delivered: list[int] = []
    lock = threading.Lock()
    head: list[int] = []

    def first(job: Job) -> None:
        with lock:
            delivered.append(job.id)

    def after(job: Job) -> None:
        # like an update of a message not posted yet: waits for the request's first row
        with lock:
            if head[0] not in delivered:
                raise Defer("the first row is not delivered yet", after=job.payload["wait"])
            delivered.append(job.id)

    def add(session):
        now = system_clock()
        repo = Repo(session)
        repo.enqueue("t.first", {}, now, request_id="R1")
        for n in range(ROWS_BEHIND):
            # different waits, as Slack's kinds have: the rows come back at different times
            repo.enqueue("t.after", {"wait": (0.05, 0.1, 0.25)[n % 3]}, now, request_id="R1")
        session.flush()
        ids = list(session.scalars(select(OutboxRow.id).order_by(OutboxRow.id)))
        # the first row was claimed by a process that died while delivering it
        session.execute(
            update(OutboxRow)
            .where(OutboxRow.id == ids[0])
            .values(claimed_by="crashed:1:abc", claimed_until=now + timedelta(seconds=1.5), in_flight=True)
        )
        return ids

    ids = rt.store.transaction(add)
    head.append(ids[0])
    dispatcher = Dispatcher(rt.context, {"t.first": first, "t.after": after}, workers=8)
    try:
        dispatcher.start(idle_interval=0.05)
        wait_until(lambda: len(delivered) == len(ids), 20, "every row delivered after the lease ran out", 0.05)
        assert delivered == ids  # in order, each once
    finally:
        dispatcher.stop()
        rt.store.dispose()
