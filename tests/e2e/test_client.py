"""The Python client against ``signoff serve``: the decorator end to end with a click in
Slack, each way a request can end, retries that never make a second request, the server's
errors as SignoffError, and waiting.

Needs a server that accepts signature v2 (the client signs v2)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid

import httpx
import pytest
from sqlalchemy import create_engine, select

from e2e.client_world import join_clean
from signoff.client import AsyncClient, Cancelled, Client, Expired, Rejected, SignoffError, WaitTimeout
from signoff.store.tables import RequestRow
from support import agent_secret, wait_until


def client(world, agent: str = "deploy-bot", **kw) -> Client:
    return Client(world.server.url, agent, agent_secret(agent), **kw)


def unique(title: str) -> str:
    return f"{title} {uuid.uuid4().hex[:8]}"


def restart(target: str = "checkout-api") -> dict:
    return {"type": "service.restart", "target": target, "environment": "production", "parameters": {"graceful": True}}


def test_decorated_function_runs_once_approved_in_slack(agent_world):
    title = unique("Restart")
    calls = []
    with client(agent_world) as c:

        @c.require_approval(
            "prod-restart", title, justification="p99 doubled", action=lambda target, **_: restart(target)
        )
        def do_restart(target, *, reason=""):
            calls.append((target, reason))
            return f"restarted {target}"

        clicker = agent_world.click_later(title)
        assert do_restart("checkout-api", reason="latency") == "restarted checkout-api"
        join_clean(clicker)
        assert calls == [("checkout-api", "latency")]
        [req] = [r for r in _requests(agent_world) if r.title == title]
        view = c.get(req.id)
        assert view["status"] == "succeeded"
        assert view["outcome"]["status"] == "succeeded"
        assert view["action"] == restart("checkout-api")


def test_a_failing_function_is_reported_failed_with_its_text_and_re_raised(agent_world):
    title = unique("Flush cache")
    with client(agent_world) as c:

        @c.require_approval("prod-restart", title, justification="stale entries", action=restart("cache"))
        def flush():
            raise RuntimeError("cache node unreachable")

        clicker = agent_world.click_later(title)
        with pytest.raises(RuntimeError, match="cache node unreachable"):
            flush()
        join_clean(clicker)
        [req] = [r for r in _requests(agent_world) if r.title == title]
        view = c.get(req.id)
        assert view["status"] == "failed"
        assert view["outcome"]["detail"] == "cache node unreachable"


def test_rejected_in_slack_raises_rejected_and_never_runs(agent_world):
    title = unique("Drop table")
    ran = []
    with client(agent_world) as c:

        @c.require_approval("prod-restart", title, justification="cleanup", action=restart("db"))
        def drop():
            ran.append(True)

        clicker = agent_world.click_later(title, "signoff.reject")
        with pytest.raises(Rejected) as info:
            drop()
        join_clean(clicker)
    assert ran == []
    assert info.value.request["status"] == "rejected"
    assert info.value.request["decisions"][-1]["by"] == "U0OWNER"


def test_nobody_deciding_raises_expired(agent_world):
    with client(agent_world) as c:

        @c.require_approval("quick", unique("Scale down"), justification="night", action=restart("web"))
        def scale():
            raise AssertionError("must not run")

        with pytest.raises(Expired) as info:
            scale()
    assert info.value.request["status"] == "expired"


def test_cancelled_while_waiting_raises_cancelled(agent_world):
    title = unique("Rotate keys")
    with client(agent_world) as c, client(agent_world) as other:

        @c.require_approval("prod-restart", title, justification="quarterly", action=restart("kms"))
        def rotate():
            raise AssertionError("must not run")

        def cancel_when_posted():
            post = agent_world.post_of(title)
            from e2e.harness import request_of

            other.cancel(request_of(post))

        t = threading.Thread(target=cancel_when_posted, daemon=True)
        t.start()
        with pytest.raises(Cancelled) as info:
            rotate()
        t.join(10)
    assert info.value.request["status"] == "cancelled"


def test_async_client_decorator_runs_once_approved(agent_world):
    title = unique("Async restart")

    async def main():
        async with AsyncClient(agent_world.server.url, "deploy-bot", agent_secret("deploy-bot")) as c:

            @c.require_approval("prod-restart", title, justification="p99", action=restart("api"))
            async def do():
                await asyncio.sleep(0)
                return 42

            return await do()

    clicker = agent_world.click_later(title)
    assert asyncio.run(main()) == 42
    join_clean(clicker)
    [req] = [r for r in _requests(agent_world) if r.title == title]
    assert req.status == "succeeded"


class DropFirstAnswer(httpx.BaseTransport):
    """Sends every request on; the first answer to POST /v1/actions is lost on the way back."""

    def __init__(self):
        self.inner = httpx.HTTPTransport()
        self.sent: list[httpx.Request] = []
        self.dropped: list[httpx.Response] = []

    def handle_request(self, request):
        response = self.inner.handle_request(request)
        if request.method == "POST" and request.url.path == "/v1/actions":
            self.sent.append(request)
            if not self.dropped:
                response.read()
                self.dropped.append(response)
                raise httpx.ReadError("connection reset by peer", request=request)
        return response


def test_a_lost_answer_is_retried_under_one_key_and_makes_one_request(agent_world):
    title = unique("Lost answer")
    transport = DropFirstAnswer()
    with client(agent_world, transport=transport) as c:
        view = c.submit("prod-restart", title, restart(), "retry me")
    assert len(transport.sent) == 2
    assert transport.dropped[0].status_code == 201
    keys = {r.headers["idempotency-key"] for r in transport.sent}
    assert len(keys) == 1 and uuid.UUID(keys.pop())
    assert view["id"] == transport.dropped[0].json()["id"]
    assert [r.title for r in _requests(agent_world)].count(title) == 1


class BusyFirst(httpx.BaseTransport):
    """Answers the first POST /v1/actions itself with a 503 and a Retry-After."""

    def __init__(self):
        self.inner = httpx.HTTPTransport()
        self.keys: list[str] = []

    def handle_request(self, request):
        if request.method == "POST":
            self.keys.append(request.headers.get("idempotency-key"))
            if len(self.keys) == 1:
                return httpx.Response(
                    503, headers={"Retry-After": "0"}, json={"error": {"code": "unavailable", "message": "busy"}}
                )
        return self.inner.handle_request(request)


def test_a_503_is_retried_under_the_given_key(agent_world):
    transport = BusyFirst()
    with client(agent_world, transport=transport) as c:
        view = c.submit("prod-restart", unique("Busy"), restart(), "retry", idempotency_key="my-key-1")
    assert transport.keys == ["my-key-1", "my-key-1"]
    assert view["status"] == "pending"


def test_server_errors_arrive_as_signoff_error_with_code_message_and_fields(agent_world):
    with client(agent_world) as c:
        with pytest.raises(SignoffError) as info:
            c.submit("prod-restart", unique("No plan"), restart(), "risky", risk="high")
        assert info.value.status == 422 and "rollback" in info.value.fields and info.value.message
        with pytest.raises(SignoffError) as info:
            c.submit("no-such-workflow", "x", restart(), "x")
        assert info.value.status == 404 and info.value.code
        with pytest.raises(SignoffError) as info:
            c.get(str(uuid.uuid4()))
        assert info.value.status == 404
        view = c.submit("prod-restart", unique("Twice"), restart(), "x")
        c.cancel(view["id"])
        with pytest.raises(SignoffError) as info:
            c.cancel(view["id"])
        assert info.value.status == 409
    with Client(agent_world.server.url, "deploy-bot", "wrong-secret") as bad:
        with pytest.raises(SignoffError) as info:
            bad.get(view["id"])
        assert info.value.status == 401
    with Client("http://127.0.0.1:9", "deploy-bot", "s") as nowhere:
        with pytest.raises(SignoffError) as info:
            nowhere.get("abc")
        assert info.value.status is None and info.value.code == "unreachable"


class Counting(httpx.BaseTransport):
    def __init__(self):
        self.inner = httpx.HTTPTransport()
        self.gets = 0

    def handle_request(self, request):
        self.gets += request.method == "GET"
        return self.inner.handle_request(request)


def test_wait_times_out_with_the_request_and_does_not_hammer_the_server(agent_world):
    transport = Counting()
    with client(agent_world, transport=transport) as c:
        view = c.submit("prod-restart", unique("Waiting"), restart(), "x")
        started = time.monotonic()
        with pytest.raises(TimeoutError) as info:
            c.wait(view["id"], timeout=2.5)
        took = time.monotonic() - started
        c.cancel(view["id"])
    assert isinstance(info.value, WaitTimeout) and info.value.request["status"] == "pending"
    assert 2.5 <= took < 5
    assert transport.gets <= 5  # about one read a second at most, whether or not the server holds them


def test_wait_returns_once_decided_and_final_follows_the_outcome(agent_world):
    title = unique("Deploy")
    with client(agent_world) as c:
        view = c.submit("prod-restart", title, restart(), "x")
        clicker = agent_world.click_later(title)
        decided = c.wait(view["id"], timeout=20)
        join_clean(clicker)
        assert decided["status"] == "executing" and decided["grant"]  # this agent executes: the grant is delivered
        claims = c.verify_grant(decided["grant"], restart(), request_id=view["id"])
        assert claims["sub"] == "deploy-bot" and claims["jti"] == view["id"]

        done = {}
        t = threading.Thread(target=lambda: done.update(c.wait(view["id"], timeout=20, until="final")), daemon=True)
        t.start()
        time.sleep(0.3)
        with client(agent_world) as reporter:
            reporter.outcome(view["id"], "succeeded", "ok")
        t.join(20)
        assert done["status"] == "succeeded"


def _requests(world):
    engine = create_engine(world.db_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(select(RequestRow.id, RequestRow.title, RequestRow.status)))
    finally:
        engine.dispose()


def test_wait_long_polls_when_the_server_holds_the_call(agent_world):
    """Needs the server's ?wait=S&version=V."""
    title = unique("Held")
    transport = Counting()
    with client(agent_world, transport=transport) as c:
        view = c.submit("prod-restart", title, restart(), "x")

        def approve_later():
            time.sleep(3)
            agent_world.click(title)

        t = threading.Thread(target=approve_later, daemon=True)
        t.start()
        started = time.monotonic()
        decided = c.wait(view["id"], timeout=20)
        took = time.monotonic() - started
        t.join(10)
    assert decided["status"] in ("approved", "executing")
    assert took < 5  # woken by the decision, not by a poll interval
    assert transport.gets <= 3  # the first read, then one held call (two if it woke once without news)


def test_comment_is_posted_in_the_request_thread(agent_world):
    """Needs the server's POST /v1/actions/{id}/comments."""
    title = unique("Commented")
    with client(agent_world) as c:
        view = c.submit("prod-restart", title, restart(), "x")
        after = c.comment(view["id"], "draining traffic first")
        assert after["id"] == view["id"]
        assert after["thread"][-1] == {**after["thread"][-1], "user": "deploy-bot", "text": "draining traffic first"}
        # posted by the outbox once the request's own message is there: wait for it
        wait_until(
            lambda: [
                c_
                for c_ in agent_world.slack.calls_to("chat.postMessage")
                if c_.params.get("thread_ts") and "draining traffic first" in json.dumps(c_.params)
            ],
            10,
            "the comment in the request's thread",
        )
        c.cancel(view["id"])
