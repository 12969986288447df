"""``POST /slack/events``: verify Slack's signature ourselves, parse defensively, then hand
the request to Bolt in a worker thread (Bolt's sync dispatch must not block the loop).

Junk gets 400, a bad or stale signature 401 — never a 500.
"""

from __future__ import annotations

import json
import logging
from urllib.parse import parse_qs

from slack_bolt import App, BoltRequest
from slack_sdk.signature import SignatureVerifier
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

log = logging.getLogger(__name__)
MAX_SLACK_BODY = 1024 * 1024


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def well_formed(body: bytes, content_type: str) -> bool:
    """Will Bolt be able to parse this body? (Its own parser raises on junk.)"""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    if "application/json" in content_type or text.lstrip().startswith("{"):
        try:
            return isinstance(json.loads(text), dict)
        except ValueError:
            return False
    form = parse_qs(text, keep_blank_values=True)
    if "payload" in form:
        try:
            return isinstance(json.loads(form["payload"][0]), dict)
        except ValueError:
            return False
    return True


class SlackEndpoint:
    def __init__(self, app: App, signing_secret: str, clock=None):
        self.app = app
        self.verifier = SignatureVerifier(signing_secret, clock=clock) if clock else SignatureVerifier(signing_secret)

    async def __call__(self, request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_SLACK_BODY:
            return _error(413, "payload_too_large", "request body too large")
        if not self.verifier.is_valid_request(body, dict(request.headers)):
            return _error(401, "invalid_signature", "missing, wrong or stale Slack signature")
        if not well_formed(body, request.headers.get("content-type", "")):
            return _error(400, "bad_request", "unreadable Slack payload")
        try:
            bolt_req = BoltRequest(body=body.decode("utf-8"), query=request.url.query,
                                   headers={k: [v] for k, v in request.headers.items()})
        except Exception:  # a payload Bolt cannot parse is the sender's fault
            log.info("Slack payload Bolt could not parse", exc_info=True)
            return _error(400, "bad_request", "unreadable Slack payload")
        try:
            resp = await run_in_threadpool(self.app.dispatch, bolt_req)
        except Exception:
            log.exception("Slack dispatch failed")
            return _error(400, "bad_request", "could not handle this Slack payload")
        if resp.status >= 500:
            return _error(400, "bad_request", "could not handle this Slack payload")
        headers = {k: v[0] for k, v in resp.headers.items() if v and k.lower() != "content-length"}
        return Response(content=resp.body, status_code=resp.status, headers=headers)
