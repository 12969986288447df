"""What the benchmark scripts share: the machine, how busy it is, fresh databases, ports,
percentiles. Imported as ``common`` (the scripts run as ``python bench/<script>.py``)."""

from __future__ import annotations

import os
import platform
import socket
import uuid
from contextlib import contextmanager
from pathlib import Path

HOST = "127.0.0.1"


def machine() -> dict:
    """nproc, CPU model, RAM, Python and OS: printed next to every figure."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def loadavg() -> float | None:
    """1-minute load average: other work sharing the machine skews every figure."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (for "what else ran meanwhile")."""
    parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return (sum(parts[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def pct(values: list[float], p: float) -> float | None:
    """The p-th percentile (nearest rank); None for no values."""
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]


def libpq(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as the libpq URI psycopg connects with."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def database(base: str, workdir: Path, name: str, keep: bool = False):
    """A fresh, empty database: a SQLite file in ``workdir``, or a new PostgreSQL database
    created (over an autocommit connection) next to the one ``base`` names and dropped
    afterwards unless ``keep``."""
    if base == "sqlite":
        yield f"sqlite:///{workdir / (name + '.db')}"
        return
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(base)
    admin_url = libpq(base)
    db = f"signoff_bench_{name}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{db}"')
    try:
        yield url.set(database=db).render_as_string(hide_password=False)
    finally:
        if keep:
            print(f"kept database {db}", flush=True)
        else:
            with psycopg.connect(admin_url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
