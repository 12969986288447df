"""What an agent does after submitting: read, cancel, comment, report the outcome."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from signoff.domain.errors import Conflict, Forbidden, Invalid, NotFound
from signoff.domain.model import TERMINAL, ExceptionKind, Status
from signoff.domain.thread import slack_ts
from signoff.usecases.common import move, raise_exception, refresh_messages, request_view
from signoff.usecases.ports import Context, Repository

if TYPE_CHECKING:
    from signoff.store.tables import RequestRow


def _visible(req: RequestRow | None, agent_id: str) -> RequestRow:
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

    def tx(repo) -> dict[str, Any]:
        now = ctx.clock()
        req = _visible(repo.get(request_id), agent_id)
        if req.status == Status.APPROVED and req.grant_token and req.grant_delivered_at is None \
                and not _has_webhook(req):
            req.grant_delivered_at = now
            move(repo, req, Status.EXECUTING, actor=agent_id, now=now, data={"delivery": "pull"})
            refresh_messages(repo, req, now)
        return request_view(repo, req, viewer=agent_id)

    result = ctx.uow.transaction(tx)
    ctx.notify()
    return result


def _has_webhook(req: RequestRow) -> bool:
    return bool((req.policy.get("execution") or {}).get("webhook"))


def _view_or_none(repo: Repository, agent_id: str, request_id: str) -> dict[str, Any]:
    return request_view(repo, _visible(repo.get(request_id), agent_id), viewer=agent_id)


def cancel(ctx: Context, *, agent_id: str, request_id: str) -> dict[str, Any]:
    """The submitter withdraws a pending request."""

    def tx(repo) -> dict[str, Any]:
        now = ctx.clock()
        req = _visible(repo.get(request_id), agent_id)
        if req.submitted_by != agent_id:
            raise Forbidden("only the submitting agent may cancel a request")
        if req.status != Status.PENDING:
            raise Conflict(f"request is {req.status}; only a pending request can be cancelled")
        move(repo, req, Status.CANCELLED, actor=agent_id, now=now)
        req.due_at = None
        refresh_messages(repo, req, now)
        return request_view(repo, req, viewer=agent_id)

    result = ctx.uow.transaction(tx)
    ctx.notify()
    return result


def record_outcome(ctx: Context, *, agent_id: str, request_id: str, body: Any) -> dict[str, Any]:
    """The executor reports ``succeeded`` or ``failed``; once."""
    if not isinstance(body, dict) or body.get("status") not in ("succeeded", "failed"):
        raise Invalid("outcome needs \"status\": \"succeeded\" or \"failed\"", fields=["status"])
    extra = set(body) - {"status", "detail"}
    if extra:
        raise Invalid(f"unknown field(s): {', '.join(sorted(extra))}", fields=sorted(extra))
    detail = body.get("detail")
    if detail is not None and (not isinstance(detail, str) or len(detail) > 4000):
        raise Invalid("detail must be a string of at most 4,000 characters", fields=["detail"])

    def tx(repo) -> dict[str, Any]:
        now = ctx.clock()
        req = _visible(repo.get(request_id), agent_id)
        if req.executor != agent_id:
            raise Forbidden("only the executor may report the outcome")
        if req.outcome is not None or req.status not in (Status.APPROVED, Status.EXECUTING):
            raise Conflict(f"request is {req.status}; an outcome is accepted once, while approved or executing")
        if not req.grant_token:
            raise Conflict("no grant has been issued for this request yet")
        status = Status(body["status"])
        req.outcome = {"status": status.value, "detail": detail, "at": now.isoformat().replace("+00:00", "Z"),
                       "by": agent_id}
        move(repo, req, status, actor=agent_id, now=now, data={"detail": detail})
        req.due_at = None
        if status is Status.FAILED:
            raise_exception(repo, req, ExceptionKind.FAILED, now, detail=detail or "")
        refresh_messages(repo, req, now)
        return request_view(repo, req, viewer=agent_id)

    result = ctx.uow.transaction(tx)
    ctx.notify()
    return result


COMMENT_MAX = 4000


def comment(ctx: Context, *, agent_id: str, request_id: str, body: Any) -> dict[str, Any]:
    """The submitter or executor says something in the request's Slack thread: recorded as
    evidence (``thread.agent_reply``) and posted by the outbox. ``{"id", "request"}``."""
    if not isinstance(body, dict):
        raise Invalid("the body must be a JSON object with \"text\"", fields=["text"])
    extra = set(body) - {"text"}
    if extra:
        raise Invalid(f"unknown field(s): {', '.join(sorted(extra))}", fields=sorted(extra))
    text = body.get("text")
    if not isinstance(text, str) or not text.strip() or len(text) > COMMENT_MAX:
        raise Invalid(f"text must be a string of 1 to {COMMENT_MAX:,} characters, not only blanks",
                      fields=["text"])

    def tx(repo) -> dict[str, Any]:
        now = ctx.clock()
        req = _visible(repo.get(request_id), agent_id)
        if req.status in TERMINAL:
            raise Conflict(f"request is {req.status}; its thread is closed to comments")
        comment_id = str(uuid.uuid4())
        repo.append_event(req, "thread.agent_reply", agent_id,
                          {"comment_id": comment_id, "text": text, "ts": slack_ts(now)}, now)
        repo.touch(req)
        # Posted under every root message of the request; a root not posted yet is waited for.
        for msg in repo.messages(req.id, role="request"):
            repo.enqueue("slack.comment", {"message_id": msg.id, "comment_id": comment_id, "agent": agent_id,
                                           "text": text}, now, request_id=req.id)
        return {"id": comment_id, "request": request_view(repo, req, viewer=agent_id)}

    result = ctx.uow.transaction(tx)
    ctx.notify()
    return result


def mark_delivered(ctx: Context, *, request_id: str, detail: dict[str, Any]) -> None:
    """The executor webhook answered 2xx: the grant is delivered, the request executing."""

    def tx(repo) -> None:
        now = ctx.clock()
        req = repo.get(request_id)
        if req is None or req.grant_delivered_at is not None:
            return
        req.grant_delivered_at = now
        repo.append_event(req, "grant.delivered", "signoff", {"delivery": "webhook", **detail}, now)
        if req.status == Status.APPROVED:
            move(repo, req, Status.EXECUTING, actor="signoff", now=now, data={"delivery": "webhook"})
        refresh_messages(repo, req, now)

    ctx.uow.transaction(tx)
    ctx.notify()


def record_delivery_failure(ctx: Context, *, request_id: str, reason: str) -> None:
    """The webhook never answered 2xx before the grant expired."""

    def tx(repo) -> None:
        now = ctx.clock()
        req = repo.get(request_id)
        if req is None:
            return
        repo.append_event(req, "grant.undelivered", "signoff", {"reason": reason}, now)

    ctx.uow.transaction(tx)
