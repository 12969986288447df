"""Agent authentication: the ``X-Signoff-*`` HMAC signature (v1 or v2, see
``domain.agent_signature``) or an OIDC bearer token. Refusals are logged, rate-limited."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from signoff.domain import agent_signature as sig
from signoff.domain.errors import DomainError, Unauthorized
from signoff.usecases.ports import Context

log = logging.getLogger(__name__)

MAX_BODY = 256 * 1024
WINDOW = 300


class TooLarge(DomainError):
    code = "payload_too_large"
    http_status = 413


class Refused(Unauthorized):
    """A 401 that also says why, in one word, for the log (never shown to the caller)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Caller:
    agent_id: str
    body: bytes
    # Names the signed request (agent, timestamp, body) independently of the version it
    # was signed with: the same bytes sent again have the same ``signed``. None for a
    # bearer token.
    signed: str | None = None


class RefusalLog:
    """Logs refused agent authentications: agent id, reason, remote address — never a
    secret, a signature or a body. At most one line per agent and reason per ``interval``
    seconds of ``clock`` (monotonic); the next line counts those held back. Agent ids that
    name no agent share one line per reason, so made-up ids cannot flood the log."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        interval: float = 60.0,
        emit: Callable[[str], None] | None = None,
    ):
        self.clock = clock
        self.interval = interval
        self._emit = emit or (lambda line: log.warning("%s", line))
        self._last: dict[tuple[str | None, str], tuple[float, int]] = {}  # key -> (logged at, held back)
        self._lock = threading.Lock()

    def refused(self, agent: str | None, reason: str, remote: str | None, *, known: bool) -> None:
        key = (agent if known else None, reason)
        now = self.clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last[0] < self.interval:
                self._last[key] = (last[0], last[1] + 1)
                return
            held = last[1] if last is not None else 0
            self._last[key] = (now, 0)
        shown = ascii(agent[:100]) if agent else "-"
        line = f"agent authentication refused: agent={shown} reason={reason} remote={remote or '-'}"
        if held:
            line += f" ({held} more for this agent and reason since the last line)"
        self._emit(line)


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


def request_target(scope) -> bytes:
    """The request target as the client sent it: the raw (still percent-encoded) path,
    plus ``?`` and the query when there is one. Never re-encoded: v2 signs these bytes."""
    path = scope.get("raw_path")
    if not path:  # a server that does not pass the raw path: the closest we can rebuild
        path = quote(scope.get("root_path", "") + scope["path"]).encode("ascii")
    query = scope.get("query_string") or b""
    return path + b"?" + query if query else path


def verify_hmac(ctx: Context, headers, body: bytes, *, method: str, target: bytes) -> tuple[str, str]:
    """(agent id, the ``signed`` name of the request) when the request is signed by a
    known agent in a version it accepts; Refused otherwise.

    A header with v2 is checked as v2 only; v1 alone is checked as v1, unless the agent
    accepts v2 only. An agent with ``signature: v1`` is checked as v1 only.
    """
    agent_id = headers.get("x-signoff-agent")
    ts = headers.get("x-signoff-timestamp")
    given = headers.get("x-signoff-signature")
    if not agent_id or not ts or not given:
        raise Refused("missing_headers", "missing X-Signoff-Agent, X-Signoff-Timestamp or X-Signoff-Signature")
    try:
        ts_int = int(ts)
    except ValueError:
        raise Refused("bad_timestamp", "X-Signoff-Timestamp must be unix seconds") from None
    if abs(ctx.clock().timestamp() - ts_int) > WINDOW:
        raise Refused("stale_timestamp", "timestamp is more than 300 s from the server's clock")
    config = ctx.config()
    secret = config.agent_secret(agent_id)
    if secret is None:
        # Same answer for an unknown agent and a bad signature: nothing to enumerate.
        raise Refused("unknown_agent", "unknown agent or bad signature")
    try:
        found = sig.parse_header(given)
    except sig.MalformedSignature as exc:
        raise Refused("malformed_signature", str(exc)) from None
    accepted = config.agent(agent_id).signature
    version = accepted or (sig.V2 if sig.V2 in found else sig.V1)
    if version not in found:
        if not found:
            raise Refused("malformed_signature", "X-Signoff-Signature carries neither v1 nor v2")
        # Only a good signature learns which version this agent wants.
        other = next(iter(found))
        if not sig.matches(_expected(other, secret, ts, body, method, target), found[other]):
            raise Refused("bad_signature", "unknown agent or bad signature")
        raise Refused(f"{other}_refused", f"this agent signs {version}: a {other} signature is not accepted")
    if not sig.matches(_expected(version, secret, ts, body, method, target), found[version]):
        raise Refused("bad_signature", "unknown agent or bad signature")
    return agent_id, hashlib.sha256(ts.encode("utf-8", "surrogateescape") + b":" + body).hexdigest()


def _expected(version: str, secret: bytes, ts: str, body: bytes, method: str, target: bytes) -> str:
    if version == sig.V2:
        return sig.sign_v2(secret, ts, method, target, body)
    return sig.sign_v1(secret, ts, body)


async def authenticate(ctx: Context, request: Request, refusals: RefusalLog) -> Caller:
    body = await read_body(request)
    try:
        return await _authenticate(ctx, request, body)
    except Refused as exc:
        agent = request.headers.get("x-signoff-agent")
        known = bool(agent) and ctx.config().agent(agent) is not None
        refusals.refused(agent, exc.reason, request.client.host if request.client else None, known=known)
        raise


async def _authenticate(ctx: Context, request: Request, body: bytes) -> Caller:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer ") and not request.headers.get("x-signoff-signature"):
        from signoff.api.oidc import verify_bearer

        try:
            # In a worker thread: a key refresh may fetch the issuer's JWKS over the network.
            agent_id = await run_in_threadpool(
                verify_bearer, ctx, request.headers.get("x-signoff-agent"), auth[7:].strip()
            )
        except Unauthorized as exc:
            raise Refused("bad_bearer_token", exc.message) from None
        return Caller(agent_id, body)
    agent_id, signed = verify_hmac(
        ctx, request.headers, body, method=request.method, target=request_target(request.scope)
    )
    return Caller(agent_id, body, signed)
