"""``signoff mcp`` through the MCP SDK's own stdio client, against ``signoff serve``: each
tool, an API error, refused arguments. Needs a server that accepts signature v2."""

from __future__ import annotations

import json
import sys
import uuid

import anyio
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from e2e.harness import base_env

TOOLS = {"request_approval", "get_request", "cancel_request", "report_outcome", "comment"}


def text(result) -> str:
    return "".join(c.text for c in result.content if getattr(c, "type", None) == "text")


def run_session(world, body, env: dict | None = None):
    async def main():
        params = StdioServerParameters(
            command=sys.executable,
            args=["-m", "signoff.cli", "mcp"],
            env={**base_env(), **(world.agent_env() if env is None else env)},
        )
        with anyio.fail_after(60):
            async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
                await session.initialize()
                return await body(session)

    return anyio.run(main)


def test_the_tools_act_as_the_agent(agent_world):
    title = f"MCP restart {uuid.uuid4().hex[:8]}"
    action = {"type": "service.restart", "target": "checkout-api", "environment": "production"}

    async def body(session):
        tools = {t.name: t for t in (await session.list_tools()).tools}
        assert set(tools) >= TOOLS
        schema = tools["request_approval"].input_schema
        assert set(schema["required"]) == {"workflow", "title", "action", "justification"}
        assert schema["properties"]["wait_seconds"]["maximum"] == 600

        # nobody decides within 1 s: the request comes back pending
        r = await session.call_tool(
            "request_approval",
            {
                "workflow": "prod-restart",
                "title": title,
                "action": action,
                "justification": "p99 doubled",
                "wait_seconds": 1,
            },
        )
        assert not r.is_error, text(r)
        view = json.loads(text(r))
        assert view == r.structured_content and view["status"] == "pending"
        rid = view["id"]

        got = await session.call_tool("get_request", {"id": rid})
        assert not got.is_error and got.structured_content["id"] == rid

        # a person approves in Slack while get_request waits
        clicker = agent_world.click_later(title)
        got = await session.call_tool("get_request", {"id": rid, "wait_seconds": 20})
        await anyio.to_thread.run_sync(clicker.join, 15)
        assert got.structured_content["status"] in ("approved", "executing"), text(got)

        done = await session.call_tool("report_outcome", {"id": rid, "status": "succeeded", "detail": "ok"})
        assert not done.is_error, text(done)
        assert done.structured_content["status"] == "succeeded"

        # a second outcome is the API's 409, as a tool error
        again = await session.call_tool("report_outcome", {"id": rid, "status": "failed"})
        assert again.is_error and "409" in text(again)

        other = await session.call_tool(
            "request_approval",
            {
                "workflow": "prod-restart",
                "title": title + " 2",
                "action": action,
                "justification": "x",
                "wait_seconds": 0,
            },
        )
        oid = other.structured_content["id"]
        cancelled = await session.call_tool("cancel_request", {"id": oid})
        assert not cancelled.is_error and cancelled.structured_content["status"] == "cancelled"
        return rid

    run_session(agent_world, body)


BAD = [
    (
        "request_approval",
        {
            "workflow": "prod-restart",
            "title": "t",
            "action": {"type": "x", "target": "y"},
            "justification": "j",
            "wait_seconds": 601,
        },
        "wait_seconds",
    ),
    (
        "request_approval",
        {"workflow": "prod-restart", "title": "t", "action": "restart it", "justification": "j"},
        "action",
    ),
    (
        "request_approval",
        {"workflow": "prod-restart", "action": {"type": "x", "target": "y"}, "justification": "j"},
        "title",
    ),
    (
        "request_approval",
        {
            "workflow": "prod-restart",
            "title": "t",
            "action": {"type": "x", "target": "y"},
            "justification": "j",
            "risk": "extreme",
        },
        "risk",
    ),
    ("get_request", {"id": "x", "wait_seconds": -1}, "wait_seconds"),
    ("get_request", {"id": ""}, "id"),
    ("report_outcome", {"id": "x", "status": "done"}, "status"),
    ("comment", {"id": "x", "text": ""}, "text"),
    ("cancel_request", {}, "id"),
]


def test_api_errors_and_bad_arguments_are_tool_errors_and_nothing_approves(agent_world):
    async def body(session):
        r = await session.call_tool("get_request", {"id": str(uuid.uuid4())})
        assert r.is_error and "404" in text(r) and "no such request" in text(r)
        r = await session.call_tool(
            "request_approval",
            {
                "workflow": "prod-restart",
                "title": "t",
                "action": {"type": "x", "target": "y"},
                "justification": "j",
                "risk": "high",
            },
        )
        assert r.is_error and "422" in text(r) and "rollback" in text(r)
        r = await session.call_tool(
            "request_approval",
            {"workflow": "nope", "title": "t", "action": {"type": "x", "target": "y"}, "justification": "j"},
        )
        assert r.is_error and "404" in text(r)
        for tool, args, name in BAD:
            r = await session.call_tool(tool, args)
            assert r.is_error, (tool, args, text(r))
            assert name in text(r), (tool, args, text(r))
        names = {t.name for t in (await session.list_tools()).tools}
        assert not any(w in n for n in names for w in ("approve", "decide", "reject"))
        r = await session.call_tool("approve", {"id": "x"})
        assert r.is_error
        # the server is still there after all that
        ok = await session.call_tool("get_request", {"id": str(uuid.uuid4())})
        assert ok.is_error and "404" in text(ok)

    run_session(agent_world, body)


def test_comment_posts_in_the_thread(agent_world):
    """Needs the server's POST /v1/actions/{id}/comments."""
    title = f"MCP comment {uuid.uuid4().hex[:8]}"

    async def body(session):
        r = await session.call_tool(
            "request_approval",
            {
                "workflow": "prod-restart",
                "title": title,
                "action": {"type": "x", "target": "y"},
                "justification": "j",
                "wait_seconds": 0,
            },
        )
        rid = r.structured_content["id"]
        c = await session.call_tool("comment", {"id": rid, "text": "restarting one pod at a time"})
        assert not c.is_error, text(c)
        assert c.structured_content["id"] == rid
        assert c.structured_content["thread"][-1]["text"] == "restarting one pod at a time"
        assert c.structured_content["thread"][-1]["user"] == "deploy-bot"
        await session.call_tool("cancel_request", {"id": rid})

    run_session(agent_world, body)


def test_without_an_identity_it_says_what_is_missing(agent_world):
    import subprocess

    r = subprocess.run(
        [sys.executable, "-m", "signoff.cli", "mcp"],
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 2 and "SIGNOFF_URL" in r.stderr
