"""submit: an agent proposes an action.

The policy decides (``policy.evaluate.plan``, pure and shared with ``signoff policy
explain`` and the Slack "Roll back" button); ``create_request`` records a planned request
inside the caller's transaction.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from signoff.config import Config
from signoff.domain.approval import step_sponsors
from signoff.domain.budget import scope_key
from signoff.domain.canonical import canonical_json, sha256_hex
from signoff.domain.chain import GENESIS
from signoff.domain.errors import Conflict, DomainError, Forbidden, Invalid, NotFound
from signoff.domain.ladder import Ladder, next_due
from signoff.domain.model import Status
from signoff.policy import windows as win
from signoff.policy.evaluate import Plan, check_approvable, plan, schedule_of
from signoff.schemas import Submission
from signoff.usecases.common import request_view, sponsors_of
from signoff.usecases.effects import Effects, transaction
from signoff.usecases.grant import issue_grant
from signoff.usecases.ports import Context, Repository

if TYPE_CHECKING:
    from signoff.store.tables import RequestRow

IDEMPOTENCY_KEEP = timedelta(hours=48)
# Prefix of the idempotency row a signed submission leaves under its own name. The tab
# cannot start a client's Idempotency-Key (printable characters only): the two never meet.
SIGNED_KEY = "\tsigned:"
# A chain is looked at up to this many steps (a bound on work, not a limit on chains).
CHAIN_SCAN = 1000
# Statuses a request may be rolled back from: it ran, or started to.
ROLLBACK_FROM = (Status.EXECUTING, Status.SUCCEEDED, Status.FAILED)
# A chain is never continued through a request that was withdrawn or refused.
DEAD_PARENT = (Status.CANCELLED, Status.REJECTED, Status.EXPIRED)


@dataclass(frozen=True)
class Submitted:
    request: dict[str, Any]
    created: bool


def parse_submission(body: Any) -> Submission:
    """The body as a Submission; Invalid (422) naming every bad field otherwise."""
    try:
        return Submission.model_validate(body)
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in e["loc"]) or "body" for e in exc.errors()})
        details = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())
        raise Invalid(f"invalid submission: {details}", fields=fields) from None


def submit(
    ctx: Context, *, agent_id: str, body: dict[str, Any], idempotency_key: str | None = None, signed: str | None = None
) -> Submitted:
    """Validate and record a proposal; queue its Slack post. ``body`` is the parsed JSON.

    ``signed`` names the signed request (a digest of its timestamp and raw body, from the
    API's authentication): the same signed request sent again answers the first request,
    as an ``Idempotency-Key`` retry does, with or without a key and whatever key it has.
    """
    sub = parse_submission(body)
    body_hash = hashlib.sha256(canonical_json(body)).hexdigest() if idempotency_key else ""
    config = ctx.config()
    # (key, body hash it must match): the signed request first, so that dropping or
    # changing the Idempotency-Key of a replay makes no second request.
    keys = ([(SIGNED_KEY + signed, signed)] if signed else []) + (
        [(idempotency_key, body_hash)] if idempotency_key else []
    )

    def replay(repo: Repository) -> dict[str, Any] | None:
        for key, expected in keys:
            found = _replay(repo, agent_id, key, expected)
            if found is not None:
                return found
        return None

    # A client's retry is common: answer it before planning. A replayed signature is rare;
    # the transaction's own look-up catches it (one read fewer per submission).
    if idempotency_key:
        found = ctx.uow.read(lambda repo: replay(repo))
        if found is not None:
            return Submitted(found, created=False)

    try:
        planned = plan(config, agent_id, sub, ctx.clock())
    except DomainError:
        # The policy refuses it now (the workflow changed since?): a replay still answers
        # the request it made then, as a retry with a key would.
        found = ctx.uow.read(lambda repo: replay(repo)) if keys else None
        if found is None:
            raise
        return Submitted(found, created=False)

    def tx(repo: Repository, fx: Effects) -> Submitted:
        now = fx.now
        if keys:
            found = replay(repo)
            if found is not None:
                return Submitted(found, created=False)
        # The moment of record is the transaction's: look at the windows again then.
        p = replace(planned, verdict=win.check([schedule_of(planned.effective)], now))
        req = create_request(ctx, fx, p, body)
        for key, expected in keys:
            repo.remember_idempotency(agent_id, key, expected, req.id, now)
        repo.flush()
        # Decided by nobody yet unless the policy approved it: no need to ask the database.
        decided = req.status != Status.PENDING.value
        # A new request has no thread yet either.
        return Submitted(
            request_view(repo, req, viewer=agent_id, decisions=None if decided else [], thread=[]), created=True
        )

    # Group commit: concurrent submissions share one commit (each its own savepoint).
    result = transaction(ctx, tx, batch=True)
    if result.created:
        ctx.notify()
    return result


def create_request(
    ctx: Context, fx: Effects, p: Plan, body: dict[str, Any], *, origin: dict[str, Any] | None = None
) -> RequestRow:
    """Record a planned request in the caller's transaction: links (chain, rollback), the
    effective policy snapshot, automatic approval within budget, the Slack post."""
    repo, now = fx.repo, fx.now
    sub, wf, eff = p.sub, p.workflow, p.effective
    agent_id = p.agent_id
    sponsor, sponsors = p.sponsor, p.sponsors
    if sub.parent_id:
        parent = joinable_parent(repo, agent_id, sub.parent_id)
        sponsor = parent.sponsor  # a chain keeps its human sponsor
        # ...and none of the sponsors already on it may approve the new step.
        sponsors = step_sponsors(
            submitter=None, executor=None, chain=[*sponsors, *chain_sponsors(ctx.config(), repo, parent)]
        )
        if sponsors != p.sponsors:
            check_approvable(p.evaluation, sponsors)
    original = None
    if sub.rollback_of:
        original = repo.get(sub.rollback_of)
        if original is None or agent_id not in (original.submitted_by, original.executor):
            raise NotFound(f"unknown request to roll back {sub.rollback_of!r}")
        if original.status not in ROLLBACK_FROM:
            raise Conflict(
                f"request {original.id} is {original.status}; only a request that executed "
                "(executing, succeeded or failed) can be rolled back"
            )
    action = body["action"]
    not_before = None if p.verdict.allowed else p.verdict.not_before
    snapshot, snapshot_hash, workflow_hash = _policy_snapshot(p)
    req = repo.new_request(
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
        executor=p.executor,
        sponsor=sponsor,
        status=Status.PENDING.value,
        created_at=now,
        deadline=now + eff.timeout,
        steps_fired=0,
        not_before=not_before,
        policy=snapshot,
        policy_hash=snapshot_hash,
        rule=p.evaluation.rule_name,
        exceptions=[],
        event_count=0,
        head_hash=GENESIS,
    )
    req.due_at = next_due(now, req.deadline, Ladder.of(eff), 0)
    repo.insert_request(
        req,
        (
            "request.submitted",
            agent_id,
            {
                "workflow": wf.id,
                "title": sub.title,
                "action": action,
                "action_sha256": req.action_sha256,
                "risk": sub.risk,
                "justification": sub.justification,
                "prompt": sub.prompt,
                "rollback": req.rollback,
                "parent_id": sub.parent_id,
                "rollback_of": sub.rollback_of,
                "submitted_by": agent_id,
                "executor": p.executor,
                "sponsor": sponsor,
                "sponsors": sorted(sponsors),
                "deadline": req.deadline.isoformat(),
                "policy_sha256": req.policy_hash,
                "workflow_sha256": workflow_hash,
                "rule": req.rule,
                "rules_matched": [r.name for r in p.evaluation.results if r.matched],
                "owners": {
                    "owner": eff.owner,
                    "platform_owner": eff.platform_owner,
                    "security_owner": eff.security_owner,
                },
                "approvers": eff.approver_ids,
                "required_approvals": eff.required_approvals,
                "executable_from": win.iso(not_before) if not_before else None,
                "schedule": p.verdict.reason,
                **(origin or {}),
            },
        ),
        now,
    )
    if original is not None:
        # On the original's chain too (and a compare-and-set on it: two rollbacks racing
        # from one click are serialised).
        repo.append_event(original, "rollback.linked", agent_id, {"rollback_request": req.id, **(origin or {})}, now)
    fx.fresh(req)
    if p.evaluation.auto_approve is not None:
        _auto_approve(ctx, fx, req, p)
    msg, _ = fx.message(req, "request", eff.channel or eff.owner)
    fx.enqueue(req, "slack.post", {}, msg)
    # Written before the ledger's turn is taken, which is held until commit.
    fx.flush()
    # Last: on PostgreSQL this queues for the ledger head until the transaction commits.
    repo.ledger_append(req.id, now)
    return req


def _auto_approve(ctx: Context, fx: Effects, req: RequestRow, p: Plan) -> None:
    """Within the rule's budget: approved by policy and the grant issued; beyond it the
    request goes to people as usual. Either way the budget decision is evidence."""
    repo, now = fx.repo, fx.now
    rule, auto = p.evaluation.rule, p.evaluation.auto_approve
    assert rule is not None and auto is not None, "an automatic approval is a rule's (policy.evaluate)"
    budget = auto.budget
    key = scope_key(p.workflow.id, rule.name, auto.scope, p.sub.action.target)
    repo.lock_scope(key)  # concurrent submissions count one at a time
    used = repo.budget_used(key, budget.since(now))
    data = {"rule": rule.name, "budget": str(budget), "scope": auto.scope, "used": used}
    if not budget.allows(used):
        repo.append_event(
            req,
            "policy.auto_approve_skipped",
            "signoff",
            {**data, "reason": "budget spent: the request goes to people"},
            now,
        )
        return
    by = f"policy:rule:{rule.name}"
    repo.spend_budget(key, req.id, now)
    repo.add_decision(req.id, by, "approve", now)
    repo.append_event(req, "decision.recorded", by, {"decision": "approve", **data, "used": used + 1}, now)
    fx.move(req, Status.APPROVED, actor=by, data={"rule": rule.name})
    req.due_at = None
    issue_grant(ctx, fx, req)


def _policy_snapshot(p: Plan) -> tuple[dict[str, Any], str, str]:
    """The effective policy as stored on the request, its hash, and the workflow's hash.

    Each is computed once per loaded workflow definition (RFC 8785 hashing in pure Python
    is slow), not once per submission: see ``Workflow.snapshot`` / ``policy_hash``.
    """
    return p.effective.snapshot(), p.effective.policy_hash(), p.workflow.policy_hash()


def _replay(repo: Repository, agent_id: str, key: str, body_hash: str) -> dict[str, Any] | None:
    row = repo.idempotency(agent_id, key)
    if row is None:
        return None
    if row.body_sha256 != body_hash:
        raise Invalid("Idempotency-Key was already used with a different body", fields=["Idempotency-Key"])
    req = repo.get(row.request_id)
    return request_view(repo, req, viewer=agent_id) if req else None


def joinable_parent(repo: Repository, agent_id: str, parent_id: str) -> RequestRow:
    """The request a new step continues (``parent_id``). An agent joins a chain only
    through a request it submitted or executes and that is not cancelled, rejected or
    expired: 404 for an unknown id, 403 (naming ``parent_id``) otherwise."""
    parent = repo.get(parent_id)
    if parent is None:
        raise NotFound(f"unknown parent request {parent_id!r}", fields=["parent_id"])
    if agent_id not in (parent.submitted_by, parent.executor):
        raise Forbidden(
            f"parent_id: agent {agent_id!r} neither submitted nor executes request {parent_id}; "
            "a chain is continued only through a request of one's own",
            fields=["parent_id"],
        )
    if parent.status in DEAD_PARENT:
        raise Forbidden(
            f"parent_id: request {parent_id} is {parent.status}; a chain is not continued through "
            "a cancelled, rejected or expired request",
            fields=["parent_id"],
        )
    return parent


def chain_steps(repo: Repository, req: RequestRow) -> list[RequestRow]:
    """Every step of the chain ``req`` belongs to: its ancestors up to the root, and
    everything that continues from the root."""
    seen: set[str] = set()
    node = req
    while node.parent_id and node.id not in seen and len(seen) < CHAIN_SCAN:
        seen.add(node.id)
        parent = repo.get(node.parent_id)
        if parent is None:
            break
        node = parent
    steps: list[RequestRow] = []
    todo, visited = [node], set[str]()
    while todo and len(visited) < CHAIN_SCAN:
        step = todo.pop()
        if step.id in visited:
            continue
        visited.add(step.id)
        steps.append(step)
        todo.extend(repo.children(step.id))
    return steps


def chain_sponsors(config: Config, repo: Repository, req: RequestRow) -> frozenset[str]:
    """Every sponsor already on the chain ``req`` belongs to: each step's chain sponsor,
    the sponsors it set aside when submitted, and its agents' sponsors now."""
    return frozenset().union(*sponsors_of(repo, config, chain_steps(repo, req)).values())
