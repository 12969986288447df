"""Step-up routes: ``GET /step-up/{request id}`` sends the approver to the identity
provider; ``GET /step-up/callback`` is where the provider sends them back. Thin: parse,
call the protocol (signoff.stepup.oidc) and the use-case (usecases.step_up), render a page.
"""

from __future__ import annotations

import hashlib
import html
import logging
import re

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from signoff.domain.step_up import Refusal
from signoff.stepup.oidc import PROVIDER, Provider
from signoff.usecases import step_up
from signoff.usecases.ports import Context

log = logging.getLogger(__name__)

CALLBACK = "/step-up/callback"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9-]{1,40}$")

# HTTP status of each refusal's page.
STATUS = {"bad_state": 400, "replayed": 400, "expired_flow": 400, "not_pending": 409, "not_step_up": 404,
          "provider_error": 502, "token_invalid": 401}


def cookie_name(state: str) -> str:
    """One cookie per flow (an approver may have several open), named after its state."""
    return "signoff_step_up_" + hashlib.sha256(state.encode()).hexdigest()[:16]


def page(title: str, message: str, status: int = 200, *, ok: bool = False) -> HTMLResponse:
    colour = "#1a7f37" if ok else "#cf222e"
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>signoff — {html.escape(title)}</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em;color:#1f2328}}
h1{{font-size:1.4em;color:{colour}}}p.small{{color:#59636e;font-size:.9em}}</style></head>
<body><h1>{html.escape(title)}</h1><p>{html.escape(message)}</p>
<p class="small">You can close this window and go back to Slack.</p></body></html>"""
    return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


def refused_page(refusal: Refusal) -> HTMLResponse:
    return page("Not approved", f"Nothing was recorded: {refusal.reason}.", STATUS.get(refusal.code, 403))


def router(ctx: Context, provider: Provider = PROVIDER) -> APIRouter:
    r = APIRouter()

    def redirect_uri() -> str:
        return ctx.public_url + CALLBACK

    @r.get(CALLBACK)
    def callback(request: Request, state: str = "", code: str = "", error: str = "", error_description: str = ""):
        try:
            taken = step_up.take(ctx, state=state, browser=request.cookies.get(cookie_name(state), ""))
        except Refusal as refusal:
            return _forget(refused_page(refusal), state)
        su = taken.step_up
        try:
            if error or not code:
                raise Refusal("provider_error", f"{error or 'no code'}: {error_description}"[:300])
            token = provider.exchange(su, code=code, code_verifier=taken.code_verifier, redirect_uri=redirect_uri())
            claims = provider.verify(su, token, nonce=taken.nonce, now=ctx.clock().timestamp())
        except Refusal as refusal:
            log.info("step-up for %s refused: %s", taken.request_id, refusal)
            step_up.refuse(ctx, request_id=taken.request_id, refusal=refusal, data={"issuer": su.issuer})
            return _forget(refused_page(refusal), state)
        try:
            result = step_up.conclude(ctx, taken=taken, claims=claims)
        except Refusal as refusal:
            return _forget(refused_page(refusal), state)
        if result.outcome in ("approved", "recorded"):
            return _forget(page("Approved", result.message, ok=True), state)
        return _forget(page("Not approved", f"Nothing was recorded: {result.message}",
                            409 if result.outcome in ("already", "unknown") else 403), state)

    @r.get("/step-up/{request_id}")
    def start(request_id: str):
        if not _REQUEST_ID.match(request_id):
            return page("Not found", "There is no such request.", 404)
        try:
            started = step_up.begin(ctx, request_id=request_id)
            url = provider.authorization_url(started.step_up, redirect_uri=redirect_uri(), state=started.state,
                                             nonce=started.nonce, code_verifier=started.code_verifier)
        except step_up.NotFound:
            return page("Not found", "There is no such request.", 404)
        except Refusal as refusal:
            if refusal.code == "provider_error":
                log.warning("step-up for %s: %s", request_id, refusal.detail)
            return refused_page(refusal)
        resp = RedirectResponse(url, status_code=302, headers={"Cache-Control": "no-store"})
        resp.set_cookie(cookie_name(started.state), started.browser, max_age=int(step_up.FLOW_TTL.total_seconds()),
                        path="/step-up/", httponly=True, samesite="lax", secure=ctx.public_url.startswith("https://"))
        return resp

    def _forget(resp: HTMLResponse, state: str) -> HTMLResponse:
        if state and len(state) <= 200:
            resp.delete_cookie(cookie_name(state), path="/step-up/")
        return resp

    return r
