"""Use-cases behind Slack delivery and Slack-originated events other than clicks."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from signoff.domain.model import Status
from signoff.policy.rules import typed_confirmation
from signoff.usecases.common import request_view, workflow_snapshot
from signoff.usecases.ports import Context, RenderReads, Repository

if TYPE_CHECKING:
    from signoff.store.tables import DecisionRow, RequestRow, SlackMessageRow


class _RenderRepo:
    """A read-only repository for one rendering: a request's decisions and rollbacks are
    read once, however many of the view's parts ask for them."""

    def __init__(self, repo: Repository):
        self._repo = repo
        self._decisions: dict[str, list[DecisionRow]] = {}
        self._rollbacks: dict[str, list[RequestRow]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._repo, name)

    def decisions(self, request_id: str) -> list[DecisionRow]:
        if request_id not in self._decisions:
            self._decisions[request_id] = self._repo.decisions(request_id)
        return self._decisions[request_id]

    def rollbacks_of(self, request_id: str) -> list[RequestRow]:
        if request_id not in self._rollbacks:
            self._rollbacks[request_id] = self._repo.rollbacks_of(request_id)
        return self._rollbacks[request_id]


def _message_data(msg: SlackMessageRow) -> dict[str, Any]:
    return {
        "id": msg.id,
        "role": msg.role,
        "target": msg.target,
        "channel": msg.channel,
        "ts": msg.ts,
        "request_id": msg.request_id,
        "digest_id": msg.digest_id,
    }


def message_context(ctx: Context, message_id: int) -> dict[str, Any] | None:
    """Everything needed to render one Slack message of a request, as plain data."""

    def read(repo: Repository) -> dict[str, Any] | None:
        row = repo.message_with_request(message_id)  # the message and its request in one query
        if row is None:
            return None
        msg, req = row
        return {"message": _message_data(msg), "request": render_data(ctx, _RenderRepo(repo), req)}

    return ctx.uow.read(read)


class _Preloaded:
    """The repository reads rendering asks for (decisions, rollbacks), answered from rows read
    beforehand for several requests at once."""

    def __init__(self, decisions: dict[str, list[DecisionRow]], rollbacks: dict[str, list[RequestRow]]):
        self._decisions = decisions
        self._rollbacks = rollbacks

    def decisions(self, request_id: str) -> list[DecisionRow]:
        return self._decisions.get(request_id, [])

    def rollbacks_of(self, request_id: str) -> list[RequestRow]:
        return self._rollbacks.get(request_id, [])


class ClaimRead:
    """``message_context`` for several messages, read together (a few Core queries, no
    ORM objects): the messages, their requests, the requests' decisions and, for requests
    that executed, their rollbacks. A request is rendered once, however many of its
    messages ask (its evidence link signed once)."""

    def __init__(self, ctx: Context, messages: dict[int, dict[str, Any]], requests: dict[str, Any], repo: _Preloaded):
        self.ctx = ctx
        self.messages = messages  # id -> _message_data; only messages whose request exists
        self.requests = requests
        self.repo = repo
        self._rendered: dict[str, dict[str, Any]] = {}

    def message(self, message_id: int) -> dict[str, Any] | None:
        return self.messages.get(message_id)

    def context(self, message_id: int) -> dict[str, Any] | None:
        msg = self.messages.get(message_id)
        if msg is None:
            return None
        rid = msg["request_id"]
        data = self._rendered.get(rid)
        if data is None:
            data = self._rendered[rid] = render_data(self.ctx, self.repo, self.requests[rid])
        return {"message": dict(msg), "request": data}

    def digested(self, message_id: int, digest_id: int) -> None:
        """The message is shown in a digest from now on (its own post is not made)."""
        msg = self.messages.get(message_id)
        if msg is not None:
            self.messages[message_id] = {**msg, "digest_id": digest_id}

    def policy(self, request_id: str) -> dict[str, Any] | None:
        """The request's policy snapshot as stored (plain data)."""
        req = self.requests.get(request_id)
        return req.policy if req is not None else None

    def posted(self, message_id: int, channel: str, ts: str) -> None:
        """Slack took the post (and it is recorded before the request's next row runs)."""
        msg = self.messages.get(message_id)
        if msg is not None:
            self.messages[message_id] = {**msg, "channel": channel, "ts": ts}


def read_messages(ctx: Context, message_ids: Iterable[int]) -> ClaimRead:
    from signoff.usecases.submit import ROLLBACK_FROM

    ids = sorted(set(message_ids))

    def read(repo: Repository) -> ClaimRead:
        msgs, reqs, decisions, rollbacks = repo.render_rows(ids, ROLLBACK_FROM)
        messages = {row.id: _message_data(row) for row in msgs if row.request_id in reqs}
        return ClaimRead(ctx, messages, reqs, _Preloaded(decisions, rollbacks))

    return ctx.uow.read(read)


def message_ref(ctx: Context, message_id: int) -> dict[str, Any] | None:
    """Where one Slack message is (no rendering): for thread replies and look-ups."""

    def read(repo: Repository) -> dict[str, Any] | None:
        msg = repo.request_message(message_id)
        return _message_data(msg) if msg is not None else None

    return ctx.uow.read(read)


