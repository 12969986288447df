"""What the sync and async clients share: configuration, signing, building requests,
reading answers, and the decisions of the waiting and retry loops. No I/O here."""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import quote

import httpx

from signoff.client.errors import Cancelled, Expired, Rejected, SignoffError, Unanswered
from signoff.domain.agent_signature import sign_v1, sign_v2  # the one recipe (stdlib only)

SignatureVersion = Literal["v1", "v2"]
Until = Literal["decided", "final", "changed"]

FINAL = frozenset({"rejected", "expired", "cancelled", "succeeded", "failed"})
ENDINGS: dict[str, type[Unanswered]] = {"rejected": Rejected, "expired": Expired, "cancelled": Cancelled}
MAX_WAIT = 60  # the server's longest long-poll, in seconds
POLL_FLOOR = 1.0  # never ask a server that ignores ?wait= more often than this
SUBMIT_ATTEMPTS = 5
BACKOFF_CAP = 10.0


@dataclass(frozen=True)
class Identity:
    url: str
    agent: str
    secret: bytes


def identity(url: str | None, agent: str | None, secret: str | bytes | None) -> Identity:
    """The agent's identity from the arguments, else from SIGNOFF_URL, SIGNOFF_AGENT and
    SIGNOFF_AGENT_SECRET; a ValueError naming every one that is missing."""
    url = url or os.environ.get("SIGNOFF_URL")
    agent = agent or os.environ.get("SIGNOFF_AGENT")
    secret = secret or os.environ.get("SIGNOFF_AGENT_SECRET")
    missing = [
        f"{name} (or {arg}=)"
        for name, arg, value in (
            ("SIGNOFF_URL", "url", url),
            ("SIGNOFF_AGENT", "agent", agent),
            ("SIGNOFF_AGENT_SECRET", "secret", secret),
        )
        if not value
    ]
    if missing:
        raise ValueError("signoff client: missing " + ", ".join(missing))
    assert url and agent and secret
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"signoff client: SIGNOFF_URL must be an http:// or https:// URL, not {url!r}")
    return Identity(url.rstrip("/"), agent, secret.encode() if isinstance(secret, str) else secret)


def build(
    ident: Identity,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    *,
    version: SignatureVersion,
    headers: dict[str, str] | None = None,
    now: float | None = None,
) -> httpx.Request:
    """A signed request for ``path`` (which may carry a query string)."""
    raw = b"" if body is None else json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    request = httpx.Request(method, ident.url + path, content=raw)
    ts = str(int(time.time() if now is None else now))
    if version == "v1":
        signature = sign_v1(ident.secret, ts, raw)
    else:
        signature = sign_v2(ident.secret, ts, method, request.url.raw_path.decode("ascii"), raw)
    request.headers.update(
        {
            "X-Signoff-Agent": ident.agent,
            "X-Signoff-Timestamp": ts,
            "X-Signoff-Signature": signature,
            "Accept": "application/json",
        }
    )
    if body is not None:
        request.headers["Content-Type"] = "application/json"
    request.headers.update(headers or {})
    return request


def action_path(request_id: str, suffix: str = "") -> str:
    if not isinstance(request_id, str) or not request_id:
        raise ValueError("a request id is a non-empty string")
    return f"/v1/actions/{quote(request_id, safe='')}{suffix}"


def wait_path(request_id: str, seconds: int, version: int | None) -> str:
    return action_path(request_id) + f"?wait={seconds}" + (f"&version={version}" if version is not None else "")


def answer(response: httpx.Response) -> dict[str, Any]:
    """The JSON object of a 2xx answer; SignoffError for anything else."""
    if response.is_success:
        try:
            doc = response.json()
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            return doc
        raise SignoffError(response.status_code, "bad_response", f"expected a JSON object, got {_snippet(response)}")
    raise error_of(response)


def error_of(response: httpx.Response) -> SignoffError:
    """The server's error (``{"error": {"code", "message", "fields"}}``), or one that says
    what came back instead (a proxy's HTML page, an empty body)."""
    try:
        doc = response.json()
    except ValueError:
        doc = None
    err = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        fields = err.get("fields")
        return SignoffError(
            response.status_code,
            str(err.get("code") or "error"),
            err["message"],
            [str(f) for f in fields] if isinstance(fields, list) else None,
        )
    reason = response.reason_phrase or "error"
    return SignoffError(
        response.status_code,
        reason.lower().replace(" ", "_"),
        f"{reason}: {_snippet(response)}" if response.content else reason,
    )


