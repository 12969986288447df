"""Step-up routes: ``GET /step-up/{request id}`` sends the approver to the identity
provider; ``GET /step-up/callback`` is where the provider sends them back; ``POST
/step-up/confirm`` takes the typed-confirmation form the callback shows on a request that
asks for one. Thin: parse, call the protocol (signoff.stepup.oidc) and the use-case
(usecases.step_up), render a page.
"""

from __future__ import annotations

import hashlib
import html
import logging
from datetime import timezone
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from signoff.domain.identifiers import REQUEST_ID_RE
from signoff.domain.step_up import Refusal
from signoff.stepup.oidc import PROVIDER, Provider
from signoff.usecases import step_up
from signoff.usecases.decide import DecideResult
from signoff.usecases.ports import Context

log = logging.getLogger(__name__)

CALLBACK = "/step-up/callback"
CONFIRM = "/step-up/confirm"
MAX_FORM = 8 * 1024  # bytes of a confirmation form's post

# HTTP status of each refusal's page.
STATUS = {
    "bad_state": 400,
    "replayed": 400,
    "expired_flow": 400,
    "not_pending": 409,
    "not_step_up": 404,
    "provider_error": 502,
    "token_invalid": 401,
}


def cookie_name(state: str, kind: str = "") -> str:
    """One cookie per flow (an approver may have several open), named after its state —
    or, once the sign-in verified and a typed confirmation is asked for (``kind``
    "confirm"), after the confirmation form's token."""
    return f"signoff_step_up_{kind + '_' if kind else ''}" + hashlib.sha256(state.encode()).hexdigest()[:16]


# No scripts, no frames, forms post only here: a page with an Approve button cannot be
# framed (clickjacking) nor made to post elsewhere.
HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
}


