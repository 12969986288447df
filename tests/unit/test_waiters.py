"""The waiter registry: waking by request id, across threads, and the cross-process check."""

from __future__ import annotations

import asyncio
import threading

import pytest

from signoff.api.waiting import Waiters


class FakeLoop:
    """Records what ``call_soon_threadsafe`` was asked to run (and from which thread)."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.closed = False

    def call_soon_threadsafe(self, fn, *args):
        if self.closed:
            raise RuntimeError("Event loop is closed")
        self.calls.append((fn, args, threading.current_thread().name))

    def run_pending(self):
        calls, self.calls = self.calls, []
        for fn, args, _ in calls:
            fn(*args)


def test_changed_wakes_only_the_waiters_of_that_request_through_their_loop():
    loop = FakeLoop()
    reg = Waiters()
    a1, a2, b = reg.watch("a", loop), reg.watch("a", loop), reg.watch("b", loop)
    t = threading.Thread(target=reg.changed, args=({"a", "zzz"},), name="worker")
    t.start()
    t.join()
    # one callback for the loop, scheduled from the committing thread, nothing set yet
    assert len(loop.calls) == 1 and loop.calls[0][2] == "worker"
    assert not a1.event.is_set()
    loop.run_pending()
    assert a1.event.is_set() and a2.event.is_set() and not b.event.is_set()


def test_changed_for_ids_nobody_awaits_schedules_nothing():
    loop = FakeLoop()
    reg = Waiters()
    reg.watch("a", loop)
    reg.changed(["b", "c"])
    assert loop.calls == []


def test_unwatch_forgets_the_waiter_and_empty_ids():
    loop = FakeLoop()
    reg = Waiters()
    w = reg.watch("a", loop)
    assert reg.count() == 1 and reg.count(settled=True) == 0
    w.known = 1
    assert reg.count(settled=True) == 1 and reg.awaited() == {"a": 1}
    reg.unwatch(w)
    assert reg.count() == 0 and reg.awaited() == {}
    reg.changed(["a"])
    assert loop.calls == []


def test_a_closed_loop_is_skipped():
    gone, live = FakeLoop(), FakeLoop()
    reg = Waiters()
    reg.watch("a", gone)
    w = reg.watch("a", live)
    gone.closed = True
    reg.changed(["a"])
    live.run_pending()
    assert w.event.is_set()


def test_changed_since_wakes_the_waiters_that_saw_an_older_revision():
    loop = FakeLoop()
    reg = Waiters()
    a_old, a_new, b, c = reg.watch("a", loop), reg.watch("a", loop), reg.watch("b", loop), reg.watch("c", loop)
    a_old.known, a_new.known, b.known = 3, 4, 5
    # c has not read yet: it reads anyway, so the check leaves it alone
    assert reg.awaited() == {"a": 3, "b": 5}
    reg.changed_since({"a": 4, "b": 5, "c": 7, "unknown": 9})
    loop.run_pending()
    assert a_old.event.is_set()
    assert not a_new.event.is_set() and not b.event.is_set() and not c.event.is_set()


def _run(coro):
    return asyncio.run(coro)


def test_wait_answers_at_once_when_done_and_unregisters():
    reg = Waiters()
    reads = []

    async def read():
        reads.append(1)
        return {"status": "approved", "version": 2}

    async def main():
        return await reg.wait("r", read, lambda v: v["status"] != "pending", timeout=5)

    assert _run(main())["status"] == "approved"
    assert len(reads) == 1 and reg.count() == 0


def test_wait_is_woken_from_another_thread_and_reads_again():
    reg = Waiters()
    state = {"status": "pending", "version": 1}

    async def read():
        return dict(state)

    async def main():
        task = asyncio.create_task(reg.wait("r", read, lambda v: v["status"] != "pending", timeout=10))
        while reg.count() == 0:
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.01)
        assert not task.done()

        def commit():
            state.update(status="approved", version=2)
            reg.changed({"r"})

        threading.Thread(target=commit).start()
        return await asyncio.wait_for(task, 5)

    assert _run(main()) == {"status": "approved", "version": 2}
    assert reg.count() == 0


def test_a_wake_that_does_not_satisfy_waits_on_and_times_out_with_the_current_state():
    reg = Waiters()
    state = {"status": "pending", "version": 1}
    reads = []

    async def read():
        reads.append(dict(state))
        return dict(state)

    async def main():
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        task = asyncio.create_task(reg.wait("r", read, lambda v: v["status"] != "pending", timeout=0.3))
        while reg.count() == 0:
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.02)
        state["version"] = 2  # a thread reply: a change, still pending
        reg.changed({"r"})
        view = await task
        return view, loop.time() - t0

    view, took = _run(main())
    assert view == {"status": "pending", "version": 2}
    assert took >= 0.29
    assert len(reads) == 3  # first, after the wake, at the timeout


def test_a_read_error_propagates_before_any_wait():
    reg = Waiters()

    async def read():
        raise LookupError("no such request")

    async def main():
        await reg.wait("r", read, lambda v: True, timeout=30)

    with pytest.raises(LookupError):
        _run(main())
    assert reg.count() == 0


def test_a_change_during_the_read_is_not_lost():
    """The event is cleared before the read: a wake that lands while reading still counts."""
    reg = Waiters()
    state = {"status": "pending", "version": 1}
    first = True

    async def read():
        nonlocal first
        view = dict(state)
        if first:
            first = False
            # the change commits after this read saw the old state, before the wait starts
            state.update(status="approved", version=2)
            reg.changed({"r"})
            await asyncio.sleep(0)
        return view

    async def main():
        return await asyncio.wait_for(reg.wait("r", read, lambda v: v["status"] != "pending", timeout=30), 5)

    assert _run(main())["status"] == "approved"
