"""One request's evidence bundle: JSON for machines (signed), HTML for people.

``build_bundle`` reads the request and its events in one snapshot. Everything a reader
relies on — decisions, refused clicks, the thread, the grant, the outcome, exceptions —
is derived from the hash-chained events, not from mutable columns; the request record
itself is included as it stands, and ``integrity`` says whether the chain recomputes and
ends at the head the record carries. The grant appears as its claims, never the token.

``signature`` = Ed25519 over the RFC 8785 canonical JSON of the bundle without
``signature``; ``verify_bundle`` checks it against a JWKS and recomputes the chain.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from signoff.domain import chain
from signoff.domain.canonical import canonical_json
from signoff.evidence.canon import NotCanonicalizable, slow_canonical
from signoff.evidence.controls import controls
from signoff.evidence.render import render_html
from signoff.evidence.signing import verify_signature
from signoff.keys import KeyRing
from signoff.store.db import Store
from signoff.store.tables import EventRow, LedgerRow, RequestRow

FORMAT = "signoff.evidence-bundle/1"

__all__ = ["FORMAT", "build_bundle", "render_html", "sign_bundle", "verify_bundle"]


def _z(dt: datetime | None) -> str | None:
    return dt.isoformat().replace("+00:00", "Z") if dt else None


def build_bundle(store: Store, keys: KeyRing, request_id: str, now: datetime) -> dict[str, Any]:
    """The signed evidence bundle of one request. Raises ``LookupError`` if there is none."""
    snapshot = store.read(lambda s: _read(s, request_id))
    if snapshot is None:
        raise LookupError(request_id)
    req, events, ledger = snapshot
    bundle = assemble(req, events, ledger, now)
    return sign_bundle(bundle, keys)


def _read(session: Session, request_id: str):
    row = session.get(RequestRow, request_id)
    if row is None:
        return None
    req = {
        "id": row.id,
        "workflow": row.workflow,
        "title": row.title,
        "action": row.action,
        "action_sha256": row.action_sha256,
        "risk": row.risk,
        "justification": row.justification,
        "prompt": row.prompt,
        "rollback": row.rollback,
        "parent_id": row.parent_id,
        "rollback_of": row.rollback_of,
        "submitted_by": row.submitted_by,
        "executor": row.executor,
        "sponsor": row.sponsor,
        "status": row.status,
        "created_at": _z(row.created_at),
        "deadline": _z(row.deadline),
        "decided_at": _z(row.decided_at),
        "policy_sha256": row.policy_hash,
        "rule": row.rule,
        "reviewed_by": row.reviewed_by,
        "reviewed_at": _z(row.reviewed_at),
        "_policy": row.policy,
        "_event_count": row.event_count,
        "_head_hash": row.head_hash,
    }
    events = [
        {
            "seq": e.seq,
            "at": e.at,
            "type": e.type,
            "actor": e.actor,
            "data": e.data,
            "prev_hash": e.prev_hash,
            "hash": e.hash,
        }
        for e in session.scalars(select(EventRow).where(EventRow.request_id == request_id).order_by(EventRow.seq))
    ]
    led = session.scalars(select(LedgerRow).where(LedgerRow.request_id == request_id)).first()
    ledger = {"seq": led.seq, "at": led.at, "prev_hash": led.prev_hash, "hash": led.hash} if led else None
    return req, events, ledger


def assemble(req: dict[str, Any], events: list[dict[str, Any]], ledger: dict | None, now: datetime) -> dict[str, Any]:
    """The unsigned bundle from the request record (as read) and its events."""
    req = dict(req)
    policy = req.pop("_policy", None) or {}
    count, head = req.pop("_event_count", None), req.pop("_head_hash", None)
    owners = {k: policy.get(k) for k in ("owner", "platform_owner", "security_owner")}
    problems = chain_problems(req["id"], events)
    if count is not None and (count != len(events) or (events and events[-1]["hash"] != head)):
        problems.append(
            f"the request record says {count} event(s) ending in {str(head)[:12]}…, the chain has {len(events)}"
        )
    derived = _derive(events)
    if derived["status"] != req["status"]:
        problems.append(f"the request record says {req['status']}, its events say {derived['status']}")
    return {
        "format": FORMAT,
        "request": req,
        "owners": owners,
        "policy": policy,
        "status": req["status"],
        "decisions": derived["decisions"],
        "refused_clicks": derived["refused"],
        "repeated_clicks": derived["repeated"],
        "escalations": derived["escalations"],
        "exceptions": derived["exceptions"],
        "reviews": derived["reviews"],
        "thread": derived["thread"],
        "grant": derived["grant"],
        "outcome": derived["outcome"],
        "controls": controls(req, owners, events),
        "events": events,
        "chain": {
            "event_count": len(events),
            "head": events[-1]["hash"] if events else chain.GENESIS,
            "genesis": chain.GENESIS,
            "ledger": ledger,
        },
        "integrity": {"ok": not problems, "problems": problems},
        "exported_at": chain.iso(now),
    }


def sign_bundle(bundle: dict[str, Any], keys: KeyRing) -> dict[str, Any]:
    unsigned = {k: v for k, v in bundle.items() if k != "signature"}
    try:
        payload = canonical_json(unsigned)
    except Exception as exc:  # a value outside RFC 8785 (only a tampered store can hold one)
        raise NotCanonicalizable(f"the bundle cannot be canonicalized: {exc}") from None
    key = keys.active
    return {**unsigned, "signature": {"alg": "Ed25519", "kid": key.kid, "value": key.sign(payload)}}


# -- derived views ------------------------------------------------------------------------------

# Refused clicks on any of the bot's buttons (each is also evidence of who tried).
REFUSALS = {
    "click.refused": "decide",
    "review.refused": "review",
    "revoke.refused": "revoke",
    "rollback.refused": "roll back",
    "confirmation.refused": "confirm",
    "step_up.refused": "approve after signing in",
}


def _derive(events: list[dict[str, Any]]) -> dict[str, Any]:
    decisions, refused, repeated, escalations, exceptions, reviews = [], [], [], [], [], []
    grant = None
    outcome = None
    status = "pending"
    thread: list[dict[str, Any]] = []
    by_ts: dict[str, dict[str, Any]] = {}
    for e in events:
        t, actor, at, seq = e["type"], e["actor"], e["at"], e["seq"]
        d = e["data"] if isinstance(e["data"], dict) else {}
        if t == "decision.recorded":
            decisions.append(
                {
                    "by": actor,
                    "decision": d.get("decision"),
                    "at": at,
                    "seq": seq,
                    **({"reason": d["reason"]} if d.get("reason") else {}),
                    **({"step_up": d["step_up"]} if d.get("step_up") else {}),
                }
            )
        elif t in REFUSALS:
            refused.append(
                {
                    "by": actor,
                    "what": REFUSALS[t],
                    "decision": d.get("decision"),
                    "reason": d.get("reason"),
                    "at": at,
                    "seq": seq,
                }
            )
        elif t == "click.repeated":
            repeated.append(
                {"by": actor, "decision": d.get("decision"), "status": d.get("status"), "at": at, "seq": seq}
            )
        elif t.startswith("request.") and t != "request.submitted":
            status = d.get("to") or t.split(".", 1)[1]
            if t == "request.rejected" and str(actor).startswith("policy:"):
                decisions.append({"by": actor, "decision": "reject", "at": at, "seq": seq})
            if t in ("request.succeeded", "request.failed"):
                outcome = {"status": t.split(".", 1)[1], "detail": d.get("detail"), "by": actor, "at": at, "seq": seq}
            if t == "request.executing" and grant is not None and grant.get("delivered") is None:
                grant["delivered"] = {"at": at, "how": d.get("delivery"), "seq": seq}
        elif t == "grant.issued":
            grant = {
                "claims": d.get("claims"),
                "kid": d.get("kid"),
                "issued_at": at,
                "seq": seq,
                "delivered": None,
                "expired_without_outcome": None,
                "revoked": None,
            }
        elif t == "grant.revoked":
            decisions.append({"by": actor, "decision": "reject", "at": at, "seq": seq, "revoked_grant": True})
            if grant is not None:
                grant["revoked"] = {"by": actor, "at": at, "seq": seq}
        elif t == "grant.delivered" and grant is not None:
            grant["delivered"] = {"at": at, "how": d.get("delivery"), "seq": seq}
        elif t == "grant.expired_without_outcome" and grant is not None:
            grant["expired_without_outcome"] = {"at": at, "seq": seq}
        elif t == "escalation.fired":
            escalations.append({"step": d.get("step"), "to": d.get("to"), "at": at, "seq": seq})
        elif t == "exception.raised":
            exceptions.append({"kind": d.get("kind"), "detail": d.get("detail"), "at": at, "seq": seq})
        elif t in ("exception.reviewed", "review.comment"):
            reviews.append(
                {
                    "type": t,
                    "by": actor,
                    "at": at,
                    "seq": seq,
                    **({"comment": d.get("comment")} if t == "review.comment" else {}),
                }
            )
        elif t == "thread.reply":
            msg = {
                "user": d.get("user", actor),
                "ts": d.get("ts"),
                "text": d.get("text", ""),
                "at": at,
                "seq": seq,
                "edits": [],
                "deleted": False,
            }
            if d.get("found_late"):
                msg["found_late"] = True
            thread.append(msg)
            if d.get("ts") is not None:
                by_ts[str(d.get("ts"))] = msg
        elif t == "thread.agent_reply":
            # the agent's own comment (posted by signoff in the thread, visibly as the agent's)
            thread.append(
                {
                    "user": actor,
                    "ts": d.get("ts"),
                    "text": d.get("text", ""),
                    "at": at,
                    "seq": seq,
                    "edits": [],
                    "deleted": False,
                    "agent": True,
                    "comment_id": d.get("comment_id"),
                }
            )
        elif t == "thread.edited":
            msg = by_ts.get(str(d.get("ts")))
            if msg is None:  # the original never reached us: keep the edit as the message
                msg = {
                    "user": d.get("user", actor),
                    "ts": d.get("ts"),
                    "text": d.get("previous_text") or "",
                    "at": at,
                    "seq": seq,
                    "edits": [],
                    "deleted": False,
                    "original_missing": True,
                }
                thread.append(msg)
                by_ts[str(d.get("ts"))] = msg
            msg["edits"].append(
                {
                    "previous_text": msg["text"] if d.get("previous_text") is None else d.get("previous_text"),
                    "text": d.get("text", ""),
                    "at": at,
                    "seq": seq,
                }
            )
            msg["text"] = d.get("text", "")
        elif t == "thread.deleted":
            msg = by_ts.get(str(d.get("ts")))
            if msg is None:
                msg = {
                    "user": d.get("user", actor),
                    "ts": d.get("ts"),
                    "text": "",
                    "at": at,
                    "seq": seq,
                    "edits": [],
                    "deleted": False,
                    "original_missing": True,
                }
                thread.append(msg)
                by_ts[str(d.get("ts"))] = msg
            msg["deleted"] = True
            msg["deleted_at"] = at
            msg["deleted_seq"] = seq
    thread.sort(key=lambda m: (_ts_key(m.get("ts")), m["seq"]))
    return {
        "decisions": decisions,
        "refused": refused,
        "repeated": repeated,
        "escalations": escalations,
        "exceptions": exceptions,
        "reviews": reviews,
        "grant": grant,
        "outcome": outcome,
        "status": status,
        "thread": thread,
    }


def _ts_key(ts: Any) -> tuple[int, int]:
    try:
        sec, _, frac = str(ts).partition(".")
        return int(sec), int(frac.ljust(6, "0")[:6] or 0)
    except ValueError:
        return (2**62, 0)


# -- checking -----------------------------------------------------------------------------------


def chain_problems(request_id: str, events: list[dict[str, Any]]) -> list[str]:
    """What is wrong with a list of events as one request's chain (empty: intact)."""
    problems = []
    prev = chain.GENESIS
    for i, e in enumerate(events, 1):
        if not isinstance(e, dict):
            return [f"event {i}: not an object"]
        seq = e.get("seq")
        name = f"request {request_id} event seq {seq}"
        if seq != i:
            problems.append(f"request {request_id} event seq {i}: missing or out of order (found seq {seq})")
            break
        if e.get("prev_hash") != prev:
            problems.append(f"{name}: prev_hash does not link to " + ("the genesis hash" if i == 1 else f"seq {i - 1}"))
            break
        try:
            body = chain.event_body(request_id, seq, e.get("at"), e.get("type"), e.get("actor"), e.get("data"))
            digest = hashlib.sha256(prev.encode() + slow_canonical(body)).hexdigest()
        except (NotCanonicalizable, TypeError, AttributeError) as exc:
            problems.append(f"{name}: cannot be canonicalized ({exc})")
            break
        if digest != e.get("hash"):
            problems.append(f"{name}: hash mismatch — the {e.get('type')} event was altered")
            break
        prev = digest
    return problems