def _html(title: str, inner: str, status: int, colour: str) -> HTMLResponse:
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>signoff — {html.escape(title)}</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em;color:#1f2328}}
h1{{font-size:1.4em;color:{colour}}}p.small{{color:#59636e;font-size:.9em}}p.error{{color:#cf222e;font-weight:600}}
code{{font:15px ui-monospace,monospace;background:#f6f8fa;padding:.1em .3em;border-radius:4px}}
label{{display:block;font-weight:600;margin-top:1em}}
input[type=text]{{font:16px ui-monospace,monospace;width:100%;box-sizing:border-box;padding:.4em;margin:.3em 0}}
button{{font:inherit;padding:.4em 1.2em;margin-top:.6em;color:#fff;background:#1a7f37;border:0;border-radius:6px}}
</style></head>
<body><h1>{html.escape(title)}</h1>{inner}</body></html>"""
    return HTMLResponse(body, status_code=status, headers=HEADERS)


def page(title: str, message: str, status: int = 200, *, ok: bool = False) -> HTMLResponse:
    return _html(
        title,
        f"""<p>{html.escape(message)}</p>
<p class="small">You can close this window and go back to Slack.</p>""",
        status,
        "#1a7f37" if ok else "#cf222e",
    )


def confirm_page(form: step_up.ToConfirm) -> HTMLResponse:
    """The typed confirmation, as the Slack modal asks for it (blocks.confirm_modal): the
    request, and a field for its target. The form's token binds it to the verified sign-in."""
    r, a = form.request, form.request.get("action") or {}
    esc = html.escape
    where = f" in <code>{esc(str(a['environment']))}</code>" if a.get("environment") else ""
    error = (
        '<p class="error" id="error">That is not the target: nothing was approved (the refusal is recorded). '
        "Type it exactly as shown, or close this window.</p>"
        if form.mismatch
        else ""
    )
    until = form.expires_at.astimezone(timezone.utc).strftime("%H:%M:%S UTC")
    inner = f"""<p>You signed in as {esc(form.email)}. This request asks you to type its target to approve it.</p>
<p><strong>{esc(str(r.get("title") or ""))}</strong><br><code>{esc(str(a.get("type") or ""))}</code> on
<code>{esc(str(a.get("target") or ""))}</code>{where} — {esc(str(r.get("risk") or ""))} risk.</p>
{error}<form method="post" action="confirm">
<input type="hidden" name="token" value="{esc(form.token)}">
<label for="typed">Type the target to approve</label>
<input type="text" id="typed" name="typed" maxlength="300" required autofocus autocomplete="off"
 autocapitalize="off" spellcheck="false"{' aria-invalid="true" aria-describedby="error"' if form.mismatch else ""}>
<p class="small">Exactly as shown above; anything else records nothing but a refusal.</p>
<button type="submit">Approve</button>
</form>
<p class="small">This form works until {until}, once. To reject, use Reject in Slack.</p>"""
    return _html("Confirm approval", inner, 422 if form.mismatch else 200, "#1f2328")


def decided_page(result: DecideResult) -> HTMLResponse:
    if result.outcome in ("approved", "recorded"):
        return page("Approved", result.message, ok=True)
    return page(
        "Not approved",
        f"Nothing was recorded: {result.message}",
        409 if result.outcome in ("already", "unknown") else 403,
    )


def refused_page(refusal: Refusal) -> HTMLResponse:
    if refusal.recorded_for:  # the second post of a double click: the first one counted
        return page(
            "Already approved",
            "This confirmation was sent twice; the first one recorded your approval, "
            "and this one recorded nothing more.",
            STATUS["replayed"],
            ok=True,
        )
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
        if isinstance(result, step_up.ToConfirm):
            # The browser's cookie moves to the form's name: the post must come from it.
            resp = _forget(confirm_page(result), state)
            left = int((result.expires_at - ctx.clock()).total_seconds())
            _set_cookie(
                resp, cookie_name(result.token, "confirm"), request.cookies.get(cookie_name(state), ""), max(left, 1)
            )
            return resp
        return _forget(decided_page(result), state)

    @r.post(CONFIRM)
    async def confirm(request: Request):
        form = await _read_form(request)
        if form is None:
            return page("Not approved", "Nothing was recorded: the confirmation form was not valid.", 400)
        token = form.get("token", "")
        browser = request.cookies.get(cookie_name(token, "confirm"), "") if token else ""
        try:
            result = await run_in_threadpool(
                step_up.confirm, ctx, token=token, browser=browser, typed=form.get("typed")
            )
        except Refusal as refusal:
            return _forget(refused_page(refusal), token, "confirm")
        if isinstance(result, step_up.ToConfirm):
            return confirm_page(result)
        return _forget(decided_page(result), token, "confirm")

    @r.get("/step-up/{request_id}")
    def start(request_id: str):
        if not REQUEST_ID_RE.match(request_id):
            return page("Not found", "There is no such request.", 404)
        try:
            started = step_up.begin(ctx, request_id=request_id)
            url = provider.authorization_url(
                started.step_up,
                redirect_uri=redirect_uri(),
                state=started.state,
                nonce=started.nonce,
                code_verifier=started.code_verifier,
            )
        except step_up.NotFound:
            return page("Not found", "There is no such request.", 404)
        except Refusal as refusal:
            if refusal.code == "provider_error":
                log.warning("step-up for %s: %s", request_id, refusal.detail)
            return refused_page(refusal)
        resp = RedirectResponse(url, status_code=302, headers={"Cache-Control": "no-store"})
        _set_cookie(resp, cookie_name(started.state), started.browser, int(step_up.FLOW_TTL.total_seconds()))
        return resp

    def _set_cookie(resp, name: str, browser: str, max_age: int) -> None:
        resp.set_cookie(
            name,
            browser,
            max_age=max_age,
            path="/step-up/",
            httponly=True,
            samesite="lax",
            secure=ctx.public_url.startswith("https://"),
        )

    def _forget(resp: HTMLResponse, state: str, kind: str = "") -> HTMLResponse:
        if state and len(state) <= 200:
            resp.delete_cookie(cookie_name(state, kind), path="/step-up/")
        return resp

    return r


async def _read_form(request: Request) -> dict[str, str] | None:
    """The fields of an ``application/x-www-form-urlencoded`` post of at most MAX_FORM
    bytes (the first value of each); None for anything else."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_FORM:
            return None
        chunks.append(chunk)
    try:
        fields = parse_qs(b"".join(chunks).decode("utf-8"), keep_blank_values=True, max_num_fields=10)
    except (UnicodeDecodeError, ValueError):
        return None
    return {k: v[0] for k, v in fields.items()}
