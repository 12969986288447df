"""A client that hangs up before its body is in (the ASGI server says ``http.disconnect``)
is not the server's error: nothing counted as a 5xx, nothing logged above DEBUG, and the
chunks read so far are let go at once (nothing keeps them, not even until a gc run)."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import re
import weakref

from signoff.api.app import create_app
from support import agent_secret, runtime, signed_headers, submission


class Chunk(bytearray):
    """A body chunk whose lifetime the test can watch (bytes take no weak references; a bytearray does)."""


def call(app, headers: dict[str, str], chunks: list[bytes]) -> list[dict]:
    """One POST /v1/actions into ``app``: the ``chunks``, then the client hangs up."""
    queue = [{"type": "http.request", "body": c, "more_body": True} for c in chunks]
    sent = []

    async def receive():
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/actions",
        "raw_path": b"/v1/actions",
        "query_string": b"",
        "root_path": "",
        "server": ("127.0.0.1", 8080),
        "client": ("127.0.0.1", 50000),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    asyncio.run(app(scope, receive, send))
    return sent


def test_a_hang_up_mid_body_is_no_error(db_url, monkeypatch, caplog):
    rt = runtime(db_url, monkeypatch=monkeypatch)
    app = create_app(rt.context)
    body = json.dumps(submission()).encode()
    caplog.set_level(logging.INFO)
    for headers in (
        {"Content-Length": str(len(body))},
        {**signed_headers("deploy-bot", agent_secret("deploy-bot"), body), "Content-Length": str(len(body))},
    ):
        call(app, headers, [body[:100], body[100:200]])
    metrics = app.state.metrics.render().decode()
    assert not re.search(r'signoff_http_errors_total\{status="5', metrics), metrics
    assert [r for r in caplog.records if r.levelno >= logging.INFO] == []


def test_the_chunks_of_a_hung_up_body_are_let_go_at_once(db_url, monkeypatch):
    rt = runtime(db_url, monkeypatch=monkeypatch)
    app = create_app(rt.context)
    chunk = Chunk(b"x" * 1000)
    alive = weakref.ref(chunk)
    gc.disable()
    try:
        call(app, {"Content-Length": "100000"}, [chunk])
        del chunk
        assert alive() is None, "the chunk read so far outlived the hang-up"
    finally:
        gc.enable()
