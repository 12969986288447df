"""api.deadline.ReadDeadline with a fake ASGI receive: a body that does not come in time is
cut off with 408 (the application told the client is gone, its answer dropped); one that
comes in time is untouched."""

from __future__ import annotations

import asyncio
import json

import pytest

from signoff.api.deadline import READ_DEADLINE, ReadDeadline

pytestmark = pytest.mark.timeout(10)


def scope(**extensions) -> dict:
    return {
        "type": "http",
        "method": "POST",
        "path": "/v1/actions",
        "headers": [],
        **({"extensions": extensions} if extensions else {}),
    }


def stalling_receive(*chunks: bytes):
    """Gives ``chunks`` (more to come after each), then waits for ever."""
    queue = list(chunks)

    async def receive():
        if queue:
            return {"type": "http.request", "body": queue.pop(0), "more_body": True}
        await asyncio.Event().wait()

    return receive


class ReadingApp:
    """Reads the body as Starlette does and answers 400 when told the client is gone."""

    def __init__(self):
        self.body = b""
        self.saw_disconnect = False

    async def __call__(self, scope, receive, send):
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.saw_disconnect = True
                break
            self.body += message.get("body", b"")
            if not message.get("more_body"):
                break
        status = 400 if self.saw_disconnect else 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"app", "more_body": False})


def run(wrapper, scope_, receive):
    sent = []

    async def send(message):
        sent.append(message)

    async def go():
        loop = asyncio.get_running_loop()
        start = loop.time()
        await wrapper(scope_, receive, send)
        return loop.time() - start

    return sent, asyncio.run(go())


def test_a_stalled_body_gets_408_at_the_deadline():
    app, timeouts = ReadingApp(), []
    sent, took = run(
        ReadDeadline(app, 0.2, on_timeout=lambda: timeouts.append(1)), scope(), stalling_receive(b"half a ", b"body")
    )
    assert app.saw_disconnect and app.body == b"half a body"
    assert 0.2 <= took < 2
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]  # the app's 400 dropped
    assert sent[0]["status"] == 408
    assert (b"connection", b"close") in sent[0]["headers"]
    assert json.loads(sent[1]["body"])["error"]["code"] == "request_timeout"
    assert timeouts == [1]


def test_the_deadline_runs_from_the_start_the_server_put_in_the_scope():
    async def go():
        loop = asyncio.get_running_loop()
        sent = []

        async def send(m):
            sent.append(m)

        start = loop.time()
        await ReadDeadline(ReadingApp(), 30)(scope(**{READ_DEADLINE: start + 0.1}), stalling_receive(), send)
        return loop.time() - start, sent

    took, sent = asyncio.run(go())
    assert 0.1 <= took < 2 and sent[0]["status"] == 408


def test_a_body_in_time_is_untouched_and_the_wait_for_a_disconnect_after_it_is_not_bounded():
    messages = [
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"cd", "more_body": False},
    ]

    async def receive():
        if messages:
            await asyncio.sleep(0.02)
            return messages.pop(0)
        await asyncio.sleep(0.3)  # past the deadline: a disconnect only comes when it comes
        return {"type": "http.disconnect"}

    got = []

    async def app(scope_, receive_, send):
        got.append(await receive_())
        got.append(await receive_())
        got.append(await receive_())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    sent, _ = run(ReadDeadline(app, 0.15), scope(), receive)
    assert [g["type"] for g in got] == ["http.request", "http.request", "http.disconnect"]
    assert b"".join(g.get("body", b"") for g in got) == b"abcd"
    assert sent[0]["status"] == 200 and sent[1]["body"] == b"ok"


def test_other_scopes_pass_through():
    seen = []

    async def app(scope_, receive, send):
        seen.append(scope_["type"])

    asyncio.run(ReadDeadline(app, 0.01)({"type": "lifespan"}, stalling_receive(), None))
    assert seen == ["lifespan"]


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "ten"])
def test_a_bad_signoff_read_timeout_is_named(monkeypatch, value):
    from signoff.settings import SettingsError, load_settings

    monkeypatch.setenv("SIGNOFF_READ_TIMEOUT", value)
    with pytest.raises(SettingsError, match="SIGNOFF_READ_TIMEOUT"):
        load_settings()


def test_signoff_read_timeout_takes_fractions_and_defaults_to_10(monkeypatch):
    from signoff.settings import load_settings

    monkeypatch.delenv("SIGNOFF_READ_TIMEOUT", raising=False)
    assert load_settings().read_timeout == 10.0
    monkeypatch.setenv("SIGNOFF_READ_TIMEOUT", "1.5")
    assert load_settings().read_timeout == 1.5
