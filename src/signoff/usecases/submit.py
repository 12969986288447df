"""submit: an agent proposes an action."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from signoff.config import Config, Workflow
from signoff.domain.canonical import canonical_json, sha256_hex
from signoff.domain.chain import GENESIS
from signoff.domain.errors import Forbidden, Invalid, NotFound
from signoff.domain.ladder import Ladder, next_due
from signoff.domain.model import Status
from signoff.schemas import Submission
from signoff.store.repo import Repo
from signoff.store.tables import RequestRow
from signoff.usecases.common import request_view
from signoff.usecases.ports import Context

IDEMPOTENCY_KEEP = timedelta(hours=48)


@dataclass(frozen=True)
class Submitted:
    request: dict[str, Any]
    created: bool


def ladder_of(wf: Workflow) -> Ladder:
    return Ladder(tuple(s.after for s in wf.escalation), wf.timeout, wf.repeat)


def check_permission(config: Config, agent_id: str, sub: Submission) -> Workflow:
    """404 for an unknown workflow, 403 for an agent or executor outside it."""
    wf = config.workflow(sub.workflow)
    if wf is None:
        raise NotFound(f"unknown workflow {sub.workflow!r}")
    if agent_id not in wf.agents:
        raise Forbidden(f"agent {agent_id!r} may not submit to workflow {wf.id!r}")
    executor = sub.executor or agent_id
    if executor not in wf.agents or config.agent(executor) is None:
        raise Forbidden(f"executor {executor!r} is not one of workflow {wf.id!r}'s agents")
    return wf


def check_rollback(wf: Workflow, sub: Submission) -> None:
    if sub.risk in ("high", "critical") and not sub.has_rollback_plan():
        raise Invalid(f"a {sub.risk}-risk request needs a rollback plan (rollback.description)",
                      fields=["rollback"])


def submit(ctx: Context, *, agent_id: str, body: dict[str, Any], idempotency_key: str | None = None) -> Submitted:
    """Validate and record a proposal; queue its Slack post. ``body`` is the parsed JSON."""
    try:
        sub = Submission.model_validate(body)
    except Exception as exc:  # pydantic.ValidationError
        from pydantic import ValidationError

        if not isinstance(exc, ValidationError):
            raise
        fields = sorted({".".join(str(p) for p in e["loc"]) or "body" for e in exc.errors()})
        details = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())
        raise Invalid(f"invalid submission: {details}", fields=fields) from None
    body_hash = hashlib.sha256(canonical_json(body)).hexdigest()
    config = ctx.config()

    if idempotency_key:
        found = ctx.store.read(lambda s: _replay(Repo(s), agent_id, idempotency_key, body_hash))
        if found is not None:
            return Submitted(found, created=False)

    wf = check_permission(config, agent_id, sub)
    check_rollback(wf, sub)
    agent = config.agent(agent_id)
    executor = sub.executor or agent_id

    def tx(session) -> Submitted:
        repo = Repo(session)
        now = ctx.clock()
        if idempotency_key:
            replay = _replay(repo, agent_id, idempotency_key, body_hash)
            if replay is not None:
                return Submitted(replay, created=False)
        sponsor = agent.sponsor
        if sub.parent_id:
            parent = repo.get(sub.parent_id)
            if parent is None or agent_id not in (parent.submitted_by, parent.executor) and \
                    agent_id not in _chain_agents(repo, parent):
                raise NotFound(f"unknown parent request {sub.parent_id!r}")
            sponsor = parent.sponsor  # a chain keeps its human sponsor
        action = body["action"]
        req = RequestRow(
            id=str(uuid.uuid4()),
            workflow=wf.id,
            title=sub.title,
            action=action,
            action_sha256=sha256_hex(action),
            risk=sub.risk,
            justification=sub.justification,
            prompt=sub.prompt,
            rollback=body.get("rollback"),
            parent_id=sub.parent_id,
            rollback_of=sub.rollback_of,
            submitted_by=agent_id,
            executor=executor,
            sponsor=sponsor,
            status=Status.PENDING.value,
            created_at=now,
            deadline=now + wf.timeout,
            steps_fired=0,
            policy=wf.model_dump(mode="json"),
            policy_hash=wf.policy_hash(),
            exceptions=[],
            event_count=0,
            head_hash=GENESIS,
        )
        req.due_at = next_due(now, req.deadline, ladder_of(wf), 0)
        repo.add_request(req)
        repo.ledger_append(req.id, now)
        repo.append_event(req, "request.submitted", agent_id, {
            "workflow": wf.id, "title": sub.title, "action": action, "action_sha256": req.action_sha256,
            "risk": sub.risk, "justification": sub.justification, "prompt": sub.prompt,
            "rollback": req.rollback, "parent_id": sub.parent_id, "rollback_of": sub.rollback_of,
            "submitted_by": agent_id, "executor": executor, "sponsor": sponsor,
            "deadline": req.deadline.isoformat(), "policy_sha256": req.policy_hash,
            "owners": {"owner": wf.owner, "platform_owner": wf.platform_owner,
                       "security_owner": wf.security_owner},
            "approvers": wf.approver_ids, "required_approvals": wf.required_approvals,
        }, now)
        msg, _ = repo.add_message(req.id, "request", wf.channel or wf.owner, now)
        repo.enqueue("slack.post", {"message_id": msg.id}, now, request_id=req.id)
        if idempotency_key:
            repo.remember_idempotency(agent_id, idempotency_key, body_hash, req.id, now)
        session.flush()
        return Submitted(request_view(repo, req, viewer=agent_id), created=True)

    result = ctx.store.transaction(tx)
    if result.created:
        ctx.notify()
    return result


def _replay(repo: Repo, agent_id: str, key: str, body_hash: str) -> dict[str, Any] | None:
    row = repo.idempotency(agent_id, key)
    if row is None:
        return None
    if row.body_sha256 != body_hash:
        raise Invalid("Idempotency-Key was already used with a different body", fields=["Idempotency-Key"])
    req = repo.get(row.request_id)
    return request_view(repo, req, viewer=agent_id) if req else None


def _chain_agents(repo: Repo, req: RequestRow) -> set[str]:
    """Every agent that prepared or executes a step of the chain ``req`` belongs to."""
    agents: set[str] = set()
    seen = set()
    node = req
    while node is not None and node.id not in seen:
        seen.add(node.id)
        agents |= {node.submitted_by, node.executor}
        node = repo.get(node.parent_id) if node.parent_id else None
    return agents
