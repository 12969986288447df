"""The FastAPI application: agent API, health, metrics, JWKS, evidence pages, Slack."""

from __future__ import annotations

import contextlib
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from signoff.api import agents, stepup
from signoff.api.auth import RefusalLog
from signoff.api.deadline import ReadDeadline
from signoff.api.metrics import Metrics
from signoff.api.waiting import Waiters
from signoff.domain.errors import DomainError, Unauthorized
from signoff.logs import log_context
from signoff.store.db import Conflicted
from signoff.usecases.ports import Context

log = logging.getLogger(__name__)


def error_body(code: str, message: str, fields: list[str] | None = None) -> dict:
    err = {"code": code, "message": message}
    if fields:
        err["fields"] = fields
    return {"error": err}


def refusal_reason(exc: Unauthorized) -> str:
    """A refused authentication's reason, as a metric label (a few fixed values)."""
    reason = getattr(exc, "reason", None)
    if reason:
        return str(reason)
    text = exc.message.lower()
    if "missing" in text:
        return "missing_headers"
    if "timestamp" in text:
        return "timestamp"
    if "bearer" in text or "token" in text:
        return "bearer"
    if "signature" in text or "unknown agent" in text:
        return "bad_signature"
    return "other"


class LogContext:
    """Binds the request id in the path and the agent named in the headers to every line
    logged while a request is handled (the agent as claimed: a refused authentication is
    logged with the agent it claimed to be)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        fields = {}
        parts = scope.get("path", "").split("/")
        if len(parts) >= 4 and parts[1] == "v1" and parts[2] == "actions" and parts[3]:
            fields["request_id"] = parts[3][:64]
        for name, value in scope.get("headers") or ():
            if name == b"x-signoff-agent":
                fields["agent"] = value.decode("latin-1")[:100]
                break
        with log_context(**fields):
            return await self.app(scope, receive, send)


def _describe(app: FastAPI) -> None:
    """``/openapi.json`` says what the routes really take and answer; ``/docs`` renders it."""
    from signoff.api.openapi import openapi_document, reference_page

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = openapi_document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return HTMLResponse(reference_page(openapi()))


def create_app(
    ctx: Context,
    *,
    slack_endpoint=None,
    slack_readiness=None,
    metrics: Metrics | None = None,
    read_timeout: float | None = 10.0,
    refusals: RefusalLog | None = None,
) -> FastAPI:
    """``slack_readiness``: a ``SlackReadiness`` for ``/readyz`` (absent: Slack is not checked).
    ``read_timeout``: seconds a client has to send a request's body (``None``: no deadline);
    a client too slow gets 408 (see ``api.deadline``). ``refusals`` logs refused agent
    authentications (tests pass one with their own clock)."""
    # The app owns the registry of agents waiting on requests (long-polls); every commit
    # that changes a request visibly wakes its waiters (Context.changes).
    waiters = Waiters(ctx.store)
    ctx.changes = waiters

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        try:
            yield
        finally:
            waiters.close()

    app = FastAPI(title="signoff", docs_url=None, redoc_url=None, openapi_url="/openapi.json", lifespan=lifespan)
    _describe(app)
    metrics = metrics or Metrics(ctx)
    app.state.metrics = metrics
    app.state.waiters = waiters
    refusals = refusals or RefusalLog()
    post_action = agents.submission_endpoint(ctx, metrics, refusals)
    # innermost (added first): inside the log context and the read deadline
    app.add_middleware(agents.FastSubmit, endpoint=post_action, exception_handlers=app.exception_handlers)
    app.add_middleware(LogContext)
    if read_timeout is not None:
        app.add_middleware(ReadDeadline, timeout=read_timeout, on_timeout=metrics.count_timeout)

    @app.exception_handler(ClientDisconnect)
    async def _hung_up(req: Request, _exc: ClientDisconnect):
        # The client went away (or ran out of time, see api.deadline) before its request was in:
        # nobody is left to answer, and it is not the server's error.
        log.debug(
            "client %s hung up before sending all of %s %s",
            req.client.host if req.client else "?",
            req.method,
            req.url.path,
        )
        return Response(status_code=400)

    @app.exception_handler(DomainError)
    async def _domain(_req: Request, exc: DomainError):
        metrics.http_errors.labels(status=str(exc.http_status)).inc()
        if isinstance(exc, Unauthorized):
            metrics.auth_refused.labels(reason=refusal_reason(exc)).inc()
        return JSONResponse(error_body(exc.code, exc.message, exc.fields), status_code=exc.http_status)

    @app.exception_handler(Conflicted)
    async def _conflict(_req: Request, exc: Conflicted):
        return JSONResponse(
            error_body("busy", "the request raced another change; retry"), status_code=503, headers={"Retry-After": "1"}
        )

    @app.exception_handler(OperationalError)
    async def _db_down(_req: Request, exc: OperationalError):
        # The database is unreachable or refused the connection: nothing was changed; retry.
        log.error("database unavailable: %s", exc.orig if exc.orig is not None else exc)
        metrics.http_errors.labels(status="503").inc()
        return JSONResponse(
            error_body("unavailable", "the database is unavailable; nothing was changed, retry"),
            status_code=503,
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError):
        return JSONResponse(error_body("invalid_request", "invalid request"), status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(_req: Request, exc: Exception):
        log.error("unexpected error", exc_info=exc)
        metrics.http_errors.labels(status="500").inc()
        return JSONResponse(error_body("internal", "internal error; nothing was changed"), status_code=500)

    app.include_router(agents.router(ctx, metrics, refusals, waiters, post_action=post_action))
    app.include_router(stepup.router(ctx))

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        """Ready when the database answers and Slack does not refuse the token."""

        def ping():
            with ctx.store.engine.connect() as conn:
                conn.execute(text("SELECT 1"))

        body: dict = {"status": "ok", "database": {"status": "ok"}}
        try:
            await run_in_threadpool(ping)
        except Exception as exc:
            body["status"], body["reason"] = "unavailable", f"database: {type(exc).__name__}"
            body["database"] = {"status": "unavailable", "reason": type(exc).__name__}
        if slack_readiness is not None:
            body["slack"] = slack = await run_in_threadpool(slack_readiness.check)
            if slack["status"] == "refused" and body["status"] == "ok":
                body["status"], body["reason"] = "unavailable", f"slack: the bot token is refused ({slack['reason']})"
        return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)

    @app.get("/metrics")
    async def metrics_endpoint():
        body = await run_in_threadpool(metrics.render)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/.well-known/jwks.json")
    async def jwks():
        return JSONResponse(ctx.keys.jwks(), headers={"Cache-Control": "public, max-age=300"})

    @app.get("/evidence/{request_id}")
    async def evidence_page(request_id: str, exp: str = "", sig: str = ""):
        from signoff.evidence.export import build_bundle, render_html
        from signoff.evidence.links import check_link

        # exp and sig as given: check_link reads only the spelling it issued
        if not check_link(ctx.keys, request_id, exp, sig, int(ctx.clock().timestamp())):
            return JSONResponse(error_body("forbidden", "missing, altered or expired evidence link"), status_code=403)
        try:
            bundle = await run_in_threadpool(build_bundle, ctx.store, ctx.keys, request_id, ctx.clock())
        except LookupError:
            return JSONResponse(error_body("not_found", "no such request"), status_code=404)
        return HTMLResponse(render_html(bundle))

    if slack_endpoint is not None:
        app.add_api_route("/slack/events", slack_endpoint, methods=["POST"])
    else:

        @app.post("/slack/events")
        async def slack_disabled():
            return JSONResponse(error_body("slack_disabled", "Slack is not configured"), status_code=404)

    return app