def verify_bundle(bundle: dict, jwks: Any) -> tuple[bool, str]:
    """(ok, reason): the bundle's Ed25519 signature verifies with the key of its ``kid`` in
    ``jwks`` (a JWKS, a JWK list or a ``KeyRing``), and its events form an intact chain
    ending at the head it states."""
    if not isinstance(bundle, dict):
        return False, "not a bundle (expected a JSON object)"
    sig = bundle.get("signature")
    if not isinstance(sig, dict):
        return False, "the bundle has no signature"
    if sig.get("alg") != "Ed25519":
        return False, f"unsupported signature algorithm {sig.get('alg')!r}"
    unsigned = {k: v for k, v in bundle.items() if k != "signature"}
    try:
        payload = canonical_json(unsigned)
    except Exception as exc:
        return False, f"the bundle cannot be canonicalized: {exc}"
    ok, reason = verify_signature(jwks, sig.get("kid"), payload, sig.get("value"))
    if not ok:
        return False, f"signature: {reason}"
    request = bundle.get("request")
    events = bundle.get("events")
    if not isinstance(request, dict) or not isinstance(events, list):
        return False, "the bundle lacks its request or its events"
    rid = request.get("id")
    problems = chain_problems(rid, events)
    if problems:
        return False, problems[0]
    state = bundle.get("chain") or {}
    head = events[-1]["hash"] if events else chain.GENESIS
    if state.get("head") != head or state.get("event_count") != len(events):
        return False, "the chain's stated head or length differs from its events"
    if events and events[0].get("type") == "request.submitted":
        data = events[0].get("data") or {}
        if data.get("action_sha256") != request.get("action_sha256") or data.get("action") != request.get("action"):
            return False, f"request {rid}: the action differs from its request.submitted event (seq 1)"
    try:
        if hashlib.sha256(canonical_json(request.get("action"))).hexdigest() != request.get("action_sha256"):
            return False, f"request {rid}: the action does not hash to its action_sha256"
        policy = bundle.get("policy")
        if policy and hashlib.sha256(canonical_json(policy)).hexdigest() != request.get("policy_sha256"):
            return False, f"request {rid}: the policy does not hash to its policy_sha256"
    except Exception as exc:
        return False, f"request {rid}: cannot canonicalize the action or policy ({exc})"
    return True, f"signature ({sig.get('kid')}) and the chain of {len(events)} event(s) verify"
