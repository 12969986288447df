"""Long-polling: agents waiting for a request to change, without a thread or a database
connection each.

A waiter is an ``asyncio.Event`` on the event loop that serves it, filed under its request
id in ``Waiters`` (the app owns one). What wakes it:

- a commit in this process that changed the request (the store's after-commit hook calls
  ``Waiters.changed`` from the committing worker thread; the loop is woken with
  ``call_soon_threadsafe``);
- a commit in another process: on PostgreSQL the committing transaction NOTIFYs the ids
  (``store.db.CHANGES_CHANNEL``) and one listening connection per process hears them; on
  SQLite (several ``serve --workers`` on one file) one query every ``interval`` seconds reads
  the revisions of every request awaited here, for all waiters at once, and wakes those that
  moved past what their waiters saw. PostgreSQL falls back to the same check while its
  listening connection is down, and runs it once each time it (re)connects.

A woken waiter reads the request again (briefly, in a worker thread) and either answers or
waits on; a wake-up that changed nothing it waits for costs one read.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from signoff.store.db import CHANGES_CHANNEL, Store
from signoff.store.repo import Repo

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.5  # seconds between checks of the awaited revisions (SQLite; PostgreSQL when unlistened)
_CHUNK = 500  # ids per query of that check


class Waiter:
    """One waiting request handler: its loop, its event, and the revision it last saw."""

    __slots__ = ("event", "known", "loop", "request_id")

    def __init__(self, loop, request_id: str):
        self.loop = loop
        self.event = asyncio.Event()
        self.request_id = request_id
        self.known: int | None = None


def _wake(waiters: list[Waiter]) -> None:
    for w in waiters:
        w.event.set()


class Waiters:
    """The registry of waiters by request id. ``changed`` may be called from any thread."""

    def __init__(self, store: Store | None = None, *, interval: float = POLL_INTERVAL):
        self.store = store
        self.interval = interval
        self._lock = threading.Lock()
        self._by_id: dict[str, set[Waiter]] = {}
        self._watcher: _Watcher | None = None

    # -- registry ------------------------------------------------------------------------
    def watch(self, request_id: str, loop=None) -> Waiter:
        """File a waiter for ``request_id`` on ``loop`` (default: the running one)."""
        w = Waiter(loop or asyncio.get_running_loop(), request_id)
        with self._lock:
            self._by_id.setdefault(request_id, set()).add(w)
            start = self.store is not None and self._watcher is None
            if start:
                self._watcher = _Watcher(self)
        if start:
            self._watcher.start()
        return w

    def unwatch(self, w: Waiter) -> None:
        with self._lock:
            group = self._by_id.get(w.request_id)
            if group is not None:
                group.discard(w)
                if not group:
                    del self._by_id[w.request_id]

    def count(self, *, settled: bool = False) -> int:
        """How many are waiting (``settled``: only those past their first read)."""
        with self._lock:
            if settled:
                return sum(1 for g in self._by_id.values() for w in g if w.known is not None)
            return sum(len(g) for g in self._by_id.values())

    def awaited(self) -> dict[str, int]:
        """Each awaited request id with the lowest revision one of its waiters saw. A waiter
        that has not read yet is left out: it reads anyway, after filing itself."""
        with self._lock:
            out: dict[str, int] = {}
            for rid, group in self._by_id.items():
                known = [w.known for w in group if w.known is not None]
                if known:
                    out[rid] = min(known)
            return out

    def changed(self, request_ids: Collection[str]) -> None:
        """Wake every waiter of these requests (any thread; one loop callback per loop)."""
        with self._lock:
            targets = [w for rid in request_ids for w in self._by_id.get(rid, ())]
        self._wake(targets)

    def changed_since(self, revisions: dict[str, int]) -> None:
        """Wake the waiters that saw a request at a revision older than ``revisions`` holds."""
        with self._lock:
            targets = [
                w
                for rid, rev in revisions.items()
                for w in self._by_id.get(rid, ())
                if w.known is not None and rev > w.known
            ]
        self._wake(targets)

    @staticmethod
    def _wake(targets: list[Waiter]) -> None:
        if not targets:
            return
        by_loop: dict[Any, list[Waiter]] = {}
        for w in targets:
            by_loop.setdefault(w.loop, []).append(w)
        for loop, ws in by_loop.items():
            try:
                loop.call_soon_threadsafe(_wake, ws)
            except RuntimeError:  # that loop has closed: its waiters are gone
                pass

    def close(self) -> None:
        with self._lock:
            watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()

    # -- waiting -------------------------------------------------------------------------
    async def wait(
        self,
        request_id: str,
        read: Callable[[], Awaitable[dict[str, Any]]],
        done: Callable[[dict[str, Any]], bool],
        timeout: float,
    ) -> dict[str, Any]:
        """``read()`` again each time the request changes until ``done(view)``, or until
        ``timeout`` seconds have passed (then the view as it is). The first ``read`` raises
        what it raises (an unknown request: before any waiting)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        w = self.watch(request_id, loop)
        try:
            while True:
                # Cleared before the read: a change during the read still wakes the next wait.
                w.event.clear()
                view = await read()
                w.known = view.get("version")
                if done(view):
                    return view
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return view
                try:
                    await asyncio.wait_for(w.event.wait(), remaining)
                except TimeoutError:
                    return await read()
        finally:
            self.unwatch(w)

    # -- the check across processes --------------------------------------------------------
    def check(self) -> None:
        """One query for the revisions of every request awaited here; wake what moved."""
        awaited = list(self.awaited())
        if not awaited or self.store is None:
            return
        revisions: dict[str, int] = {}
        for i in range(0, len(awaited), _CHUNK):
            chunk = awaited[i : i + _CHUNK]
            revisions.update(self.store.read(lambda s, c=chunk: Repo(s).revisions(c)))
        self.changed_since(revisions)


class _Watcher:
    """The one thread per process that hears of other processes' changes."""

    def __init__(self, waiters: Waiters):
        self.waiters = waiters
        self.store = waiters.store
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="signoff-waiters", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        if self.store.dialect == "postgresql":
            self._listen()
        else:
            self._poll()

    def _check(self) -> None:
        try:
            self.waiters.check()
        except Exception:
            log.warning("checking awaited requests failed; retrying", exc_info=True)

    def _poll(self) -> None:
        while not self._stop.wait(self.waiters.interval):
            self._check()

    def _listen(self) -> None:
        backoff = self.waiters.interval
        while not self._stop.is_set():
            try:
                with self._connect() as conn:
                    conn.execute(f"LISTEN {CHANGES_CHANNEL}")
                    backoff = self.waiters.interval
                    self._check()  # what changed before we listened
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=1.0):
                            self.waiters.changed([i for i in note.payload.split(",") if i])
            except Exception as exc:
                if self._stop.is_set():
                    return
                log.warning(
                    "listening for request changes failed (%s); checking every %.1fs meanwhile",
                    exc,
                    self.waiters.interval,
                )
                # While unlistened, the periodic check keeps waiters within an interval.
                for _ in range(max(1, int(backoff / self.waiters.interval))):
                    self._check()
                    if self._stop.wait(self.waiters.interval):
                        return
                backoff = min(backoff * 2, 15.0)

    def _connect(self):
        """A dedicated autocommit connection with the engine's own connect arguments."""
        import psycopg

        engine = self.store.engine
        cargs, cparams = engine.dialect.create_connect_args(engine.url)
        return psycopg.connect(*cargs, **cparams, autocommit=True)
