"""The agent API routes: parse, call one use-case, render."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from signoff.api.auth import authenticate
from signoff.domain.errors import DomainError, Invalid
from signoff.usecases import agent_ops
from signoff.usecases.ports import Context
from signoff.usecases.submit import submit


class BadBody(DomainError):
    code = "bad_request"
    http_status = 400


def parse_json(body: bytes) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadBody("body is not UTF-8") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise BadBody(f"body is not JSON: {exc}") from None


def router(ctx: Context, metrics) -> APIRouter:
    r = APIRouter()

    @r.post("/v1/actions")
    async def post_action(request: Request):
        caller = await authenticate(ctx, request)
        body = parse_json(caller.body)
        if not isinstance(body, dict):
            raise Invalid("the body must be a JSON object", fields=["body"])
        key = request.headers.get("idempotency-key")
        if key is not None and not (1 <= len(key) <= 200):
            raise Invalid("Idempotency-Key must be 1–200 characters", fields=["Idempotency-Key"])
        result = await run_in_threadpool(submit, ctx, agent_id=caller.agent_id, body=body, idempotency_key=key)
        if result.created:
            metrics.submitted.labels(workflow=result.request["workflow"]).inc()
        return JSONResponse(result.request, status_code=201 if result.created else 200)

    @r.get("/v1/actions/{request_id}")
    async def get_action(request_id: str, request: Request):
        caller = await authenticate(ctx, request)
        view = await run_in_threadpool(agent_ops.get_request, ctx, agent_id=caller.agent_id, request_id=request_id)
        return JSONResponse(view)

    @r.post("/v1/actions/{request_id}/cancel")
    async def cancel_action(request_id: str, request: Request):
        caller = await authenticate(ctx, request)
        view = await run_in_threadpool(agent_ops.cancel, ctx, agent_id=caller.agent_id, request_id=request_id)
        return JSONResponse(view)

    @r.post("/v1/actions/{request_id}/outcome")
    async def post_outcome(request_id: str, request: Request):
        caller = await authenticate(ctx, request)
        body = parse_json(caller.body)
        view = await run_in_threadpool(agent_ops.record_outcome, ctx, agent_id=caller.agent_id,
                                       request_id=request_id, body=body)
        metrics.outcomes.labels(status=view["status"]).inc()
        return JSONResponse(view)

    return r
