"""``signoff serve`` against clients that hang up mid-request or read too slowly, over raw
sockets: a hang-up is not an error (no 5xx counted, no error lines), and reading a request
has a deadline (``SIGNOFF_READ_TIMEOUT``, 2 s here) after which the client is cut off and
what it sent is let go.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time

import httpx
import pytest

from e2e.harness import Serve, serve_env
from fakes.slack_api import FakeSlack
from support import BASIC_YAML, agent_secret, signed_headers, submission

DEADLINE = 2.0
MARGIN = 2.5  # the timer's own granularity and a loaded 2-core machine


@pytest.fixture
def world(tmp_path):
    (tmp_path / "signoff.yaml").write_text(BASIC_YAML)
    with FakeSlack() as slack:
        env = serve_env(
            db_url=f"sqlite:///{tmp_path / 'signoff.db'}",
            slack_url=slack.url,
            config=tmp_path / "signoff.yaml",
            SIGNOFF_READ_TIMEOUT=str(DEADLINE),
        )
        servers: list[Serve] = []

        def serve(name: str, *args: str) -> Serve:
            s = Serve(tmp_path, env, name, args)
            servers.append(s)
            return s.start()

        try:
            yield serve
        finally:
            for s in servers:
                s.stop()


def connect(server: Serve) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def head(path: str, length: int, headers: dict[str, str] | None = None) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: signoff",
        f"Content-Length: {length}",
        "Content-Type: application/json",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def answer_or_close(sock: socket.socket, within: float) -> tuple[bytes, float]:
    """What the server sends until it closes the connection, and when it closed (seconds
    from now); an AssertionError if it is still open after ``within``."""
    start = time.monotonic()
    got = b""
    sock.settimeout(0.2)
    while time.monotonic() - start < within:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return got, time.monotonic() - start
        if not chunk:
            return got, time.monotonic() - start
        got += chunk
    raise AssertionError(f"connection still open after {within:.1f}s; received {got[:200]!r}")


def status_of(raw: bytes) -> int | None:
    m = re.match(rb"HTTP/1\.1 (\d{3}) ", raw)
    return int(m.group(1)) if m else None


def errors_counted(server: Serve) -> dict[str, float]:
    """signoff_http_errors by status, from /metrics."""
    text = httpx.get(server.url + "/metrics", timeout=10).text
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(r'^signoff_http_errors_total\{status="(\d+)"\} (\S+)$', text, re.M)
    }


def trickle(sock: socket.socket, data: bytes, every: float, until: float) -> bool:
    """Send ``data`` one byte per ``every`` seconds for at most ``until`` seconds; False as
    soon as the server has closed the connection (a send fails or a read sees the end)."""
    start = time.monotonic()
    for b in data:
        if time.monotonic() - start > until:
            return True
        try:
            sock.sendall(bytes([b]))
        except OSError:
            return False
        sock.settimeout(every)
        try:
            sock.recv(65536, socket.MSG_PEEK)
            return False  # the end, or an answer (the 408) before the request was done: cut off
        except TimeoutError:
            pass
        except OSError:
            return False
    return True


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_clients_hanging_up_mid_body_or_sending_junk_are_not_errors(world):
    server = world("hangups")
    before = server.output()
    body = json.dumps(submission()).encode()
    signed = signed_headers("deploy-bot", agent_secret("deploy-bot"), body)
    for i in range(50):
        path, headers = [("/v1/actions", None), ("/v1/actions", signed), ("/slack/events", None)][i % 3]
        sock = connect(server)
        sock.sendall(head(path, len(body), headers) + body[: len(body) // 2])
        time.sleep(0.01)
        sock.close()
    for _ in range(10):  # junk that is no HTTP at all: 400, and no warning per connection
        with connect(server) as sock:
            sock.sendall(b"\x16\x03\x01 not http\r\n\r\n")
            assert status_of(answer_or_close(sock, within=5)[0]) == 400
    # each hang-up has been seen (the server still has them to clean up for a moment)
    time.sleep(0.5)
    assert server.agent("POST", "/v1/actions", "deploy-bot", submission()).status_code == 201
    errors = errors_counted(server)
    assert not any(s.startswith("5") for s in errors), errors
    added = server.output()[len(before) :]
    assert not re.search(r"ERROR|Traceback|Exception|WARNING", added), added
    assert len(added.splitlines()) <= 5, added


def test_headers_trickled_are_cut_off_at_the_deadline(world):
    server = world("slowloris")
    sock = connect(server)
    start = time.monotonic()
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: signoff\r\n")
    still_open = trickle(sock, b"X-Padding: " + b"a" * 100, every=0.5, until=DEADLINE + MARGIN)
    assert not still_open, "headers trickled past the deadline were still being read"
    raw, _ = answer_or_close(sock, within=MARGIN)
    took = time.monotonic() - start
    assert DEADLINE - 0.2 <= took <= DEADLINE + MARGIN, took
    assert raw == b"" or status_of(raw) == 408, raw
    sock.close()
    # the server is fine
    assert httpx.get(server.url + "/healthz", timeout=5).status_code == 200
    assert "Traceback" not in server.output()


def test_a_client_that_sends_nothing_is_closed_at_the_deadline(world):
    server = world("silent")
    sock = connect(server)
    start = time.monotonic()
    answer_or_close(sock, within=DEADLINE + MARGIN)
    assert time.monotonic() - start >= DEADLINE - 0.2
    sock.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_body_trickled_gets_408_at_the_deadline(world, workers):
    server = world(f"slowbody{workers}", *(["--workers", str(workers)] if workers > 1 else []))
    body = json.dumps(submission()).encode()
    for path, headers in [
        ("/v1/actions", signed_headers("deploy-bot", agent_secret("deploy-bot"), body)),
        ("/slack/events", None),
    ]:
        sock = connect(server)
        start = time.monotonic()
        sock.sendall(head(path, len(body), headers) + body[:10])
        still_open = trickle(sock, body[10:], every=0.3, until=DEADLINE + MARGIN)
        assert not still_open, f"{path}: a body trickled past the deadline was still being read"
        raw, _ = answer_or_close(sock, within=MARGIN)
        took = time.monotonic() - start
        assert DEADLINE - 0.2 <= took <= DEADLINE + MARGIN, (path, took)
        assert status_of(raw) == 408, raw
        assert b'"code":"request_timeout"' in raw, raw
        sock.close()
    assert server.agent("POST", "/v1/actions", "deploy-bot", submission()).status_code == 201
    assert "Traceback" not in server.output() and " ERROR " not in server.output()


def test_stalled_big_bodies_are_let_go(world):
    server = world("stalled")
    httpx.get(server.url + "/metrics", timeout=5)  # warm: the first render imports and caches
    time.sleep(0.5)
    baseline = rss_kib(server.proc.pid)
    n, size = 200, 256 * 1024
    body = json.dumps(submission(title="x" * (size - 1000))).encode()[: size - 16]
    signed = signed_headers("deploy-bot", agent_secret("deploy-bot"), body)
    peak, done = [0], threading.Event()

    def sample():
        while not done.wait(0.05):
            peak[0] = max(peak[0], rss_kib(server.proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    socks = []
    for _ in range(n):
        sock = connect(server)
        sock.sendall(head("/v1/actions", len(body) + 16, signed) + body)  # 16 bytes short: stalled
        socks.append(sock)
    for sock in socks:
        answer_or_close(sock, within=DEADLINE + 2 * MARGIN)
        sock.close()
    done.set()
    sampler.join()
    peak = peak[0]
    time.sleep(2.0)  # the memory is handed back a moment after the last one
    after = rss_kib(server.proc.pid)
    print(
        f"RSS with {n} stalled {size // 1024} KiB bodies: baseline {baseline / 1024:.1f} MiB, "
        f"at most {peak / 1024:.1f} MiB while stalled, after the deadline {after / 1024:.1f} MiB"
    )
    assert after - baseline < 20 * 1024, (baseline, peak, after)
    assert server.agent("POST", "/v1/actions", "deploy-bot", submission()).status_code == 201


def test_a_slow_client_within_the_deadline_is_served(world):
    server = world("patient")
    body = json.dumps(submission()).encode()
    request = head("/v1/actions", len(body), signed_headers("deploy-bot", agent_secret("deploy-bot"), body)) + body
    sock = connect(server)
    pieces = [request[i : i + len(request) // 6 + 1] for i in range(0, len(request), len(request) // 6 + 1)]
    for piece in pieces:  # about 1.2 s in all, within the 2 s deadline
        sock.sendall(piece)
        time.sleep(0.2)
    sock.settimeout(5)
    raw = sock.recv(65536)
    assert status_of(raw) == 201, raw
    # the kept-alive connection's next request has a deadline of its own, not the first one's
    time.sleep(DEADLINE / 2)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: signoff\r\n\r\n")
    assert status_of(sock.recv(65536)) == 200
    sock.close()