# What a rendering shows of a request's policy snapshot, by the snapshot's hash: the
# snapshot never changes after submission and most requests share a few, so it is parsed
# (a pydantic validation) once per snapshot, not once per message.
_POLICY_FIELDS: dict[str, tuple[dict[str, Any], int, tuple[str, ...], str | None]] = {}


def _policy_fields(req: RequestRow) -> tuple[dict[str, Any], int, tuple[str, ...], str | None]:
    key = req.policy_hash
    got = _POLICY_FIELDS.get(key) if key else None
    if got is None:
        wf = workflow_snapshot(req)
        got = (
            {"owner": wf.owner, "platform_owner": wf.platform_owner, "security_owner": wf.security_owner},
            wf.required_approvals,
            tuple(wf.approver_ids),
            wf.confirm,
        )
        if key:
            if len(_POLICY_FIELDS) >= 1024:
                _POLICY_FIELDS.clear()
            _POLICY_FIELDS[key] = got
    return got


def render_data(ctx: Context, repo: RenderReads, req: RequestRow) -> dict[str, Any]:
    """request_view plus what a Slack rendering shows beyond the agent's view."""
    owners, required, approvers, confirm = _policy_fields(req)
    # With no viewer, request_view reads nothing of the repository but the decisions.
    data = request_view(cast("Repository", repo), req, viewer=None)
    data.update(
        prompt=req.prompt,
        owners=dict(owners),
        required_approvals=required,
        approvers=list(approvers),
        steps_fired=req.steps_fired,
        exceptions=list(req.exceptions or []),
        reviewed_by=req.reviewed_by,
        reviewed_at=req.reviewed_at.isoformat().replace("+00:00", "Z") if req.reviewed_at else None,
        grant_expires_at=req.grant_expires_at.isoformat().replace("+00:00", "Z") if req.grant_expires_at else None,
        evidence_url=evidence_url(ctx, req.id),
        typed_confirmation=typed_confirmation(req.risk, confirm),
        # Approve is a link to the identity provider's sign-in (usecases.step_up)
        step_up_url=f"{ctx.public_url}/step-up/{req.id}" if (req.policy or {}).get("step_up") else None,
    )
    data.update(policy_render_data(repo, req))
    return data


def policy_render_data(repo: RenderReads, req: RequestRow) -> dict[str, Any]:
    """What runtime policy adds to a message: the rule, automatic approval (and whether it
    can still be revoked), when it could execute, and the rollback path."""
    from signoff.usecases.revoke import auto_approved_by, revocable
    from signoff.usecases.rollback import offers_rollback, rollback_action
    from signoff.usecases.submit import ROLLBACK_FROM

    return {
        "auto_approved_by": auto_approved_by(repo, req),  # rule name, or None
        "revocable": revocable(repo, req),  # show a "Revoke" button (signoff.revoke)
        "can_roll_back": offers_rollback(repo, req),  # show a "Roll back" button (signoff.rollback)
        "rollback_action": rollback_action(req),
        # Only a request that executed can have been rolled back (submit.ROLLBACK_FROM).
        "rollback_requests": [{"id": r.id, "status": r.status} for r in repo.rollbacks_of(req.id)]
        if req.status in ROLLBACK_FROM
        else [],
        "approval_expires_at": req.approval_expires_at.isoformat().replace("+00:00", "Z")
        if req.approval_expires_at
        else None,
    }


def evidence_url(ctx: Context, request_id: str) -> str:
    exp = int(ctx.clock().timestamp()) + ctx.evidence_link_seconds
    return f"{ctx.public_url}/evidence/{request_id}?{ctx.keys.sign_link(request_id, exp)}"


def record_posted(ctx: Context, *, message_id: int, channel: str, ts: str) -> None:
    """Slack accepted a post: keep where it is so later updates find it."""
    ctx.uow.transaction(lambda repo: record_posted_in(repo, ctx.clock(), message_id=message_id, channel=channel, ts=ts))


def record_posted_in(repo: Repository, now: datetime, *, message_id: int, channel: str, ts: str) -> bool:
    """``record_posted`` inside a transaction the caller owns (the outbox records several
    posts in the transaction that finishes their rows). False: already recorded."""
    where = repo.record_post(message_id, channel, ts, now)
    if where is None:
        return False  # gone, or recorded already
    request_id, role, target = where
    repo.append_event_by_id(
        request_id, "slack.posted", "signoff", {"role": role, "target": target, "channel": channel, "ts": ts}, now
    )
    return True


def record_comment_posted_in(
    repo: Repository, now: datetime, *, request_id: str, comment_id: str, channel: str, thread_ts: str, ts: str
) -> None:
    """An agent's comment is in Slack: where, as evidence (the agent's view does not change)."""
    repo.append_event_by_id(
        request_id,
        "slack.posted",
        "signoff",
        {"role": "comment", "comment_id": comment_id, "channel": channel, "thread_ts": thread_ts, "ts": ts},
        now,
    )


def is_open(status: str) -> bool:
    return status == Status.PENDING


def now_iso(now: datetime) -> str:
    return now.isoformat().replace("+00:00", "Z")
