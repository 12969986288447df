"""Step-up approvals: an approver proves a fresh sign-in at the company's identity
provider before an approval is recorded.

``begin`` keeps a single-use flow (state, nonce, PKCE verifier, the browser's cookie) when
the approver opens the Approve link; ``take`` hands it to the provider's callback once;
``conclude`` checks what the verified ID token proves, finds the Slack user by its email
and whether they may approve now, and ``approve`` records the approval through ``decide``,
as a click would be, with the proof in its evidence. Every refusal (``refuse``) is a
``step_up.refused`` evidence event and an exception for security; nothing is decided.

A request that also asks for a typed confirmation (policy.rules.typed_confirmation) is not
approved by the callback: ``conclude`` keeps who signed in, and what the token proved, in
the flow row and answers ``ToConfirm``, the form asking for the text the Slack modal asks
for; ``confirm`` takes the form's post (bound to that flow and its browser, until the
flow expires) and approves through ``decide`` with the typed text, once it matches.

No network call here runs inside a transaction: the directory look-up is made before.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from signoff.config import StepUp
from signoff.domain.approval import SPONSOR_REASON, may_decide
from signoff.domain.model import Decision, ExceptionKind, Status
from signoff.domain.step_up import REASONS, Refusal, check_claims
from signoff.policy.rules import confirmation_text
from signoff.usecases import queries
from signoff.usecases.common import workflow_snapshot
from signoff.usecases.decide import CONFIRM_REFUSED, DecideResult, decide, deciders
from signoff.usecases.effects import Effects, transaction
from signoff.usecases.ports import Context, Repository

if TYPE_CHECKING:
    from signoff.store.step_up import Held
    from signoff.store.tables import RequestRow

FLOW_TTL = timedelta(minutes=10)


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class NotFound(Exception):
    """No such request."""


@dataclass(frozen=True)
class Started:
    """A flow kept for the callback: what the authorization request carries, and the
    cookie value that binds the flow to the browser that started it."""

    request_id: str
    step_up: StepUp
    state: str
    nonce: str
    code_verifier: str
    browser: str


@dataclass(frozen=True)
class Taken:
    request_id: str
    step_up: StepUp
    nonce: str
    code_verifier: str
    flow: str  # the flow's key (its state's hash)


@dataclass(frozen=True)
class ToConfirm:
    """The sign-in verified, and the request asks for a typed confirmation: nothing is
    recorded until the approver types ``confirmation_text(request["action"])`` in the form
    whose secret is ``token`` (its hash is kept in the flow), before ``expires_at``.
    ``request`` is what the Slack modal shows (queries.typed_confirmation_for);
    ``mismatch``: the form is shown again after a wrong text."""

    token: str
    request: dict[str, Any]
    approver: str
    email: str
    expires_at: datetime
    mismatch: bool = False


def step_up_of(ctx: Context, request_id: str) -> tuple[StepUp | None, str]:
    """(the request's step-up configuration, its status); NotFound when it does not exist."""

    def read(repo: Repository) -> tuple[StepUp | None, str] | None:
        req = repo.get(request_id)
        return None if req is None else (workflow_snapshot(req).step_up, req.status)

    found = ctx.uow.read(read)
    if found is None:
        raise NotFound(request_id)
    return found


def begin(ctx: Context, *, request_id: str) -> Started:
    """Start a sign-in for approving ``request_id``. NotFound; Refusal ``not_step_up`` or
    ``not_pending`` (nothing recorded: nobody has signed in yet)."""
    su, status = step_up_of(ctx, request_id)
    if su is None:
        raise Refusal("not_step_up")
    if status != Status.PENDING:
        raise Refusal("not_pending", f"it is {status}")
    started = Started(
        request_id=request_id,
        step_up=su,
        state=secrets.token_urlsafe(32),
        nonce=secrets.token_urlsafe(32),
        code_verifier=secrets.token_urlsafe(48),
        browser=secrets.token_urlsafe(32),
    )
    now = ctx.clock()
    ctx.uow.transaction(
        lambda repo: repo.add_flow(
            state_hash=_hash(started.state),
            request_id=request_id,
            browser_hash=_hash(started.browser),
            nonce=started.nonce,
            code_verifier=started.code_verifier,
            issuer=su.issuer,
            now=now,
            ttl=FLOW_TTL,
        )
    )
    return started


def take(ctx: Context, *, state: str, browser: str) -> Taken:
    """The flow ``state`` names, taken once, for the browser that started it. Refusal
    ``bad_state`` (unknown, or another browser), ``replayed`` or ``expired_flow``; those
    that name a request are recorded on it."""
    if not state or len(state) > 200:
        raise Refusal("bad_state", "no state")
    state_hash = _hash(state)

    def tx(repo: Repository, fx: Effects) -> tuple[Taken | None, Refusal | None]:
        now = fx.now
        flow, mine = repo.take_flow(state_hash, now)
        if flow is None:
            return None, Refusal("bad_state", "unknown state")
        if not mine:
            refusal = Refusal("replayed", f"state used at {flow.used_at.isoformat() if flow.used_at else '?'}")
        elif not browser or not secrets.compare_digest(_hash(browser), flow.browser_hash):
            refusal = Refusal("bad_state", "the callback came to a browser that did not start this sign-in")
        elif now >= flow.expires_at:
            refusal = Refusal("expired_flow", f"started more than {int(FLOW_TTL.total_seconds() // 60)} minutes ago")
        else:
            refusal = None
        req = repo.get(flow.request_id)
        if req is None:
            return None, Refusal("bad_state", "the request is gone")
        if refusal is not None:
            _record(fx, req, refusal, actor="anonymous", data={"issuer": flow.issuer})
            return None, refusal
        su = workflow_snapshot(req).step_up
        if su is None:
            return None, Refusal("not_step_up")
        return Taken(flow.request_id, su, flow.nonce, flow.code_verifier, flow.state_hash), None

    taken, refusal = transaction(ctx, tx)
    if refusal is not None:
        ctx.notify()
        raise refusal
    assert taken is not None, "tx answers the flow taken or a refusal"
    return taken


def _record(fx: Effects, req: RequestRow, refusal: Refusal, *, actor: str, data: dict[str, Any]) -> None:
    reason = REASONS.get(refusal.code, refusal.code)
    # No private answer: the refusal is shown on the identity provider's callback page.
    fx.refuse(
        req,
        "step_up.refused",
        actor,
        {"decision": "approve", "code": refusal.code, "reason": reason, "detail": refusal.detail, **data},
        channel=None,
        text=reason,
        exception=ExceptionKind.STEP_UP_REFUSED,
        detail=f"{actor}: step-up refused — {reason}",
    )


def refuse(
    ctx: Context, *, request_id: str, refusal: Refusal, actor: str = "anonymous", data: dict[str, Any] | None = None
) -> None:
    """Record a refused step-up on the request (evidence and a security exception)."""

    def tx(repo: Repository, fx: Effects) -> None:
        req = repo.get(request_id)
        if req is not None:
            _record(fx, req, refusal, actor=actor, data=data or {})

    transaction(ctx, tx)
    ctx.notify()


def conclude(ctx: Context, *, taken: Taken, claims: dict[str, Any]) -> DecideResult | ToConfirm:
    """After the provider's ID token verified: approve as the Slack user it names, when
    that user may approve now — or, when the request asks for a typed confirmation, keep
    the verified sign-in in the flow and answer the form to show. Refusal (recorded)
    otherwise."""
    su, rid = taken.step_up, taken.request_id
    sub = str(claims.get("sub") or "")[:190]
    seen = {"issuer": su.issuer, "sub": sub, "amr": claims.get("amr"), "auth_time": claims.get("auth_time")}
    email = claims.get("email") if isinstance(claims.get("email"), str) else None
    data: dict[str, Any] = {"step_up": seen, **({"email": email[:320]} if email else {})}
    actor = f"oidc:{sub}"
    try:
        proof = check_claims(
            claims, issuer=su.issuer, require_amr=su.require_amr, max_age=su.max_age, now=ctx.clock().timestamp()
        )
        user = ctx.directory.user_by_email(proof.email)
        if user is None:
            raise Refusal("unknown_email", f"no active Slack user has {proof.email}")
        actor = user
        _may_approve(ctx, rid, user, data)
    except Refusal as refusal:
        refuse(ctx, request_id=rid, refusal=refusal, actor=actor, data=data)
        raise
    except NotFound:
        raise Refusal("not_pending", "the request is gone") from None
    form = queries.typed_confirmation_for(ctx, rid)
    if form is None:
        return approve(ctx, request_id=rid, user=user, step_up=proof.evidence())
    return _hold(ctx, taken=taken, user=user, kept={**proof.evidence(), "email": proof.email[:320]}, form=form)


def _may_approve(ctx: Context, request_id: str, user: str, data: dict[str, Any]) -> None:
    """Refusal unless ``user`` may approve the request now (the rule of a click); NotFound."""
    _, status = step_up_of(ctx, request_id)
    if status != Status.PENDING:
        raise Refusal("not_pending", f"it is {status}")
    pre = deciders(ctx, request_id)
    if pre is None:
        raise NotFound(request_id)
    verdict = may_decide(
        clicker=user,
        decision=Decision.APPROVE,
        eligible=pre.eligible,
        sponsors=pre.sponsors,
        already_decided_by=_decided_by(ctx, request_id),
    )
    if not verdict.allowed:
        code = {SPONSOR_REASON: "sponsor", "you have already decided on this request": "already_decided"}.get(
            verdict.reason, "not_approver"
        )
        if code == "sponsor":
            data["sponsors"] = sorted(pre.sponsors)
        raise Refusal(code, verdict.reason)


def _decided_by(ctx: Context, request_id: str) -> list[str]:
    return ctx.uow.read(lambda repo: [d.by for d in repo.decisions(request_id)])


def _hold(ctx: Context, *, taken: Taken, user: str, kept: dict[str, Any], form: dict[str, Any]) -> ToConfirm:
    """Keep the verified sign-in in the taken flow, for its confirmation form."""
    token = secrets.token_urlsafe(32)

    def tx(repo: Repository) -> datetime | None:
        if not repo.hold_flow(taken.flow, confirm_hash=_hash(token), approver=user, proof=kept):
            return None
        held = repo.held_flow(_hash(token))
        return held.expires_at if held is not None else None

    expires_at = ctx.uow.transaction(tx)
    if expires_at is None:  # the flow is gone or already held: nothing to confirm with
        refusal = Refusal("replayed", "this sign-in already waits for a confirmation")
        refuse(ctx, request_id=taken.request_id, refusal=refusal, actor=user, data={"issuer": taken.step_up.issuer})
        raise refusal
    return ToConfirm(token=token, request=form, approver=user, email=kept["email"], expires_at=expires_at)


def confirm(ctx: Context, *, token: str, browser: str, typed: str | None) -> DecideResult | ToConfirm:
    """The confirmation form's post: ``token`` names the flow a verified sign-in is held
    in, ``browser`` is the cookie of the browser that signed in, ``typed`` what the
    approver typed. The approval is recorded (by ``decide``, with the sign-in's proof and
    the typed text) when it is ``confirmation_text`` of the action, once per flow; a wrong
    text is recorded by ``decide`` as a ``confirmation.refused`` event and the form is
    answered again (``mismatch``). Refusal (recorded on the request when the token names
    one): ``bad_state`` (unknown token, another browser), ``replayed`` (already
    confirmed), ``expired_flow``, and those of ``conclude`` when the approver may no
    longer approve."""
    if not token or len(token) > 200:
        raise Refusal("bad_state", "the confirmation form has no token")
    key = _hash(token)

    def check(repo: Repository, fx: Effects) -> tuple[Held | None, Refusal | None]:
        now = fx.now
        held = repo.held_flow(key)
        if held is None:
            return None, Refusal("bad_state", "no sign-in waits for this confirmation")
        mine = bool(browser) and secrets.compare_digest(_hash(browser), held.browser_hash)
        if held.confirmed_at is not None:
            refusal = Refusal("replayed", f"the confirmation was posted at {held.confirmed_at.isoformat()}")
            if mine and any(d.by == held.approver for d in repo.decisions(held.request_id)):
                # the second post of a double click: the page says the first one counted
                refusal.recorded_for = held.approver
        elif not mine:
            refusal = Refusal("bad_state", "the confirmation came from a browser that did not sign in")
        elif now >= held.expires_at:
            refusal = Refusal(
                "expired_flow",
                f"confirmed more than {int(FLOW_TTL.total_seconds() // 60)} minutes after the Approve link was opened",
            )
        else:
            return held, None
        req = repo.get(held.request_id)
        if req is not None:
            _record(
                fx,
                req,
                refusal,
                actor=held.approver if mine else "anonymous",
                data={"issuer": held.issuer, "at": "confirmation"},
            )
        return None, refusal

    held, refusal = transaction(ctx, check)
    if refusal is not None:
        ctx.notify()
        raise refusal
    assert held is not None, "check answers the held sign-in or a refusal"
    rid, user = held.request_id, held.approver
    evidence = {k: held.proof.get(k) for k in ("issuer", "sub", "amr", "auth_time")}
    data: dict[str, Any] = {"step_up": evidence, "email": held.proof.get("email"), "at": "confirmation"}
    try:
        _may_approve(ctx, rid, user, data)
    except Refusal as refused:
        refuse(ctx, request_id=rid, refusal=refused, actor=user, data=data)
        raise
    except NotFound:
        raise Refusal("not_pending", "the request is gone") from None
    typed = typed if isinstance(typed, str) else ""
    form = queries.typed_confirmation_for(ctx, rid)
    if form is not None and typed != confirmation_text(form["action"]):
        result = approve(ctx, request_id=rid, user=user, step_up=evidence, confirmed_target=typed)
        if result.outcome == "refused" and CONFIRM_REFUSED in result.message:
            return ToConfirm(
                token=token,
                request=form,
                approver=user,
                email=str(held.proof.get("email") or ""),
                expires_at=held.expires_at,
                mismatch=True,
            )
        return result
    if not ctx.uow.transaction(lambda repo: repo.take_held_flow(key, ctx.clock())):
        twice = Refusal("replayed", "the confirmation was posted twice at once")
        refuse(ctx, request_id=rid, refusal=twice, actor=user, data=data)
        if user in _decided_by(ctx, rid):
            twice.recorded_for = user
        raise twice
    return approve(ctx, request_id=rid, user=user, step_up=evidence, confirmed_target=typed)


def approve(
    ctx: Context, *, request_id: str, user: str, step_up: dict[str, Any], confirmed_target: str | None = None
) -> DecideResult:
    """The one way an approval is recorded after a step-up verified: by ``decide``,
    exactly as a click by ``user`` (with ``confirmed_target``, what they typed in the
    confirmation form, as the Slack modal's submission would be), with ``step_up:
    {issuer, sub, amr, auth_time}`` in its evidence."""
    return decide(
        ctx, request_id=request_id, user=user, decision="approve", step_up=step_up, confirmed_target=confirmed_target
    )