def unreachable(ident: Identity, exc: Exception) -> SignoffError:
    return SignoffError(None, "unreachable", f"cannot reach signoff at {ident.url}: {exc or type(exc).__name__}")


def _snippet(response: httpx.Response) -> str:
    text = response.text.strip().replace("\n", " ")
    return (text[:200] + "…") if len(text) > 200 else (text or "an empty body")


def submission(
    workflow: str,
    title: str,
    action: dict[str, Any],
    justification: str,
    *,
    risk: str,
    rollback: dict[str, Any] | str | None,
    prompt: str | None,
    parent_id: str | None,
    executor: str | None,
) -> dict[str, Any]:
    """The body of ``POST /v1/actions``; a rollback given as text is its description."""
    body: dict[str, Any] = {
        "workflow": workflow,
        "title": title,
        "action": action,
        "justification": justification,
        "risk": risk,
    }
    if rollback is not None:
        body["rollback"] = {"description": rollback} if isinstance(rollback, str) else rollback
    for key, value in (("prompt", prompt), ("parent_id", parent_id), ("executor", executor)):
        if value is not None:
            body[key] = value
    return body


def new_idempotency_key() -> str:
    return str(uuid.uuid4())


def retry_delay(attempt: int, response: httpx.Response | None) -> float:
    """Seconds before submit attempt ``attempt + 1``: the server's Retry-After when it
    gave one (seconds or an HTTP date), else exponential backoff from 0.25 s, capped."""
    if response is not None:
        after = response.headers.get("retry-after")
        if after:
            try:
                return min(max(float(after), 0.0), BACKOFF_CAP)
            except ValueError:
                try:
                    return min(max(parsedate_to_datetime(after).timestamp() - time.time(), 0.0), BACKOFF_CAP)
                except (TypeError, ValueError):
                    pass
    return float(min(0.25 * 2**attempt, BACKOFF_CAP))


def satisfied(view: dict[str, Any], until: Until) -> bool:
    status = view.get("status")
    return status != "pending" if until == "decided" else status in FINAL


def check_until(until: str) -> None:
    if until not in ("decided", "final", "changed"):
        raise ValueError(f'until must be "decided", "final" or "changed", not {until!r}')


def done_when(until: Until, first: dict[str, Any]) -> Callable[[dict[str, Any]], bool]:
    """The test a wait ends on; ``first`` is the state it started from."""
    if until == "changed":
        return lambda view: changed(first, view)
    return lambda view: satisfied(view, until)


def long_poll_seconds(remaining: float) -> int:
    """The ``wait`` to ask for with ``remaining`` seconds left (0: too little left to ask)."""
    return int(min(math.floor(remaining), MAX_WAIT))


def version_of(view: dict[str, Any]) -> int | None:
    v = view.get("version")
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def changed(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """Whether the request moved between two reads (by version when the server has one)."""
    old, new = version_of(before), version_of(after)
    if old is not None and new is not None:
        return new > old
    return before != after


def poll_pause(asked: int, elapsed: float, before: dict[str, Any], after: dict[str, Any]) -> float:
    """How long to sleep after a long-poll that came back with ``after`` in ``elapsed``
    seconds: nothing when it held for the whole wait or brought news; otherwise the server
    ignored ``wait`` (or woke early) and the next read waits out the rest of ``POLL_FLOOR``."""
    if elapsed >= asked or changed(before, after):
        return 0.0
    return max(POLL_FLOOR - elapsed, 0.0)


def ending(view: dict[str, Any]) -> Unanswered | None:
    """Rejected / Expired / Cancelled for a request that ended so; None otherwise."""
    cls = ENDINGS.get(str(view.get("status")))
    return cls(view) if cls else None


def grant_pending(view: dict[str, Any]) -> bool:
    """Approved, but the grant is not out yet (a change window, say): keep waiting."""
    return view.get("status") == "approved" and not view.get("grant")
