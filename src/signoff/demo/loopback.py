"""Small HTTP servers on 127.0.0.1 for the demo (and the tests): a base class that serves
from a daemon thread on a free port, and the stand-in executor the demo's grant goes to."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from signoff.domain.agent_signature import MalformedSignature, matches, parse_header, sign_v2


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopbackHTTP:
    """A small HTTP server on a free 127.0.0.1 port, served from a daemon thread (an
    executor's webhook, a JWKS endpoint). Subclasses answer in ``respond`` (or, to see the
    path and set headers, ``handle``); ``url`` is the server's root; ``close`` when done."""

    def __init__(self):
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def answer(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, out, headers = owner.handle(self.command, self.path, dict(self.headers), body)
                self.send_response(status)
                if out and "Content-Type" not in headers:
                    self.send_header("Content-Type", "application/json")
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def respond(self, method: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        """(status, JSON body or b"") for one request."""
        raise NotImplementedError

    def answer(self, method: str, target: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        """Like ``respond``, also given the request target as sent (path and ?query): a
        subclass that checks a signature over it overrides this one instead."""
        return self.respond(method, headers, body)

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes, dict]:
        """Like ``answer``, also setting response headers: (status, body, extra headers)."""
        status, out = self.answer(method, target, headers, body)
        return status, out, {}

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Executor(LoopbackHTTP):
    """A stand-in executor at ``url`` (``…/execute``): it receives signoff's signed webhook,
    checks its v2 signature with the agent's ``secret`` over the method and target, and
    keeps what it got in ``received`` (``event`` is set on each)."""

    def __init__(self, secret: str):
        self.secret = secret.encode()
        self.received: list[dict] = []
        self.event = threading.Event()
        super().__init__()
        self.url += "/execute"

    def answer(self, method: str, target: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        h = {k.lower(): v for k, v in headers.items()}
        ts = h.get("x-signoff-timestamp", "")
        try:  # signoff signs its webhooks v1 and v2: check v2, over this method and target
            given = parse_header(h.get("x-signoff-signature", "")).get("v2", "")
        except MalformedSignature:
            given = ""
        ok = bool(given) and matches(sign_v2(self.secret, ts, method, target, body), given)
        self.received.append({"body": json.loads(body), "signature_ok": ok, "agent": h.get("x-signoff-agent")})
        self.event.set()
        return (200 if ok else 401), b""
