"""Long-polling (``GET /v1/actions/{id}?wait=S[&version=V]``) and the agent's comments
(``POST /v1/actions/{id}/comments``), in process, on SQLite and PostgreSQL.

A real clock: the HMAC window and the waits are real seconds (each wait here is short).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import pytest
from sqlalchemy import select

from signoff.api.app import create_app
from signoff.bootstrap import build
from signoff.evidence.export import build_bundle, render_html, verify_bundle
from signoff.evidence.verify import verify_store
from signoff.outbox.dispatcher import Dispatcher
from signoff.settings import Settings
from signoff.slack.app import web_client
from signoff.slack.delivery import SlackDelivery
from signoff.store.repo import Repo
from signoff.store.tables import OutboxRow
from signoff.usecases.cancel import cancel
from signoff.usecases.decide import decide
from signoff.usecases.ports import system_clock
from signoff.usecases.reply import record_thread_message
from signoff.usecases.slack_ops import record_posted
from support import BASIC_YAML, SECRETS, dumps, runtime, signed_headers, submission, wait_until

AGENTS = {
    "deploy-bot": SECRETS["DEPLOY_BOT_SECRET"],
    "other-bot": SECRETS["OTHER_BOT_SECRET"],
    "outsider": SECRETS["OUTSIDER_SECRET"],
}
CHANNEL = "C0APPROVALS"
ROOT_TS = "1700000000.000100"
EVIL = "<!channel> look <@U0OWNER> <http://evil.example|Approve here> *Approved by the owner* ```x``` & @here"


class Api:
    """The app over ASGI in this process: async calls for concurrency, sync ones for the rest."""

    def __init__(self, rt):
        self.rt = rt
        self.ctx = rt.context
        self.app = create_app(rt.context)
        self.waiters = self.app.state.waiters
        self._signed: set[tuple] = set()

    def headers(self, agent: str, body: bytes) -> dict:
        # Each call is a new request: never the same bytes signed at the same second as an
        # earlier one (a submission that is would be answered as a replay of it).
        ts = int(time.time())
        while (agent, ts, body) in self._signed:
            ts -= 1
        self._signed.add((agent, ts, body))
        return signed_headers(agent, AGENTS[agent], body, ts=ts)

    async def acall(self, method: str, path: str, body=None, *, agent: str = "deploy-bot", timeout: float = 90):
        data = b"" if body is None else (body if isinstance(body, bytes) else dumps(body))
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=timeout) as c:
            return await c.request(method, path, content=data, headers=self.headers(agent, data))

    def call(self, method: str, path: str, body=None, *, agent: str = "deploy-bot") -> httpx.Response:
        return asyncio.run(self.acall(method, path, body, agent=agent))

    def created(self, agent: str = "deploy-bot", **over) -> dict:
        r = self.call("POST", "/v1/actions", submission(**over), agent=agent)
        assert r.status_code == 201, r.text
        return r.json()

    def in_background(self, method: str, path: str, *, agent: str = "deploy-bot"):
        """Start a call in a thread; returns (thread, result holder with "response" and "took")."""
        out: dict = {}

        def run():
            t0 = time.monotonic()
            out["response"] = self.call(method, path, agent=agent)
            out["took"] = time.monotonic() - t0

        t = threading.Thread(target=run)
        t.start()
        return t, out

    def waiting(self, n: int = 1) -> None:
        wait_until(lambda: self.waiters.count() >= n, timeout=10, what=f"{n} waiter(s)")

    def post_root(self, rid: str, ts: str = ROOT_TS) -> None:
        msg_id = self.ctx.store.read(lambda s: Repo(s).messages(rid, role="request")[0].id)
        record_posted(self.ctx, message_id=msg_id, channel=CHANNEL, ts=ts)

    def reply(self, user: str, ts: str, text: str, thread_ts: str = ROOT_TS, **extra) -> bool:
        return record_thread_message(
            self.ctx,
            event={
                "type": "message",
                "channel": CHANNEL,
                "user": user,
                "text": text,
                "ts": ts,
                "thread_ts": thread_ts,
                **extra,
            },
            event_id=None,
        )


@pytest.fixture
def api(db_url, monkeypatch):
    rt = runtime(
        db_url,
        BASIC_YAML
        + """
  - id: pair
    owner: U0OWNER
    platform_owner: U0PLAT
    security_owner: U0SEC
    channel: C0APPROVALS
    agents: [deploy-bot, other-bot]
    timeout: 30m
