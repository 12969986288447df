"""``signoff serve --workers N``: one listening socket, N ``serve`` processes.

Python runs one thread of Python code at a time, so one ``serve`` process uses about one
core however many requests wait. With ``--workers N`` this process binds the port once,
starts N worker processes that inherit the socket and accept from it (each a full
replica: HTTP, Slack, its own outbox dispatcher and sweep ticks, which the rows already
split between replicas), and stays as their supervisor:

- SIGTERM / SIGINT: the workers are asked to stop (SIGTERM), given 30 s, then killed;
- SIGHUP: passed on, so every worker reloads the workflow file;
- a worker that dies is started again after a second (logged), so a crash of one does
  not take the port down.

On SQLite the workers take turns to write through an advisory file lock (see
``store.db.WriterLock``); on PostgreSQL they are ordinary replicas.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

log = logging.getLogger(__name__)

STOP_GRACE = 30.0
RESTART_DELAY = 1.0
# A worker that dies this soon after starting, this many times in a row, will not get
# better by being started again (e.g. the database is gone): the supervisor stops, exit 1.
EARLY_EXIT = 10.0
EARLY_EXITS_TO_GIVE_UP = 5


def bind(host: str, port: int) -> socket.socket:
    """The listening socket (inheritable: the workers accept from it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=2048)
    sock.set_inheritable(True)
    return sock


def worker_command(fd: int, *, socket_mode: bool) -> list[str]:
    cmd = [sys.executable, "-m", "signoff.cli", "serve", "--worker-fd", str(fd)]
    if socket_mode:
        cmd.append("--socket-mode")
    return cmd


def _die_with_parent() -> None:
    """In the worker, before exec: SIGTERM when the supervisor dies (Linux ``prctl``)."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


class Supervisor:
    def __init__(self, sock: socket.socket, workers: int, *, socket_mode: bool = False):
        self.sock = sock
        self.count = workers
        self.socket_mode = socket_mode
        self.procs: dict[int, subprocess.Popen] = {}  # slot -> process
        self.started_at: dict[int, float] = {}
        self.stopping = False
        self._own_metrics_dir: str | None = None
        self._metrics_path: str | None = None

    def _start(self, slot: int) -> None:
        fd = self.sock.fileno()
        # the worker's share of Slack's rate limits is 1 / (replicas × workers)
        env = dict(os.environ, SIGNOFF_WORKER=str(slot), SIGNOFF_WORKER_COUNT=str(self.count))
        if self._metrics_path:
            env["PROMETHEUS_MULTIPROC_DIR"] = self._metrics_path
        # Own session: a Ctrl-C in the terminal reaches the supervisor only, which stops the
        # workers in order; on Linux a worker also stops if the supervisor is killed.
        proc = subprocess.Popen(
            worker_command(fd, socket_mode=self.socket_mode),
            pass_fds=(fd,),
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self.procs[slot] = proc
        self.started_at[slot] = time.monotonic()
        log.info("worker %d started (pid %d)", slot, proc.pid)

    def _signal_all(self, signum: int) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    proc.send_signal(signum)
                except ProcessLookupError:
                    pass

    def run(self) -> int:
        def stop(signum, _frame):
            self.stopping = True

        def hup(_signum, _frame):
            log.info("SIGHUP: the workers reload the workflow file")
            self._signal_all(signal.SIGHUP)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, hup)
        self._metrics_dir()
        for slot in range(self.count):
            self._start(slot)
        log.info("serving on %s with %d workers", self.sock.getsockname()[:2], self.count)
        restart_at: dict[int, float] = {}
        early_exits = 0
        try:
            while not self.stopping:
                for slot, proc in list(self.procs.items()):
                    if slot in restart_at:
                        if time.monotonic() >= restart_at[slot]:
                            del restart_at[slot]
                            self._start(slot)
                    elif proc.poll() is not None:
                        lived = time.monotonic() - self.started_at[slot]
                        early_exits = early_exits + 1 if lived < EARLY_EXIT else 0
                        if early_exits >= EARLY_EXITS_TO_GIVE_UP:
                            log.error(
                                "workers keep exiting within %.0f s of starting (%d in a row, the last "
                                "with %s); stopping — see the errors above",
                                EARLY_EXIT,
                                early_exits,
                                proc.returncode,
                            )
                            return 1
                        log.error(
                            "worker %d (pid %d) exited with %s; starting it again in %.0f s",
                            slot,
                            proc.pid,
                            proc.returncode,
                            RESTART_DELAY,
                        )
                        restart_at[slot] = time.monotonic() + RESTART_DELAY
                time.sleep(0.2)
        finally:
            self._shutdown()
        return 0

    def _metrics_dir(self) -> None:
        """Where the workers write their metrics so that any of them can report the sum
        (prometheus_client's multiprocess mode). Emptied at start: files of an earlier run
        would add old counts to this one."""
        path = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip()
        if path:
            os.makedirs(path, exist_ok=True)
            for name in os.listdir(path):
                if name.endswith(".db"):
                    os.unlink(os.path.join(path, name))
        else:
            path = self._own_metrics_dir = tempfile.mkdtemp(prefix="signoff-metrics-")
        self._metrics_path = path  # the workers' environment only: this process keeps its own

    def _shutdown(self) -> None:
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker pid %d did not stop within %.0f s; killing it", proc.pid, STOP_GRACE)
                proc.kill()
                proc.wait()
        self.sock.close()
        if self._own_metrics_dir:
            shutil.rmtree(self._own_metrics_dir, ignore_errors=True)
