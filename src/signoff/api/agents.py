"""The agent API routes: parse, call one use-case, render."""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from signoff.api.auth import RefusalLog, authenticate
from signoff.api.waiting import Waiters
from signoff.domain.errors import DomainError, Invalid, NotFound
from signoff.domain.identifiers import REQUEST_ID_RE
from signoff.usecases import agent_ops, cancel, outcome
from signoff.usecases.ports import Context
from signoff.usecases.submit import submit


class BadBody(DomainError):
    code = "bad_request"
    http_status = 400


MAX_DEPTH = 64
SAFE_INT = 2**53 - 1  # RFC 8785 / I-JSON: integers beyond this have no exact JSON number
DIGITS = re.compile(r"^[0-9]{1,16}$")
MAX_WAIT = 60


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON value")


class _Duplicated(dict):
    """An object in which ``key`` appeared more than once (reported with its path)."""

    __slots__ = ("key",)


def _object(pairs: list[tuple[str, Any]]) -> dict:
    d = dict(pairs)
    if len(d) == len(pairs):
        return d
    seen: set[str] = set()
    dup = _Duplicated(d)
    dup.key = next(k for k, _ in pairs if k in seen or seen.add(k))
    return dup


class _HugeInt:
    """An integer literal too long to convert (Python refuses over 4,300 digits): reported
    with its path instead of Python's own advice."""


_HUGE = _HugeInt()
_INT_DIGITS = 20  # more than 2^53 needs; shorter literals are converted and range-checked


def _int(literal: str) -> int | _HugeInt:
    return int(literal) if len(literal) <= _INT_DIGITS else _HUGE


