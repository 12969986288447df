"""Steps shared by several use-cases, always inside the caller's transaction."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from signoff.config import Config, Workflow
from signoff.domain import thread as thread_fold
from signoff.domain.approval import Verdict, quorum_reachable, step_sponsors
from signoff.domain.identifiers import CHANNEL_RE, GROUP_RE
from signoff.domain.model import TERMINAL, ExceptionKind, Status, can_move
from signoff.store.repo import Repo
from signoff.store.tables import RequestRow


class IllegalTransition(Exception):
    pass


def workflow_snapshot(req: RequestRow) -> Workflow:
    """The workflow definition the request started under (policy versioning)."""
    return Workflow.model_validate(req.policy)


def agent_sponsor(config: Config, agent_id: str) -> str | None:
    agent = config.agent(agent_id)
    return agent.sponsor if agent is not None else None


def sponsors_of(repo: Repo, config: Config, reqs: list[RequestRow]) -> dict[str, frozenset[str]]:
    """Who may never approve each request (``domain.approval.step_sponsors``): the sponsors
    recorded when it was submitted (its agents' and its chain's), the chain's sponsor on
    the row, and the current sponsors of the agents that submitted and execute it (an
    agent whose sponsor changed since has both set aside)."""
    recorded = repo.recorded_sponsors([r.id for r in reqs])
    return {r.id: step_sponsors(submitter=agent_sponsor(config, r.submitted_by),
                                executor=agent_sponsor(config, r.executor),
                                chain=[r.sponsor, *recorded.get(r.id, ())])
            for r in reqs}


def possible_deciders(wf: Workflow) -> tuple[set[str], bool]:
    """Everyone who could ever decide a request of ``wf``: (the users named among its
    approvers and escalation targets, whether some are named through groups or channels)."""
    refs = set(wf.approver_ids) | {t for step in wf.escalation for t in step.to}
    groups = {r for r in refs if GROUP_RE.match(r) or CHANNEL_RE.match(r)}
    return refs - groups, bool(groups)


def approvable(wf: Workflow, sponsors: frozenset[str]) -> Verdict:
    """Whether ``wf``'s quorum can be reached once ``sponsors`` are set aside."""
    people, unresolved = possible_deciders(wf)
    return quorum_reachable(people=people, unresolved=unresolved, sponsors=sponsors,
                            required=wf.required_approvals)


def move(repo: Repo, req: RequestRow, new: Status, *, actor: str, now: datetime,
         data: dict[str, Any] | None = None) -> None:
    """Change status (the version column makes it a compare-and-set) and record it."""
    if not can_move(req.status, new):
        raise IllegalTransition(f"{req.status} → {new}")
    old = req.status
    req.status = new.value
    repo.touch(req)
    if old == Status.PENDING:
        req.decided_at = now
    repo.append_event(req, f"request.{new.value}", actor, {"from": old, "to": new.value, **(data or {})}, now)
    if new in TERMINAL:
        # Capture thread replies the Events API may have missed, once the request is closed.
        for msg in repo.messages(req.id, role="request"):
            repo.enqueue("slack.reconcile", {"message_id": msg.id}, now, request_id=req.id, delay=timedelta(seconds=2))


def refresh_messages(repo: Repo, req: RequestRow, now: datetime) -> None:
    """Every Slack copy of the request is re-rendered from its current state.

    Rendering happens at delivery, from what is committed then: one update per message
    per transaction is enough, however many steps of the transaction asked for it."""
    done = repo.session.info.setdefault("signoff.refreshed", set())
    for msg in repo.messages(req.id):
        if msg.id in done:
            continue
        done.add(msg.id)
        repo.enqueue("slack.update", {"message_id": msg.id}, now, request_id=req.id)


def thread_note(repo: Repo, req: RequestRow, text: str, now: datetime) -> None:
    """A note in the thread of the request's root message(s)."""
    for msg in repo.messages(req.id, role="request"):
        repo.enqueue("slack.thread", {"message_id": msg.id, "text": text}, now, request_id=req.id)


def record_exception(repo: Repo, req: RequestRow, kind: ExceptionKind, now: datetime, detail: str,
                     wf: Workflow | None = None) -> str:
    """The record part of ``raise_exception`` (on the request, re-opening review, and as
    evidence); returns where its security thread goes. ``wf``: the request's policy
    snapshot, when the caller has it parsed already."""
    req.exceptions = list(req.exceptions or []) + [{"kind": kind.value, "at": now.isoformat(), "detail": detail}]
    # a new exception re-opens review
    req.reviewed_at = None
    req.reviewed_by = None
    repo.append_event(req, "exception.raised", "signoff", {"kind": kind.value, "detail": detail}, now)
    wf = wf or workflow_snapshot(req)
    return wf.security_channel or wf.security_owner


def exception_note(kind: ExceptionKind, detail: str) -> str:
    """The note in a request's security thread for an exception after the first."""
    return f"New exception: {kind.value}" + (f" — {detail}" if detail else "")


def raise_exception(repo: Repo, req: RequestRow, kind: ExceptionKind, now: datetime, *,
                    detail: str = "") -> None:
    """Record an exception for security review: one thread per request, notes after the first."""
    target = record_exception(repo, req, kind, now, detail)
    msg, created = repo.add_message(req.id, "exception", target, now)
    if created:
        repo.enqueue("slack.post", {"message_id": msg.id}, now, request_id=req.id)
    else:
        repo.enqueue("slack.update", {"message_id": msg.id}, now, request_id=req.id)
        repo.enqueue("slack.thread", {"message_id": msg.id, "text": exception_note(kind, detail)}, now,
                     request_id=req.id)


def request_view(repo: Repo, req: RequestRow, *, viewer: str | None = None,
                 decisions: list | None = None, thread: list | None = None) -> dict[str, Any]:
    """The request object agents get. The grant appears only in the executor's view; the
    thread only in an agent's view (``viewer`` set). ``decisions`` / ``thread``: the
    request's decision rows / thread when the caller knows them already."""
    decisions = [
        {"by": d.by, "decision": d.decision, "at": d.at.isoformat().replace("+00:00", "Z"),
         **({"reason": d.reason} if getattr(d, "reason", None) else {})}
        for d in (repo.decisions(req.id) if decisions is None else decisions)
    ]
    grant = None
    if (viewer is not None and viewer == req.executor and req.grant_token
            and req.status in (Status.APPROVED, Status.EXECUTING)):
        grant = req.grant_token
    view = {
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
        "executable_from": _z(req.not_before) if req.status in (Status.PENDING, Status.APPROVED)
        and not req.grant_token else None,
        "rule": req.rule,
        "policy_sha256": req.policy_hash,
        "decisions": decisions,
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