""",
        clock=system_clock,
        monkeypatch=monkeypatch,
    )
    a = Api(rt)
    try:
        yield a
    finally:
        a.waiters.close()
        rt.store.dispose()


def error_of(r, status: int, fields=None) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] and err["message"]
    if fields is not None:
        assert sorted(err.get("fields") or []) == sorted(fields), err
    return err


# --------------------------------------------------------------------------- waiting


def test_the_request_object_carries_version_and_thread(api):
    req = api.created()
    assert req["version"] == 1 and req["thread"] == []
    got = api.call("GET", f"/v1/actions/{req['id']}").json()
    assert got["version"] == 1 and got["thread"] == []


def test_wait_answers_as_soon_as_it_is_decided(api):
    rid = api.created()["id"]
    t, out = api.in_background("GET", f"/v1/actions/{rid}?wait=20")
    api.waiting()
    time.sleep(0.2)
    assert "response" not in out  # still waiting
    decided_at = time.monotonic()
    decide(api.ctx, request_id=rid, user="U0OWNER", decision="approve")
    t.join(15)
    r = out["response"]
    assert r.status_code == 200, r.text
    assert r.json()["status"] in ("approved", "executing")
    assert r.json()["version"] > 1
    assert out["took"] < 10  # woken, not timed out (the real figure is in bench/)
    assert time.monotonic() - decided_at < 5
    assert api.waiters.count() == 0


def test_wait_times_out_with_the_current_state(api):
    rid = api.created()["id"]
    t0 = time.monotonic()
    r = api.call("GET", f"/v1/actions/{rid}?wait=1")
    assert r.status_code == 200
    assert r.json()["status"] == "pending" and r.json()["version"] == 1
    assert time.monotonic() - t0 >= 0.95
    assert api.waiters.count() == 0


def test_wait_on_a_decided_request_answers_at_once(api):
    rid = api.created()["id"]
    decide(api.ctx, request_id=rid, user="U0OWNER", decision="reject")
    t0 = time.monotonic()
    r = api.call("GET", f"/v1/actions/{rid}?wait=30")
    assert r.status_code == 200 and r.json()["status"] == "rejected"
    assert time.monotonic() - t0 < 5


def test_version_waits_for_any_change_whatever_the_status(api):
    rid = api.created()["id"]
    api.post_root(rid)
    v = api.call("GET", f"/v1/actions/{rid}").json()["version"]
    # an older version answers at once
    r = api.call("GET", f"/v1/actions/{rid}?wait=30&version={v - 1}")
    assert r.status_code == 200 and r.json()["version"] == v
    # the current one waits; a human's thread reply wakes it, still pending
    t, out = api.in_background("GET", f"/v1/actions/{rid}?wait=20&version={v}")
    api.waiting()
    time.sleep(0.2)
    assert "response" not in out
    assert api.reply("U0OWNER", "1700000001.000200", "why now?")
    t.join(15)
    got = out["response"].json()
    assert out["response"].status_code == 200
    assert got["status"] == "pending" and got["version"] > v
    assert got["thread"] == [{"user": "U0OWNER", "ts": "1700000001.000200", "text": "why now?"}]
    assert out["took"] < 10


def test_version_wait_times_out_when_nothing_changes(api):
    rid = api.created()["id"]
    r = api.call("GET", f"/v1/actions/{rid}?wait=1&version=1")
    assert r.status_code == 200 and r.json()["version"] == 1


def test_invisible_changes_do_not_move_the_version(api):
    """Slack posting the request (evidence, but nothing the agent's view shows) wakes nobody."""
    rid = api.created()["id"]
    api.post_root(rid)
    assert api.call("GET", f"/v1/actions/{rid}").json()["version"] == 1


@pytest.mark.parametrize(
    "query, field",
    [
        ("wait=0", "wait"),
        ("wait=61", "wait"),
        ("wait=abc", "wait"),
        ("wait=1.5", "wait"),
        ("wait=-1", "wait"),
        ("wait=", "wait"),
        ("wait=1&wait=2", "wait"),
        ("wait=%2B5", "wait"),
        ("wait=5&version=-1", "version"),
        ("wait=5&version=x", "version"),
        ("wait=5&version=1.0", "version"),
        ("version=", "version"),
    ],
)
def test_bad_wait_or_version_is_422_naming_it(api, query, field):
    rid = api.created()["id"]
    error_of(api.call("GET", f"/v1/actions/{rid}?{query}"), 422, [field])


def test_wait_bounds_are_accepted(api):
    rid = api.created()["id"]
    decide(api.ctx, request_id=rid, user="U0OWNER", decision="reject")
    for q in ("wait=1", "wait=60", "wait=60&version=0", "version=0"):
        assert api.call("GET", f"/v1/actions/{rid}?{q}").status_code == 200, q


def test_another_agent_gets_404_at_once_without_waiting(api):
    rid = api.created()["id"]
    t0 = time.monotonic()
    error_of(api.call("GET", f"/v1/actions/{rid}?wait=30", agent="outsider"), 404)
    error_of(api.call("GET", "/v1/actions/no-such-request?wait=30"), 404)
    assert time.monotonic() - t0 < 5
    assert api.waiters.count() == 0


def test_a_change_committed_by_another_process_wakes_the_waiter(api, db_url):
    """A second runtime on the same database stands for another replica (or worker): its
    commit reaches this process's waiter by NOTIFY (PostgreSQL) or the periodic check (SQLite)."""
    other = build(Settings(SIGNOFF_DATABASE_URL=db_url), config=api.rt.config(), clock=system_clock)
    try:
        rid = api.created()["id"]
        t, out = api.in_background("GET", f"/v1/actions/{rid}?wait=20")
        api.waiting()
        time.sleep(0.3)
        decided = time.monotonic()
        assert decide(other.context, request_id=rid, user="U0OWNER", decision="approve").outcome == "approved"
        t.join(15)
        assert out["response"].json()["status"] in ("approved", "executing")
        assert time.monotonic() - decided < 3  # within the check interval, far from the 20 s timeout
    finally:
        other.store.dispose()


def test_a_thousand_waiters_do_not_slow_other_requests(api):
    rid = api.created()["id"]
    others = [api.created()["id"] for _ in range(3)]

    async def main():
        transport = httpx.ASGITransport(app=api.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=60) as c:

            async def get(path, ago=0):
                # distinct signatures (timestamps apart within the window): 1,000 requests, no replays
                hdrs = signed_headers("deploy-bot", AGENTS["deploy-bot"], b"", ts=int(time.time()) - ago)
                return await c.get(path, headers=hdrs)

            waits = [asyncio.create_task(get(f"/v1/actions/{rid}?wait=30&n={i}", ago=i % 200)) for i in range(1000)]
            # all filed and past their first read: waiting, not queued for a thread
            while api.waiters.count(settled=True) < 1000:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)
            took = []
            for oid in others:
                t0 = time.monotonic()
                r = await get(f"/v1/actions/{oid}")
                took.append(time.monotonic() - t0)
                assert r.status_code == 200
            t0 = time.monotonic()
            await asyncio.to_thread(decide, api.ctx, request_id=rid, user="U0OWNER", decision="approve")
            done = await asyncio.wait_for(asyncio.gather(*waits), 30)
            return took, time.monotonic() - t0, done

    took, woke, done = asyncio.run(main())
    # The reads answered before the decision, and the decision woke every waiter: a read
    # queued behind the waiters would have come back only when they timed out (30 s),
    # pending. How fast is a figure (bench/waiters_bench.py), not asserted here.
    assert all(r.status_code == 200 and r.json()["status"] in ("approved", "executing") for r in done)
    print(f"\nplain reads among 1,000 waiters: max {max(took) * 1000:.0f} ms; decision → all answered {woke:.2f} s")
    assert api.waiters.count() == 0


