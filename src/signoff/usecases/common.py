"""Reads shared by several use-cases, inside the caller's transaction: the policy a request
runs under, who may never approve it, the agent's view of it. What a transaction owes
Slack and the outbox is recorded through ``usecases.effects``."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from signoff.config import Config, Workflow
from signoff.domain import thread as thread_fold
from signoff.domain.approval import step_sponsors
from signoff.domain.model import Status
from signoff.policy.evaluate import agent_sponsor
from signoff.usecases.ports import Repository

if TYPE_CHECKING:
    from signoff.store.tables import DecisionRow, RequestRow


def workflow_snapshot(req: RequestRow) -> Workflow:
    """The workflow definition the request started under (policy versioning)."""
    return Workflow.model_validate(req.policy)


def sponsors_of(repo: Repository, config: Config, reqs: list[RequestRow]) -> dict[str, frozenset[str]]:
    """Who may never approve each request (``domain.approval.step_sponsors``): the sponsors
    recorded when it was submitted (its agents' and its chain's), the chain's sponsor on
    the row, and the current sponsors of the agents that submitted and execute it (an
    agent whose sponsor changed since has both set aside)."""
    recorded = repo.recorded_sponsors([r.id for r in reqs])
    return {
        r.id: step_sponsors(
            submitter=agent_sponsor(config, r.submitted_by),
            executor=agent_sponsor(config, r.executor),
            chain=[r.sponsor, *recorded.get(r.id, ())],
        )
        for r in reqs
    }


def request_view(
    repo: Repository,
    req: RequestRow,
    *,
    viewer: str | None = None,
    decisions: list[DecisionRow] | None = None,
    thread: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The request object agents get. The grant appears only in the executor's view; the
    thread only in an agent's view (``viewer`` set). ``decisions`` / ``thread``: the
    request's decision rows / thread when the caller knows them already."""
    shown = [
        {
            "by": d.by,
            "decision": d.decision,
            "at": d.at.isoformat().replace("+00:00", "Z"),
            **({"reason": d.reason} if getattr(d, "reason", None) else {}),
        }
        for d in (repo.decisions(req.id) if decisions is None else decisions)
    ]
    grant = None
    if (
        viewer is not None
        and viewer == req.executor
        and req.grant_token
        and req.status in (Status.APPROVED, Status.EXECUTING)
    ):
        grant = req.grant_token
    view: dict[str, Any] = {
        "id": req.id,
        "status": req.status,
        "workflow": req.workflow,
        "title": req.title,
        "action": req.action,
        "action_sha256": req.action_sha256,
        "risk": req.risk,
        "justification": req.justification,
        "rollback": req.rollback,
        "parent_id": req.parent_id,
        "rollback_of": req.rollback_of,
        "submitted_by": req.submitted_by,
        "executor": req.executor,
        "sponsor": req.sponsor,
        "created_at": _z(req.created_at),
        "deadline": _z(req.deadline),
        "not_before": _z(req.not_before),
        # When the grant could be issued, as far as windows and freezes tell (null: as
        # soon as it is approved); set at submission and whenever a grant has to wait.
        "executable_from": _z(req.not_before)
        if req.status in (Status.PENDING, Status.APPROVED) and not req.grant_token
        else None,
        "rule": req.rule,
        "policy_sha256": req.policy_hash,
        "decisions": shown,
        "grant": grant,
        "grant_expires_at": _z(req.grant_expires_at) if grant else None,
        "outcome": req.outcome,
        "version": req.revision,
    }
    if viewer is not None:
        view["thread"] = thread_fold.fold(repo.thread_events(req.id)) if thread is None else thread
    return view


def _z(dt: datetime | None) -> str | None:
    return dt.isoformat().replace("+00:00", "Z") if dt else None
