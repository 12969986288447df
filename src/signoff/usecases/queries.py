"""Read-only questions people ask in Slack: what may I decide, show one, exceptions."""

from __future__ import annotations

from typing import Any

from signoff.store.repo import Repo
from signoff.usecases.common import workflow_snapshot
from signoff.usecases.decide import eligible_refs, resolve
from signoff.usecases.ports import Context
from signoff.usecases.slack_ops import render_data


def pending_for(ctx: Context, user: str, limit: int = 20) -> list[dict[str, Any]]:
    """Pending requests ``user`` may decide now (never their own agent's)."""

    def read(session):
        repo = Repo(session)
        out = []
        for req in repo.requests_where(status=["pending"], limit=500):
            if req.sponsor == user:
                continue
            wf = workflow_snapshot(req)
            if user in resolve(ctx, eligible_refs(wf, req.steps_fired)):
                if user not in {d.by for d in repo.decisions(req.id)}:
                    out.append(render_data(ctx, repo, req))
            if len(out) >= limit:
                break
        return out

    return ctx.store.read(read)


def show(ctx: Context, request_id: str) -> dict[str, Any] | None:
    def read(session):
        repo = Repo(session)
        req = repo.get(request_id.strip())
        return render_data(ctx, repo, req) if req else None

    return ctx.store.read(read)


def exceptions_for(ctx: Context, user: str, limit: int = 20) -> list[dict[str, Any]] | None:
    """Unreviewed exceptions of the workflows ``user`` is security owner of; None if none."""
    config = ctx.config()
    workflows = [w.id for w in config.workflows if w.security_owner == user]

    def read(session):
        repo = Repo(session)
        rows = repo.unreviewed_exceptions(workflows, limit=limit * 2)
        return [render_data(ctx, repo, r) for r in rows if workflow_snapshot(r).security_owner == user][:limit]

    if not workflows:
        # security ownership is per request snapshot too; check recent ones
        return None
    return ctx.store.read(read)
