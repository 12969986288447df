"""review: the security owner marks a request's exceptions reviewed."""

from __future__ import annotations

from dataclasses import dataclass

from signoff.usecases.common import workflow_snapshot
from signoff.usecases.effects import Effects, transaction
from signoff.usecases.ports import Context, Repository


@dataclass(frozen=True)
class ReviewResult:
    ok: bool
    message: str


def review(
    ctx: Context, *, request_id: str, user: str, comment: str | None = None, channel: str | None = None
) -> ReviewResult:
    """Record the review at once (who, when); a later modal may add a comment."""

    def tx(repo: Repository, fx: Effects) -> ReviewResult:
        now = fx.now
        req = repo.get(request_id)
        if req is None:
            return ReviewResult(False, "This request no longer exists.")
        wf = workflow_snapshot(req)
        if user != wf.security_owner:
            text = "Only the workflow's security owner can mark this reviewed."
            fx.refuse(req, "review.refused", user, {"reason": "not the security owner"}, channel=channel, text=text)
            return ReviewResult(False, text)
        if comment is not None:
            repo.append_event(req, "review.comment", user, {"comment": comment[:4000]}, now)
            return ReviewResult(True, "Comment recorded.")
        repo.append_event(
            req, "exception.reviewed", user, {"exceptions": [e.get("kind") for e in (req.exceptions or [])]}, now
        )
        req.reviewed_at, req.reviewed_by = now, user
        fx.refresh(req, role="exception")
        return ReviewResult(True, "Marked reviewed.")

    result = transaction(ctx, tx)
    ctx.notify()
    return result
