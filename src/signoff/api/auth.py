"""Agent authentication (contract §3): HMAC over ``v1:<timestamp>:<raw body>``."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from signoff.domain.agent_signature import agent_signature
from signoff.domain.errors import DomainError, Unauthorized
from signoff.usecases.ports import Context

MAX_BODY = 256 * 1024
WINDOW = 300


class TooLarge(DomainError):
    code = "payload_too_large"
    http_status = 413


@dataclass(frozen=True)
class Caller:
    agent_id: str
    body: bytes


async def read_body(request: Request) -> bytes:
    """The raw body, refusing more than 256 KiB without reading it all."""
    length = request.headers.get("content-length")
    if length is not None:
        try:
            if int(length) > MAX_BODY:
                raise TooLarge("request body is over 256 KiB")
        except ValueError:
            raise DomainError("invalid Content-Length") from None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise TooLarge("request body is over 256 KiB")
        chunks.append(chunk)
    return b"".join(chunks)


def verify_hmac(ctx: Context, headers, body: bytes) -> str:
    """The agent id when the request is signed by a known agent; Unauthorized otherwise."""
    agent_id = headers.get("x-signoff-agent")
    ts = headers.get("x-signoff-timestamp")
    sig = headers.get("x-signoff-signature")
    if not agent_id or not ts or not sig:
        raise Unauthorized("missing X-Signoff-Agent, X-Signoff-Timestamp or X-Signoff-Signature")
    try:
        ts_int = int(ts)
    except ValueError:
        raise Unauthorized("X-Signoff-Timestamp must be unix seconds") from None
    if abs(ctx.clock().timestamp() - ts_int) > WINDOW:
        raise Unauthorized("timestamp is more than 300 s from the server's clock")
    secret = ctx.config().agent_secret(agent_id)
    if secret is None:
        # Same answer for an unknown agent and a bad signature: nothing to enumerate.
        raise Unauthorized("unknown agent or bad signature")
    # Compare bytes: header text may hold any Latin-1 character, and compare_digest
    # refuses non-ASCII str.
    given = sig.strip().encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(agent_signature(secret, ts, body).encode(), given):
        raise Unauthorized("unknown agent or bad signature")
    return agent_id


async def authenticate(ctx: Context, request: Request) -> Caller:
    body = await read_body(request)
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer ") and not request.headers.get("x-signoff-signature"):
        from signoff.api.oidc import verify_bearer

        # In a worker thread: a key refresh may fetch the issuer's JWKS over the network.
        agent_id = await run_in_threadpool(verify_bearer, ctx, request.headers.get("x-signoff-agent"),
                                           auth[7:].strip())
        return Caller(agent_id, body)
    return Caller(verify_hmac(ctx, request.headers, body), body)
