"""What an agent reads and says about its requests: the request (in pull mode, the
executor's read is the grant's delivery) and comments in its Slack thread. Cancelling,
reporting the outcome and the webhook's delivery have their own files (cancel, outcome,
deliver)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from signoff.domain.errors import Conflict, Invalid, NotFound
from signoff.domain.model import TERMINAL, Status
from signoff.domain.thread import slack_ts
from signoff.usecases.common import request_view
from signoff.usecases.effects import Effects, transaction
from signoff.usecases.ports import Context, Repository

if TYPE_CHECKING:
    from signoff.store.tables import RequestRow


def visible(req: RequestRow | None, agent_id: str) -> RequestRow:
    # Anyone but the submitter and the executor gets 404: ids reveal nothing.
    if req is None or agent_id not in (req.submitted_by, req.executor):
        raise NotFound("no such request")
    return req


def get_request(ctx: Context, *, agent_id: str, request_id: str) -> dict[str, Any]:
    """The request as this agent may see it. In pull mode, the executor fetching an
    approved request with its grant is the delivery: the request becomes ``executing``."""
    view = ctx.uow.read(lambda repo: _view_or_none(repo, agent_id, request_id))
    if not (view["status"] == Status.APPROVED and view["grant"] and agent_id == view["executor"]):
        return view

    def tx(repo: Repository, fx: Effects) -> dict[str, Any]:
        now = fx.now
        req = visible(repo.get(request_id), agent_id)
        if (
            req.status == Status.APPROVED
            and req.grant_token
            and req.grant_delivered_at is None
            and not _has_webhook(req)
        ):
            req.grant_delivered_at = now
            fx.move(req, Status.EXECUTING, actor=agent_id, data={"delivery": "pull"})
            fx.refresh(req)
        return request_view(repo, req, viewer=agent_id)

    result = transaction(ctx, tx)
    ctx.notify()
    return result


def _has_webhook(req: RequestRow) -> bool:
    return bool((req.policy.get("execution") or {}).get("webhook"))


def _view_or_none(repo: Repository, agent_id: str, request_id: str) -> dict[str, Any]:
    return request_view(repo, visible(repo.get(request_id), agent_id), viewer=agent_id)


COMMENT_MAX = 4000


def comment(ctx: Context, *, agent_id: str, request_id: str, body: Any) -> dict[str, Any]:
    """The submitter or executor says something in the request's Slack thread: recorded as
    evidence (``thread.agent_reply``) and posted by the outbox. ``{"id", "request"}``."""
    if not isinstance(body, dict):
        raise Invalid('the body must be a JSON object with "text"', fields=["text"])
    extra = set(body) - {"text"}
    if extra:
        raise Invalid(f"unknown field(s): {', '.join(sorted(extra))}", fields=sorted(extra))
    text = body.get("text")
    if not isinstance(text, str) or not text.strip() or len(text) > COMMENT_MAX:
        raise Invalid(f"text must be a string of 1 to {COMMENT_MAX:,} characters, not only blanks", fields=["text"])

    def tx(repo: Repository, fx: Effects) -> dict[str, Any]:
        now = fx.now
        req = visible(repo.get(request_id), agent_id)
        if req.status in TERMINAL:
            raise Conflict(f"request is {req.status}; its thread is closed to comments")
        comment_id = str(uuid.uuid4())
        repo.append_event(
            req, "thread.agent_reply", agent_id, {"comment_id": comment_id, "text": text, "ts": slack_ts(now)}, now
        )
        repo.touch(req)
        # Posted under every root message of the request; a root not posted yet is waited for.
        for msg in fx.messages(req):
            if msg.role == "request":
                fx.enqueue(req, "slack.comment", {"comment_id": comment_id, "agent": agent_id, "text": text}, msg)
        return {"id": comment_id, "request": request_view(repo, req, viewer=agent_id)}

    result = transaction(ctx, tx)
    ctx.notify()
    return result