# --------------------------------------------------------------------------- comments


def test_comment_is_201_recorded_and_in_the_thread(api):
    req = api.created()
    rid = req["id"]
    r = api.call("POST", f"/v1/actions/{rid}/comments", {"text": "Restarting only the canary first."})
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"id", "request"} and isinstance(body["id"], str) and body["id"]
    view = body["request"]
    assert view["id"] == rid and view["version"] == req["version"] + 1
    [entry] = view["thread"]
    assert entry["user"] == "deploy-bot" and entry["text"] == "Restarting only the canary first."
    assert entry["id"] == body["id"] and isinstance(entry["ts"], str)
    events = api.ctx.store.read(lambda s: [(e.type, e.actor, e.data) for e in Repo(s).events(rid)])
    replies = [e for e in events if e[0] == "thread.agent_reply"]
    assert replies == [
        (
            "thread.agent_reply",
            "deploy-bot",
            {"comment_id": body["id"], "text": "Restarting only the canary first.", "ts": entry["ts"]},
        )
    ]
    outbox = api.ctx.store.read(
        lambda s: [
            r.payload
            for r in s.scalars(select(OutboxRow).where(OutboxRow.kind == "slack.comment", OutboxRow.request_id == rid))
        ]
    )
    assert len(outbox) == 1 and outbox[0]["text"] == "Restarting only the canary first."


