"""The ``serve --workers`` supervisor with stand-in workers (no signoff, no database)."""

from __future__ import annotations

import signal
import sys
import time

import pytest

from signoff import supervisor


@pytest.fixture
def handlers():
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


def test_workers_that_keep_dying_at_start_stop_the_supervisor(monkeypatch, handlers):
    monkeypatch.setattr(
        supervisor, "worker_command", lambda fd, socket_mode: [sys.executable, "-c", "raise SystemExit(3)"]
    )
    monkeypatch.setattr(supervisor, "RESTART_DELAY", 0.05)
    sock = supervisor.bind("127.0.0.1", 0)
    started = time.monotonic()
    assert supervisor.Supervisor(sock, 2).run() == 1
    assert time.monotonic() - started < 20
    assert sock.fileno() == -1  # closed on the way out


def test_a_worker_that_ran_a_while_is_started_again(monkeypatch, handlers):
    """One early exit is not a crash loop: the worker is replaced and the supervisor goes on."""
    starts: list[float] = []

    def command(fd, socket_mode):
        starts.append(time.monotonic())
        code = "raise SystemExit(3)" if len(starts) == 1 else "import time; time.sleep(30)"
        return [sys.executable, "-c", code]

    monkeypatch.setattr(supervisor, "worker_command", command)
    monkeypatch.setattr(supervisor, "RESTART_DELAY", 0.05)
    sup = supervisor.Supervisor(supervisor.bind("127.0.0.1", 0), 1)

    def stop_later(_signum, _frame):
        sup.stopping = True

    signal.signal(signal.SIGALRM, stop_later)
    signal.setitimer(signal.ITIMER_REAL, 2.0)
    try:
        # run() installs its own handlers for TERM/INT/HUP; SIGALRM ends it after 2 s
        assert sup.run() == 0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
    assert len(starts) == 2
    assert all(p.poll() is not None for p in sup.procs.values())  # stopped on the way out