def parse_json(body: bytes) -> Any:
    """The parsed body: 400 when it is not UTF-8 JSON, 422 when it is JSON that cannot be
    kept exactly (a duplicated key, non-finite or out-of-range numbers, lone surrogates,
    NUL characters, too deep). Nothing else escapes."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadBody("body is not UTF-8") from None
    try:
        value = json.loads(text, parse_constant=_no_constant, object_pairs_hook=_object)
    except RecursionError:
        raise Invalid(f"the body is nested more than {MAX_DEPTH} levels deep", fields=["body"]) from None
    except json.JSONDecodeError as exc:
        raise BadBody(f"body is not JSON: {exc}") from None
    except ValueError:
        # Not a syntax error: NaN/Infinity, or an integer literal too long for int().
        # Parse again, keeping long integers as markers the check below names by path.
        value = _parse_keeping_huge_ints(text)
    problem = _ijson_problem(value)
    if problem:
        raise Invalid(problem[1], fields=[problem[0]])
    return value


def _parse_keeping_huge_ints(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_no_constant, parse_int=_int, object_pairs_hook=_object)
    except RecursionError:
        raise Invalid(f"the body is nested more than {MAX_DEPTH} levels deep", fields=["body"]) from None
    except ValueError as exc:
        raise BadBody(f"body is not JSON: {exc}") from None


def _ijson_problem(value: Any) -> tuple[str, str] | None:
    """(field path, message) of the first value the store and RFC 8785 cannot keep exactly."""
    stack: list[tuple[str, Any, int]] = [("", value, 0)]
    while stack:
        path, v, depth = stack.pop()
        where = path or "body"
        if depth > MAX_DEPTH:
            return ".".join(where.split(".")[:3]), f"the body is nested more than {MAX_DEPTH} levels deep"
        if isinstance(v, bool) or v is None:
            continue
        if isinstance(v, int):
            if abs(v) > SAFE_INT:
                return where, f"{where}: integers must be within ±(2^53 - 1)"
        elif isinstance(v, float):
            if v != v or v in (float("inf"), float("-inf")):
                return where, f"{where}: numbers must be finite (within ±1.8e308)"
        elif isinstance(v, str):
            if _bad_text(v):
                return where, f"{where}: text must be valid Unicode without NUL characters"
        elif isinstance(v, dict):
            if type(v) is _Duplicated:
                key = f"{path}.{v.key}" if path else v.key
                return key, f"{key}: duplicated key {v.key!r} (each key may appear once per object)"
            for k, item in v.items():
                if _bad_text(k):
                    return where, f"{where}: keys must be valid Unicode without NUL characters"
                stack.append((f"{path}.{k}" if path else k, item, depth + 1))
        elif isinstance(v, list):
            for i, item in enumerate(v):
                stack.append((f"{path}.{i}" if path else str(i), item, depth + 1))
        elif v is _HUGE:
            return where, f"{where}: integers must be within ±(2^53 - 1)"
    return None


def _bad_text(s: str) -> bool:
    if "\x00" in s:
        return True
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a \ud800-style escape
        return True
    return False


def checked_id(request_id: str) -> str:
    """Request ids are UUIDs; anything else names no request (and never reaches the store)."""
    if not REQUEST_ID_RE.match(request_id):
        raise NotFound("no such request")
    return request_id


def wait_params(request: Request) -> tuple[int | None, int | None]:
    """``?wait=S`` (whole seconds, 1–60) and ``?version=V`` (a non-negative integer); 422 otherwise."""
    out: list[int | None] = []
    for name, low, high in (("wait", 1, MAX_WAIT), ("version", 0, SAFE_INT)):
        values = request.query_params.getlist(name)
        if not values:
            out.append(None)
            continue
        if len(values) > 1 or not DIGITS.match(values[0]) or not low <= int(values[0]) <= high:
            what = f"whole seconds from 1 to {MAX_WAIT}" if name == "wait" else "a non-negative integer"
            raise Invalid(f"{name} must be given once, as {what}", fields=[name])
        out.append(int(values[0]))
    return out[0], out[1]


def submission_endpoint(ctx: Context, metrics, refusals: RefusalLog):
    """``POST /v1/actions``: a route of the router, and what ``FastSubmit`` calls directly."""

    async def post_action(request: Request):
        caller = await authenticate(ctx, request, refusals)
        body = parse_json(caller.body)
        if not isinstance(body, dict):
            raise Invalid("the body must be a JSON object", fields=["body"])
        key = request.headers.get("idempotency-key")
        if key is not None and not (1 <= len(key) <= 200 and key.isprintable()):
            raise Invalid("Idempotency-Key must be 1–200 printable characters", fields=["Idempotency-Key"])
        result = await run_in_threadpool(
            submit, ctx, agent_id=caller.agent_id, body=body, idempotency_key=key, signed=caller.signed
        )
        if result.created:
            metrics.submitted.labels(workflow=result.request["workflow"]).inc()
        return JSONResponse(result.request, status_code=201 if result.created else 200)

    return post_action


class FastSubmit:
    """ASGI middleware: ``POST /v1/actions`` goes straight to its endpoint, past FastAPI's
    routing, dependency resolution and exception middleware (about a third of the HTTP
    layer's time per submission); a failure is answered by the app's own exception handler
    for it, as the routed request would be. Everything else passes on unchanged."""

    def __init__(self, app, endpoint, exception_handlers: dict):
        self.app = app
        self.endpoint = endpoint
        self.handlers = exception_handlers

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or _route_path(scope) != "/v1/actions":
            return await self.app(scope, receive, send)
        request = Request(scope, receive)
        try:
            response = await self.endpoint(request)
        except Exception as exc:
            handler = next((self.handlers[c] for c in type(exc).__mro__ if c in self.handlers), None)
            if handler is None:
                raise
            response = await handler(request, exc)
        await response(scope, receive, send)


def _route_path(scope) -> str:
    """The path as the router matches it (without the app's ``root_path``)."""
    path, root = scope["path"], scope.get("root_path") or ""
    return path[len(root) :] if root and path.startswith(root) else path


def router(ctx: Context, metrics, refusals: RefusalLog, waiters: Waiters | None = None, post_action=None) -> APIRouter:
    r = APIRouter()
    waiters = waiters or Waiters(ctx.store)
    r.post("/v1/actions")(post_action or submission_endpoint(ctx, metrics, refusals))

    @r.get("/v1/actions/{request_id}")
    async def get_action(request_id: str, request: Request):
        caller = await authenticate(ctx, request, refusals)
        wait, version = wait_params(request)
        request_id = checked_id(request_id)

        def read():
            return run_in_threadpool(agent_ops.get_request, ctx, agent_id=caller.agent_id, request_id=request_id)

        if wait is None:
            return JSONResponse(await read())
        # Without a version: until it is decided; with one: until it moves past it.
        done = (lambda v: v["status"] != "pending") if version is None else (lambda v: v["version"] > version)
        return JSONResponse(await waiters.wait(request_id, read, done, timeout=wait))

    @r.post("/v1/actions/{request_id}/comments")
    async def post_comment(request_id: str, request: Request):
        caller = await authenticate(ctx, request, refusals)
        request_id = checked_id(request_id)
        body = parse_json(caller.body)
        result = await run_in_threadpool(
            agent_ops.comment, ctx, agent_id=caller.agent_id, request_id=request_id, body=body
        )
        return JSONResponse(result, status_code=201)

    @r.post("/v1/actions/{request_id}/cancel")
    async def cancel_action(request_id: str, request: Request):
        caller = await authenticate(ctx, request, refusals)
        request_id = checked_id(request_id)
        view = await run_in_threadpool(cancel.cancel, ctx, agent_id=caller.agent_id, request_id=request_id)
        return JSONResponse(view)

    @r.post("/v1/actions/{request_id}/outcome")
    async def post_outcome(request_id: str, request: Request):
        caller = await authenticate(ctx, request, refusals)
        request_id = checked_id(request_id)
        body = parse_json(caller.body)
        view = await run_in_threadpool(
            outcome.record_outcome, ctx, agent_id=caller.agent_id, request_id=request_id, body=body
        )
        metrics.outcomes.labels(status=view["status"]).inc()
        return JSONResponse(view)

    return r
