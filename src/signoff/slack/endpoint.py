"""``POST /slack/events``: verify Slack's signature ourselves, parse defensively, then hand
the request to Bolt in a worker thread (Bolt's sync dispatch must not block the loop).

A click on one of our buttons is acknowledged at once, from the event loop, before Bolt
sees it: its listener only ever acks plainly and does its work afterwards, so answering
first changes nothing but the wait (no thread hop, no Bolt middleware before the answer).

Junk gets 400, a bad or stale signature 401 — never a 500.
"""

from __future__ import annotations

import contextvars
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qsl

from slack_bolt import App, BoltRequest
from slack_sdk.signature import SignatureVerifier
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from signoff.slack.listeners import PLAIN_ACK_ACTIONS

log = logging.getLogger(__name__)
MAX_SLACK_BODY = 1024 * 1024


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def bolt_body(body: bytes, content_type: str | None) -> Any:
    """The body exactly as Bolt's ``parse_body`` will see it, or ``_UNREADABLE``.

    Mirrors Bolt (JSON when the media type is ``application/json`` or the text starts with
    ``{``; else a form, whose ``payload`` field, when present, is JSON) without raising.
    """
    try:
        text = body.decode("utf-8")
        if not text:
            return {}
        media = (content_type or "").split(";")[0] or None
        if media == "application/json" or text.startswith("{"):
            return json.loads(text)
        if "payload" in text:
            payload = dict(parse_qsl(text, keep_blank_values=True)).get("payload")
            return {} if payload is None else json.loads(payload)
        return dict(parse_qsl(text, keep_blank_values=True))
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return _UNREADABLE


_UNREADABLE = object()
_OPT_STR = (str, type(None))
# Keys Bolt reads at any level while building its context, with the types it can handle.
_ID_HOLDERS = ("enterprise", "team", "user", "channel")
_STR_KEYS = (
    "enterprise_id",
    "team_id",
    "user_id",
    "channel_id",
    "thread_ts",
    "type",
    "subtype",
    "callback_id",
    "function_execution_id",
    "bot_access_token",
    "user_team",
    "event_id",
)
_NESTED = ("event", "message", "previous_message", "item", "assistant_thread", "view", "container")


def _text_problem(body: Any) -> str | None:
    """JSON escapes can smuggle lone surrogates (``\\ud800``) that no UTF-8 store or hash accepts."""
    stack = [body]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return "text that is not valid Unicode"
    return None


def shape_problem(body: Any, depth: int = 0) -> str | None:
    """Why Bolt (or our listeners) would trip over this body; None when it is safe to dispatch.

    Bolt's context extraction and matchers index into the payload assuming Slack's types
    (``"id" in team``, ``body["actions"][0]["action_id"]`` …): junk must stop here, as 400.
    """
    if not isinstance(body, dict):
        return "the payload is not an object"
    for key in _ID_HOLDERS:
        v = body.get(key)
        if v is not None and not (
            isinstance(v, str)
            or (
                isinstance(v, dict)
                and isinstance(v.get("id"), _OPT_STR)
                and isinstance(v.get("team_id"), _OPT_STR)
                and isinstance(v.get("enterprise_id"), _OPT_STR)
            )
        ):
            return f"{key} has the wrong type"
    for key in _STR_KEYS:
        if not isinstance(body.get(key), _OPT_STR):
            return f"{key} is not a string"
    auths = body.get("authorizations")
    if auths is not None and not (
        isinstance(auths, list) and all(isinstance(a, dict) and shape_problem(a, depth + 1) is None for a in auths)
    ):
        return "authorizations has the wrong type"
    if depth < 3:
        for key in _NESTED:
            v = body.get(key)
            if v is not None:
                if not isinstance(v, dict):
                    return f"{key} is not an object"
                inner = shape_problem(v, depth + 1)
                if inner:
                    return f"{key}: {inner}"
    if depth:
        return None
    # What the matchers of each kind of request touch.
    kind = body.get("type")
    if "command" in body:
        if not isinstance(body["command"], str) or not isinstance(body.get("text"), _OPT_STR):
            return "a slash command needs string command and text"
    elif kind == "block_actions":
        actions = body.get("actions")
        if not (
            isinstance(actions, list)
            and actions
            and all(
                isinstance(a, dict) and isinstance(a.get("action_id"), str) and isinstance(a.get("block_id"), _OPT_STR)
                for a in actions
            )
        ):
            return "block_actions needs a list of actions with action_id"
    elif kind in ("view_submission", "view_closed"):
        view = body.get("view")
        if not (
            isinstance(view, dict) and isinstance(view.get("callback_id"), str) and isinstance(view.get("type"), str)
        ):
            return f"{kind} needs a view with a type and a callback_id"
    elif kind == "block_suggestion":
        if not (isinstance(body.get("action_id"), str) and isinstance(body.get("block_id"), str)):
            return "block_suggestion needs action_id and block_id"
    elif kind == "event_callback":
        if not (isinstance(body.get("event"), dict) and isinstance(body["event"].get("type"), str)):
            return "event_callback needs an event with a type"
    elif kind in (
        "shortcut",
        "message_action",
        "interactive_message",
        "dialog_submission",
        "dialog_cancellation",
        "workflow_step_edit",
    ):
        if not isinstance(body.get("callback_id"), str):
            return f"{kind} needs a callback_id"
    elif kind == "url_verification":
        if not isinstance(body.get("challenge"), str):
            return "url_verification needs a challenge"
    elif not body.get("ssl_check"):
        return "not a kind of Slack request this app handles"
    return None


