"""The order rule within one request's outbox rows: when a row does not go through, the
rows *after* it wait until it is due again; rows before it do not wait; and the wait
lapses if that row is not seen again (another process took it)."""

from __future__ import annotations

import pytest

from signoff.outbox.dispatcher import DEFER, LEASE, MIN_WAIT, Job, Result, _Group


def job(id_: int, attempts: int = 0) -> Job:
    return Job(id_, "slack.update", "R1", {}, attempts, False)


def test_rows_after_a_deferred_one_wait_until_it_is_due_rows_before_it_do_not():
    g = _Group()
    g.went(Result(job(5), "defer", after=1.0), now=100.0)
    assert g.wait_for(job(7), 100.25) == 0.75
    assert g.wait_for(job(3), 100.25) is None  # e.g. left in flight by a crashed process
    assert g.wait_for(job(5), 100.25) is None  # its own next attempt
    # once due, the rows after it come back often until it has been seen again
    assert g.wait_for(job(7), 101.5) == MIN_WAIT


def test_the_wait_ends_when_that_row_goes_through_or_is_given_up():
    for outcome in ("done", "dead"):
        g = _Group()
        g.went(Result(job(5), "retry", after=2.0), now=0.0)
        g.went(Result(job(3), "done"), now=0.5)  # an earlier row going does not end it
        assert g.wait_for(job(7), 0.5) == 1.5
        g.went(Result(job(5), outcome), now=2.1)
        assert g.wait_for(job(7), 2.1) is None


def test_the_earliest_row_that_did_not_go_through_is_the_one_waited_for():
    g = _Group()
    g.went(Result(job(5), "defer"), now=0.0)
    g.went(Result(job(3), "retry", after=4.0), now=0.1)  # 3 left in flight, failed again
    assert g.blocked_by == 3
    assert g.wait_for(job(5), 0.2) == pytest.approx(3.9)
    g.went(Result(job(3), "done"), now=4.1)
    assert g.wait_for(job(5), 4.1) is None


def test_a_failed_record_waits_for_its_backoff_and_a_plain_defer_for_the_default():
    g = _Group()
    g.went(Result(job(5, attempts=2), "done"), now=0.0, record_failed=True)
    assert g.wait_for(job(6), 0.0) == 2.0  # BACKOFF[2]
    g = _Group()
    g.went(Result(job(5), "defer"), now=0.0)
    assert g.wait_for(job(6), 0.0) == DEFER


def test_the_wait_lapses_a_lease_after_that_row_was_due_when_not_seen_again():
    g = _Group()
    g.went(Result(job(5), "defer", after=1.0), now=0.0)
    assert g.wait_for(job(7), 1.0 + LEASE.total_seconds() - 0.01) == MIN_WAIT
    assert g.wait_for(job(7), 1.0 + LEASE.total_seconds()) is None
    assert g.blocked_by is None


def test_a_paced_row_waits_alone():
    # held back by Slack's limit for that call (pacing, a 429): the request's other rows,
    # e.g. its security exception thread behind a paced chat.update, need not wait
    g = _Group()
    g.went(Result(job(5), "paced", after=1.2), now=0.0)
    assert g.blocked_by is None and g.wait_for(job(6), 0.1) is None
    g.went(Result(job(5), "defer", after=1.0), now=0.0)  # a dependency does hold them back
    g.went(Result(job(5), "paced", after=1.2), now=0.5)
    assert g.wait_for(job(6), 0.6) == pytest.approx(0.4)
