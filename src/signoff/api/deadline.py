"""A deadline on reading a request's body, as ASGI middleware.

A client that sends its body slowly (or stops halfway) must not hold a connection and the
part it sent for ever. Every ``receive`` of the body is bounded by one deadline for the
whole request: when it passes, the application is told the client went away (Starlette
raises ``ClientDisconnect`` from the body stream), what it answers goes nowhere, and the
client gets ``408`` with ``Connection: close``, so the server closes the connection and
lets go of the buffered body.

The deadline runs from the first byte of the request when the server put it in the scope
(``READ_DEADLINE`` in ``scope["extensions"]``, a ``loop.time()``; see
``signoff.server``, which also bounds the headers), else from the call.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

READ_DEADLINE = "signoff.read_deadline"


def timeout_response(timeout: float) -> tuple[dict, dict]:
    """The ``http.response.start`` and ``http.response.body`` messages of the 408."""
    body = json.dumps(
        {"error": {"code": "request_timeout", "message": f"the request was not received within {timeout:g} s"}},
        separators=(",", ":"),
    ).encode()
    start = {
        "type": "http.response.start",
        "status": 408,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ],
    }
    return start, {"type": "http.response.body", "body": body, "more_body": False}


class ReadDeadline:
    """Wrap ``app`` so that reading an HTTP request's body ends ``timeout`` seconds after the
    request began; ``on_timeout()`` is called once per request cut off."""

    def __init__(self, app, timeout: float, on_timeout: Callable[[], None] = lambda: None):
        self.app = app
        self.timeout = timeout
        self.on_timeout = on_timeout

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = (scope.get("extensions") or {}).get(READ_DEADLINE)
        if deadline is None:
            deadline = asyncio.get_running_loop().time() + self.timeout
        reading, timed_out, started = True, False, False

        async def receive_within():
            nonlocal reading, timed_out
            if not reading:  # the body is in: waiting for a disconnect has no deadline
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                reading, timed_out = False, True
                return {"type": "http.disconnect"}
            if message["type"] != "http.request" or not message.get("more_body", False):
                reading = False
            return message

        async def send_unless_cut_off(message):
            nonlocal started
            if timed_out and not started:
                return  # the application's answer to a client it was told is gone
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, receive_within, send_unless_cut_off)
        if timed_out and not started:
            self.on_timeout()
            start, body = timeout_response(self.timeout)
            await send(start)
            await send(body)