async def _read_limited(request: Request) -> bytes | None:
    """The body, or None when it is over MAX_SLACK_BODY (without buffering all of it)."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_SLACK_BODY:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_SLACK_BODY:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def plain_ack(body: Any) -> bool:
    """A click on one of our buttons (acknowledged with an empty 200, work after)."""
    if not isinstance(body, dict) or body.get("type") != "block_actions":
        return False
    actions = body.get("actions")
    return (
        isinstance(actions, list)
        and len(actions) == 1
        and isinstance(actions[0], dict)
        and actions[0].get("action_id") in PLAIN_ACK_ACTIONS
    )


class SlackEndpoint:
    def __init__(self, app: App, signing_secret: str, clock=None):
        self.app = app
        self.verifier = SignatureVerifier(signing_secret, clock=clock) if clock else SignatureVerifier(signing_secret)
        # Bolt's dispatch of the clicks answered already (it runs their lazy listeners).
        self._after_ack = ThreadPoolExecutor(max_workers=4, thread_name_prefix="slack-click")

    def _dispatch_acked(self, body: str, query: str, headers: dict) -> None:
        try:
            resp = self.app.dispatch(BoltRequest(body=body, query=query, headers=headers))
            if resp.status >= 300:
                log.warning("an acknowledged Slack click was answered %s by Bolt", resp.status)
        except Exception:
            log.exception("Slack dispatch of an acknowledged click failed")

    def _signed(self, body: bytes, headers) -> bool:
        """Slack's v0 signature, fresh (5 minutes). Junk headers or a non-UTF-8 body are
        simply not signed: slack_sdk's verifier raises on them (int(), decode, compare_digest)."""
        ts = headers.get("x-slack-request-timestamp")
        sig = headers.get("x-slack-signature")
        if not ts or not sig or not ts.isascii() or not sig.isascii() or not ts.isdigit() or len(ts) > 20:
            return False
        try:
            return self.verifier.is_valid(body=body, timestamp=ts, signature=sig)
        except (ValueError, TypeError):  # UnicodeDecodeError is a ValueError
            return False

    async def __call__(self, request: Request) -> Response:
        body = await _read_limited(request)
        if body is None:
            return _error(413, "payload_too_large", "request body too large")
        if not self._signed(body, request.headers):
            return _error(401, "invalid_signature", "missing, wrong or stale Slack signature")
        parsed = bolt_body(body, request.headers.get("content-type"))
        if parsed is _UNREADABLE:
            return _error(400, "bad_request", "unreadable Slack payload")
        problem = shape_problem(parsed) or _text_problem(parsed)
        if problem:
            log.info("refused a malformed Slack payload: %s", problem)
            return _error(400, "bad_request", f"malformed Slack payload: {problem}")
        if plain_ack(parsed):
            headers = {k: [v] for k, v in request.headers.items()}
            run = contextvars.copy_context().run  # the request's log fields go along
            self._after_ack.submit(run, self._dispatch_acked, body.decode("utf-8"), request.url.query, headers)
            return Response(status_code=200)
        try:
            bolt_req = BoltRequest(
                body=body.decode("utf-8"), query=request.url.query, headers={k: [v] for k, v in request.headers.items()}
            )
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