def test_comments_and_replies_interleave_oldest_first(api):
    rid = api.created()["id"]
    api.post_root(rid)
    assert api.reply("U0OWNER", "1000000001.000100", "an old reply")  # ts long before the comment
    c = api.call("POST", f"/v1/actions/{rid}/comments", {"text": "mine"}).json()
    now_ts = f"{int(time.time()) + 5}.000100"
    assert api.reply("U0SECOND", now_ts, "after")
    thread = api.call("GET", f"/v1/actions/{rid}").json()["thread"]
    assert [(m["user"], m["text"]) for m in thread] == [
        ("U0OWNER", "an old reply"),
        ("deploy-bot", "mine"),
        ("U0SECOND", "after"),
    ]
    assert thread[1]["id"] == c["id"]


def test_the_executor_may_comment_and_sees_the_thread(api):
    rid = api.created(workflow="pair", executor="other-bot")["id"]
    r = api.call("POST", f"/v1/actions/{rid}/comments", {"text": "executor here"}, agent="other-bot")
    assert r.status_code == 201, r.text
    got = api.call("GET", f"/v1/actions/{rid}", agent="other-bot").json()
    assert [m["user"] for m in got["thread"]] == ["other-bot"]


def test_comment_by_another_agent_is_404(api):
    rid = api.created()["id"]
    error_of(api.call("POST", f"/v1/actions/{rid}/comments", {"text": "hi"}, agent="outsider"), 404)
    error_of(api.call("POST", f"/v1/actions/{rid}/comments", {"text": "hi"}, agent="other-bot"), 404)
    error_of(api.call("POST", "/v1/actions/nope/comments", {"text": "hi"}), 404)


@pytest.mark.parametrize("status", ["rejected", "cancelled"])
def test_comment_on_a_final_request_is_409(api, status):
    rid = api.created()["id"]
    if status == "rejected":
        decide(api.ctx, request_id=rid, user="U0OWNER", decision="reject")
    else:
        cancel(api.ctx, agent_id="deploy-bot", request_id=rid)
    error_of(api.call("POST", f"/v1/actions/{rid}/comments", {"text": "too late"}), 409)


def test_comment_while_approved_is_accepted(api):
    rid = api.created()["id"]
    decide(api.ctx, request_id=rid, user="U0OWNER", decision="approve")
    assert api.call("POST", f"/v1/actions/{rid}/comments", {"text": "starting"}).status_code == 201


@pytest.mark.parametrize(
    "body, fields",
    [
        ({}, ["text"]),
        ({"text": None}, ["text"]),
        ({"text": 5}, ["text"]),
        ({"text": ["a"]}, ["text"]),
        ({"text": ""}, ["text"]),
        ({"text": "   "}, ["text"]),
        ({"text": "x" * 4001}, ["text"]),
        ({"text": "hi", "mood": "sad"}, ["mood"]),
        (["text"], ["text"]),
        ("hi", ["text"]),
    ],
)
def test_bad_comment_bodies_are_422(api, body, fields):
    rid = api.created()["id"]
    error_of(api.call("POST", f"/v1/actions/{rid}/comments", body), 422, fields)


def test_comment_of_4000_characters_is_accepted(api):
    rid = api.created()["id"]
    r = api.call("POST", f"/v1/actions/{rid}/comments", {"text": "é" * 4000})
    assert r.status_code == 201
    assert r.json()["request"]["thread"][0]["text"] == "é" * 4000


def test_not_json_comment_is_400(api):
    rid = api.created()["id"]
    error_of(api.call("POST", f"/v1/actions/{rid}/comments", b"{nope"), 400)


def test_a_comment_wakes_a_version_waiter(api):
    rid = api.created()["id"]
    t, out = api.in_background("GET", f"/v1/actions/{rid}?wait=20&version=1")
    api.waiting()
    api.call("POST", f"/v1/actions/{rid}/comments", {"text": "ping"})
    t.join(15)
    got = out["response"].json()
    assert got["version"] == 2 and got["thread"][0]["text"] == "ping"


