"""review: the security owner marks a request's exceptions reviewed."""

from __future__ import annotations

from dataclasses import dataclass

from signoff.usecases.common import workflow_snapshot
from signoff.usecases.ports import Context


@dataclass(frozen=True)
class ReviewResult:
    ok: bool
    message: str


def review(ctx: Context, *, request_id: str, user: str, comment: str | None = None,
           channel: str | None = None) -> ReviewResult:
    """Record the review at once (who, when); a later modal may add a comment."""

    def tx(repo) -> ReviewResult:
        now = ctx.clock()
        req = repo.get(request_id)
        if req is None:
            return ReviewResult(False, "This request no longer exists.")
        wf = workflow_snapshot(req)
        if user != wf.security_owner:
            repo.append_event(req, "review.refused", user, {"reason": "not the security owner"}, now)
            if channel:
                repo.enqueue("slack.ephemeral", {"channel": channel, "user": user,
                                                 "text": "Only the workflow's security owner can mark this reviewed."},
                             now, request_id=req.id)
            return ReviewResult(False, "Only the workflow's security owner can mark this reviewed.")
        if comment is not None:
            repo.append_event(req, "review.comment", user, {"comment": comment[:4000]}, now)
            return ReviewResult(True, "Comment recorded.")
        repo.append_event(req, "exception.reviewed", user,
                          {"exceptions": [e.get("kind") for e in (req.exceptions or [])]}, now)
        req.reviewed_at, req.reviewed_by = now, user
        for msg in repo.messages(req.id, role="exception"):
            repo.enqueue("slack.update", {"message_id": msg.id}, now, request_id=req.id)
        return ReviewResult(True, "Marked reviewed.")

    result = ctx.uow.transaction(tx)
    ctx.notify()
    return result
