"""``signoff mcp``: an MCP server over stdio through which an AI agent asks for approval.

It acts as one agent (SIGNOFF_URL, SIGNOFF_AGENT, SIGNOFF_AGENT_SECRET) and offers the
agent's side only — propose, read, wait, cancel, report, comment. Nothing here can approve:
approval happens in Slack, by a person.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.types import CallToolResult, TextContent
from pydantic import Field

from signoff.client import AsyncClient, SignoffError, WaitTimeout
from signoff.client import _core as core

RequestId = Annotated[str, Field(min_length=1, max_length=100, description="the request id")]
WaitSeconds = Annotated[float, Field(ge=0, le=600)]

INSTRUCTIONS = """\
signoff puts a human in the loop before a production action. Call request_approval with the
exact action you intend to run (type, target, environment, parameters), why, and how to undo
it; a person approves or rejects it in Slack. Run the action only once the request's status is
"approved" or "executing", then call report_outcome. "rejected", "expired" and "cancelled" mean
do not run it. A person may reply in the request's Slack thread: the replies are in "thread";
answer with comment."""


def result(view: dict[str, Any]) -> CallToolResult:
    """A request object as a tool result: JSON text and the same object as structured content."""
    return CallToolResult(
        content=[TextContent(type="text", text=json.dumps(view, ensure_ascii=False))], structured_content=view
    )


def failure(text: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


async def guarded(call: Callable[[], Awaitable[dict[str, Any]]]) -> CallToolResult:
    """The call's request object, or a tool error: the API's (with its HTTP status and
    message) or a refused argument."""
    try:
        return result(await call())
    except SignoffError as exc:
        status = f"HTTP {exc.status}" if exc.status is not None else "signoff unreachable"
        fields = f" (fields: {', '.join(exc.fields)})" if exc.fields else ""
        return failure(f"{status} {exc.code}: {exc.message}{fields}")
    except ValueError as exc:
        return failure(str(exc))


def build(client: AsyncClient) -> MCPServer:
    """The MCP server, its tools calling signoff through ``client``."""
    server: MCPServer = MCPServer(name="signoff", instructions=INSTRUCTIONS)

    @server.tool(
        description="Ask a person to approve one action before you run it. Returns the request "
        'object after waiting up to wait_seconds for the decision (status "pending" if '
        "nobody has decided yet: call get_request with wait_seconds to keep waiting)."
    )
    async def request_approval(
        workflow: Annotated[str, Field(min_length=1, description="the signoff workflow, e.g. prod-restart")],
        title: Annotated[str, Field(min_length=1, max_length=200, description="one line a person reads first")],
        action: Annotated[
            dict[str, Any], Field(description="the exact action: {type, target, environment?, parameters?}")
        ],
        justification: Annotated[str, Field(min_length=1, max_length=4000, description="why it is needed")],
        risk: Literal["low", "medium", "high", "critical"] = "medium",
        rollback: Annotated[
            dict[str, Any] | None,
            Field(description="how to undo it: {description, action?}; required for high and critical risk"),
        ] = None,
        prompt: Annotated[str | None, Field(description="the task or conversation that led here")] = None,
        wait_seconds: Annotated[WaitSeconds, Field(description="seconds to wait for a decision (0–600)")] = 50,
    ) -> CallToolResult:
        async def call() -> dict[str, Any]:
            view = await client.submit(
                workflow, title, action, justification, risk=risk, rollback=rollback, prompt=prompt
            )
            if wait_seconds <= 0 or core.satisfied(view, "decided"):
                return view
            return await settle(client, view["id"], wait_seconds, "decided")

        return await guarded(call)

    @server.tool(
        description="The request object. With wait_seconds, wait up to that long for it to change "
        "(a decision, a grant, an outcome, a reply in its thread)."
    )
    async def get_request(
        id: RequestId,
        wait_seconds: Annotated[WaitSeconds, Field(description="seconds to wait for a change (0–600)")] = 0,
    ) -> CallToolResult:
        async def call() -> dict[str, Any]:
            if wait_seconds <= 0:
                return await client.get(id)
            return await settle(client, id, wait_seconds, "changed")

        return await guarded(call)

    @server.tool(description="Withdraw a pending request you submitted.")
    async def cancel_request(id: RequestId) -> CallToolResult:
        return await guarded(lambda: client.cancel(id))

    @server.tool(description="Report how running an approved action went.")
    async def report_outcome(
        id: RequestId,
        status: Literal["succeeded", "failed"],
        detail: Annotated[str, Field(max_length=4000, description="what happened")] = "",
    ) -> CallToolResult:
        return await guarded(lambda: client.outcome(id, status, detail))

    @server.tool(description="Post a reply in the request's Slack thread, as this agent.")
    async def comment(id: RequestId, text: Annotated[str, Field(min_length=1, max_length=4000)]) -> CallToolResult:
        return await guarded(lambda: client.comment(id, text))

    return server


async def settle(client: AsyncClient, id: str, seconds: float, until: core.Until) -> dict[str, Any]:
    """The request once ``until`` holds for it, or as it is after ``seconds``."""
    try:
        return await client.wait(id, timeout=seconds, until=until)
    except WaitTimeout as exc:
        return exc.request


async def serve() -> None:
    async with AsyncClient() as client:
        await build(client).run_stdio_async()


def run() -> int:
    """Serve MCP on stdin/stdout until the client closes it."""
    anyio.run(serve)
    return 0