def test_comment_is_posted_in_the_thread_escaped_and_not_recorded_back(api, fake_slack):
    client = web_client("xoxb-test", fake_slack.url)
    dispatcher = Dispatcher(api.ctx, SlackDelivery(api.ctx, client).handlers(), workers=2)
    try:
        rid = api.created()["id"]
        # posted before the root message is: the comment waits for it
        cid = api.call("POST", f"/v1/actions/{rid}/comments", {"text": EVIL}).json()["id"]

        def drained():
            dispatcher.run_once()
            return not api.ctx.store.read(
                lambda s: s.scalars(select(OutboxRow.id).where(OutboxRow.state == "pending")).first()
            )

        wait_until(drained, timeout=20, what="the outbox to drain", interval=0.1)
        posts = [c for c in fake_slack.calls_to("chat.postMessage") if c.ok]
        root = next(c for c in posts if not c.params.get("thread_ts"))
        [comment] = [c for c in posts if c.params.get("thread_ts") and "agent" in json.dumps(c.params.get("blocks"))]
        assert comment.params["thread_ts"] == root.response["ts"]
        shown = json.dumps(comment.params["blocks"], ensure_ascii=False) + comment.params["text"]
        assert "deploy-bot" in shown
        for token in ("<!channel>", "<@U0OWNER>", "<http://evil.example", "@here"):
            assert token not in shown, token
        assert "&lt;!channel&gt;" in shown
        # evidence of where it went; the agent's view did not change for it
        events = api.ctx.store.read(lambda s: [(e.type, e.data) for e in Repo(s).events(rid)])
        posted = [d for t, d in events if t == "slack.posted" and d.get("role") == "comment"]
        assert posted and posted[0]["comment_id"] == cid and posted[0]["thread_ts"] == root.response["ts"]
        view = api.call("GET", f"/v1/actions/{rid}").json()
        # the bot's own post, coming back as a thread message event, is not a human reply
        assert not api.reply(
            "U0BOT",
            comment.response["ts"],
            EVIL,
            thread_ts=root.response["ts"],
            bot_id="B0SIGNOFF",
            subtype="bot_message",
        )
        assert not api.reply("U0BOT", comment.response["ts"], EVIL, thread_ts=root.response["ts"], bot_id="B0SIGNOFF")
        after = api.call("GET", f"/v1/actions/{rid}").json()
        assert after["version"] == view["version"] and len(after["thread"]) == 1
    finally:
        dispatcher.stop()
        client.close()


def test_human_reply_edit_and_delete_show_in_the_thread(api):
    rid = api.created()["id"]
    api.post_root(rid)
    assert api.reply("U0OWNER", "1700000001.000200", "first")
    v1 = api.call("GET", f"/v1/actions/{rid}").json()
    assert v1["version"] == 2
    assert record_thread_message(
        api.ctx,
        event={
            "type": "message",
            "subtype": "message_changed",
            "channel": CHANNEL,
            "message": {"user": "U0OWNER", "ts": "1700000001.000200", "text": "second", "thread_ts": ROOT_TS},
            "previous_message": {"user": "U0OWNER", "ts": "1700000001.000200", "text": "first", "thread_ts": ROOT_TS},
        },
        event_id=None,
    )
    v2 = api.call("GET", f"/v1/actions/{rid}").json()
    assert v2["version"] == 3
    assert v2["thread"] == [{"user": "U0OWNER", "ts": "1700000001.000200", "text": "second", "edited": True}]
    assert record_thread_message(
        api.ctx,
        event={
            "type": "message",
            "subtype": "message_deleted",
            "channel": CHANNEL,
            "deleted_ts": "1700000001.000200",
            "previous_message": {"user": "U0OWNER", "ts": "1700000001.000200", "text": "second", "thread_ts": ROOT_TS},
        },
        event_id=None,
    )
    v3 = api.call("GET", f"/v1/actions/{rid}").json()
    assert v3["version"] == 4 and v3["thread"] == []


def test_evidence_shows_agent_comments_and_verifies(api):
    rid = api.created()["id"]
    api.post_root(rid)
    api.reply("U0OWNER", "1700000001.000200", "why?")
    api.call("POST", f"/v1/actions/{rid}/comments", {"text": "<b>because</b> p99 doubled"})
    decide(api.ctx, request_id=rid, user="U0OWNER", decision="approve")
    bundle = build_bundle(api.ctx.store, api.ctx.keys, rid, api.ctx.clock())
    agent = [m for m in bundle["thread"] if m.get("agent")]
    assert [(m["user"], m["text"]) for m in agent] == [("deploy-bot", "<b>because</b> p99 doubled")]
    assert [m["user"] for m in bundle["thread"]] == ["U0OWNER", "deploy-bot"]
    ok, reason = verify_bundle(bundle, api.ctx.keys)
    assert ok, reason
    assert bundle["integrity"]["ok"], bundle["integrity"]
    page = render_html(bundle)
    assert "&lt;b&gt;because&lt;/b&gt; p99 doubled" in page and "<b>because</b>" not in page
    assert "(agent)" in page
    result = verify_store(api.ctx.store, api.ctx.keys)
    assert result.ok, result.failures
