"""Read-only questions people ask in Slack: what may I decide, show one, exceptions.

Who may decide is the rule a click meets (``domain.approval``, ``decide.deciders``); who is
in a user group or channel is asked of the directory (a Slack call, cached) only between
reads, never while one is open."""

from __future__ import annotations

from typing import Any

from signoff.config import Workflow
from signoff.domain.approval import may_decide, step_sponsors
from signoff.domain.model import Decision
from signoff.policy.evaluate import agent_sponsor
from signoff.usecases.common import sponsors_of, workflow_snapshot
from signoff.usecases.decide import eligible_refs, is_among
from signoff.usecases.ports import Context, Repository
from signoff.usecases.slack_ops import render_data

# Pending requests looked at for one user's list (the newest first).
PENDING_SCAN = 500


def pending_for(ctx: Context, user: str, limit: int = 20) -> list[dict[str, Any]]:
    """Pending requests ``user`` may approve now, by the rule a click meets
    (``domain.approval.may_decide`` with what ``decide.deciders`` reads): never one they
    already decided, nor one whose agents or chain they sponsor. Candidates are read
    first, the directory is asked between reads, then the survivors are read and checked
    against their recorded sponsors and decisions."""
    config = ctx.config()

    def candidates(repo: Repository) -> list[tuple[str, list[str]]]:
        policies: dict[str, Workflow] = {}
        out = []
        for req in repo.requests_where(status=["pending"], limit=PENDING_SCAN):
            # The sponsors known without another read (those recorded are checked below).
            known = step_sponsors(
                submitter=agent_sponsor(config, req.submitted_by),
                executor=agent_sponsor(config, req.executor),
                chain=[req.sponsor],
            )
            if user in known:
                continue
            wf = policies.get(req.policy_hash) or policies.setdefault(req.policy_hash, workflow_snapshot(req))
            out.append((req.id, eligible_refs(wf, req.steps_fired)))
        return out

    mine = [rid for rid, refs in ctx.uow.read(candidates) if is_among(ctx, user, refs)]
    if not mine:
        return []

    def render(repo: Repository) -> list[dict[str, Any]]:
        out = []
        for start in range(0, len(mine), limit):
            rows = [
                r
                for r in (repo.get(rid) for rid in mine[start : start + limit])
                if r is not None and r.status == "pending"
            ]
            sponsors = sponsors_of(repo, config, rows)
            for req in rows:
                verdict = may_decide(
                    clicker=user,
                    decision=Decision.APPROVE,
                    eligible={user},
                    sponsors=sponsors[req.id],
                    already_decided_by=[d.by for d in repo.decisions(req.id)],
                )
                if not verdict.allowed:
                    continue
                out.append(render_data(ctx, repo, req))
                if len(out) >= limit:
                    return out
        return out

    return ctx.uow.read(render)


def audience(wf: Workflow) -> list[str]:
    """The people of a workflow, as references: its owners, approvers and every
    escalation step's targets."""
    return [
        wf.owner,
        wf.platform_owner,
        wf.security_owner,
        *wf.approver_ids,
        *(t for step in wf.escalation for t in step.to),
    ]


def show(ctx: Context, request_id: str, user: str | None) -> dict[str, Any] | None:
    """One request in full, for the people of its workflow (``audience``, as the request
    recorded it and as the workflow file says now) and the sponsors of its agents and
    chain. None for anyone else, exactly as for an unknown id."""
    config = ctx.config()

    def read(repo: Repository) -> tuple[dict[str, Any], list[str], frozenset[str]] | None:
        req = repo.get(request_id.strip())
        if req is None:
            return None
        refs = audience(workflow_snapshot(req))
        current = config.workflow(req.workflow)
        if current is not None:
            refs += audience(current)
        return render_data(ctx, repo, req), refs, sponsors_of(repo, config, [req])[req.id]

    if not user:
        return None
    found = ctx.uow.read(read)
    if found is None:
        return None
    data, refs, sponsors = found
    return data if user in sponsors or is_among(ctx, user, refs) else None


def exceptions_for(ctx: Context, user: str, limit: int = 20) -> list[dict[str, Any]] | None:
    """Unreviewed exceptions of the workflows ``user`` is security owner of; None if none."""
    config = ctx.config()
    workflows = [w.id for w in config.workflows if w.security_owner == user]

    def read(repo: Repository) -> list[dict[str, Any]]:
        rows = repo.unreviewed_exceptions(workflows, limit=limit * 2)
        return [render_data(ctx, repo, r) for r in rows if workflow_snapshot(r).security_owner == user][:limit]

    if not workflows:
        # security ownership is per request snapshot too; check recent ones
        return None
    return ctx.uow.read(read)


def typed_confirmation_for(ctx: Context, request_id: str) -> dict[str, Any] | None:
    """What the confirmation modal shows, when Approve on this request asks for the target to
    be typed and it is still pending; None otherwise (a plain click decides)."""
    from signoff.policy.rules import typed_confirmation

    def read(repo: Repository) -> dict[str, Any] | None:
        req = repo.get(request_id)
        if req is None or req.status != "pending":
            return None
        if not typed_confirmation(req.risk, workflow_snapshot(req).confirm):
            return None
        return {"id": req.id, "title": req.title, "risk": req.risk, "action": dict(req.action or {})}

    return ctx.uow.read(read)
