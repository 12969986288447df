"""Which controls a request's evidence speaks to, and which events show it.

Each entry names a framework item, says in a sentence what signoff recorded for it, and
lists the events (``seq`` and ``type``) that are the evidence. ``status`` is
``evidenced`` when those events are in this request's chain, ``not applicable`` when the
request never reached that stage (e.g. no grant for a rejected request), else
``not evidenced``. The mapping is ours, made in good faith; it is not a certification.

Frameworks and the ids used:

- NIST Cybersecurity Framework 2.0: GV.OC (Organizational Context), GV.RR (Roles,
  Responsibilities, and Authorities; GV.RR-02), PR.AA-05 (access permissions with least
  privilege and separation of duties), PR.PS-04 (log records generated and available for
  monitoring).
- OWASP Top 10 for Agentic Applications (2026), ids ASI01–ASI10: ASI01 Agent Goal Hijack
  (the prompt and justification behind the action are on record and a person approved the
  exact action), ASI02 Tool Misuse and Exploitation (execution is bound to the approved
  action's hash by a single-action, short-lived grant), ASI03 Identity and Privilege Abuse
  (signed agent identity, a grant only for the named executor, no standing privilege),
  ASI09 Human-Agent Trust Exploitation (agent text shown inert; every human decision and
  refusal attributable to a Slack user), ASI10 Rogue Agents (out-of-policy behaviour
  raises an exception for the security owner; no answer fails closed).
- CSA MAESTRO (agentic AI threat modelling, seven layers): L7 Agent Ecosystem (the
  human-in-the-loop gate between the agent and production), L6 Security and Compliance
  (cross-layer governance: owners on record, exceptions reviewed, tamper-evident record),
  L5 Evaluation and Observability (outcome reported; a grant without an outcome is noticed).
"""

from __future__ import annotations

from typing import Any

DECISION_TYPES = {"decision.recorded", "click.refused", "click.repeated"}
STATUS_CHANGES = (
    "request.approved",
    "request.rejected",
    "request.expired",
    "request.cancelled",
    "request.executing",
    "request.succeeded",
    "request.failed",
)


def _pick(events: list[dict], *types: str, prefix: str | None = None) -> list[dict[str, Any]]:
    wanted = set(types)
    return [
        {"seq": e["seq"], "type": e["type"]}
        for e in events
        if e["type"] in wanted or (prefix is not None and e["type"].startswith(prefix))
    ]


def _entry(
    framework: str, id_: str, title: str, evidence: str, events: list[dict], *, applicable: bool = True
) -> dict[str, Any]:
    status = "evidenced" if events else ("not evidenced" if applicable else "not applicable")
    return {"framework": framework, "id": id_, "title": title, "evidence": evidence, "status": status, "events": events}


def controls(request: dict, owners: dict, events: list[dict]) -> list[dict[str, Any]]:
    """The control mapping for one request's bundle."""
    wf = request.get("workflow")
    submitted = _pick(events, "request.submitted")
    decided = _pick(
        events,
        "request.submitted",
        "escalation.fired",
        "decision.recorded",
        "click.refused",
        "request.approved",
        "request.rejected",
        "grant.revoked",
        "revoke.refused",
        "rollback.refused",
    )
    reviews = _pick(events, "exception.reviewed", "review.comment", "review.refused")
    grant = _pick(events, "policy.checked", "grant.issued", "grant.delivered")
    granted = any(e["type"] == "grant.issued" for e in events)
    outcome = _pick(events, "request.succeeded", "request.failed", "grant.expired_without_outcome")
    exceptions = _pick(events, "exception.raised", "escalation.fired", "request.expired", "exception.reviewed")
    human = _pick(
        events,
        "decision.recorded",
        "click.refused",
        "click.repeated",
        "thread.reply",
        "thread.edited",
        "thread.deleted",
    )
    nist, owasp, maestro = "NIST CSF 2.0", "OWASP Top 10 for Agentic Applications (2026)", "CSA MAESTRO"
    owner_text = (
        f"owner {owners.get('owner')}, platform owner {owners.get('platform_owner')}, "
        f"security owner {owners.get('security_owner')}"
    )
    return [
        _entry(
            nist,
            "GV.OC",
            "Organizational Context",
            f"The request ran under workflow {wf!r} with {owner_text} on record, and the policy it was "
            f"decided under is kept with its hash ({str(request.get('policy_sha256'))[:12]}…).",
            submitted,
        ),
        _entry(
            nist,
            "GV.RR",
            "Roles, Responsibilities, and Authorities (GV.RR-02)",
            f"The agent's accountable sponsor ({request.get('sponsor')}) and the owners are recorded; only "
            "eligible approvers' decisions count (escalation names who else may decide), the sponsor cannot "
            "approve their own agent's request, refused clicks are kept, and exceptions are reviewed by the "
            "security owner.",
            decided + reviews,
        ),
        _entry(
            nist,
            "PR.AA-05",
            "Access permissions: least privilege and separation of duties",
            "No standing access: after approval and a runtime policy re-check, the executor alone receives a "
            "short-lived grant for this one action; the approver is never the agent or its sponsor.",
            grant,
            applicable=granted or any(e["type"] == "policy.checked" for e in events),
        ),
        _entry(
            nist,
            "PR.PS-04",
            "Log records are generated and made available for continuous monitoring",
            "Every state change, click, thread reply, grant and outcome is an event in an append-only, "
            "hash-chained log; this bundle is signed.",
            [{"seq": e["seq"], "type": e["type"]} for e in events],
        ),
        _entry(
            owasp,
            "ASI01",
            "Agent Goal Hijack",
            "The prompt and justification that led the agent to propose this action are on record, and "
            "nothing runs until a person approves the exact action (shown with its hash).",
            submitted + _pick(events, "decision.recorded"),
        ),
        _entry(
            owasp,
            "ASI02",
            "Tool Misuse and Exploitation",
            "Execution is bound to the approved action: the grant carries its SHA-256, names one executor and "
            "expires within minutes; the outcome is reported against it.",
            _pick(events, "grant.issued", "request.succeeded", "request.failed"),
            applicable=granted,
        ),
        _entry(
            owasp,
            "ASI03",
            "Identity and Privilege Abuse",
            f"The agent identified itself with a signed request (submitted by {request.get('submitted_by')!r}, "
            f"executor {request.get('executor')!r}); privileges are granted just in time to that executor only.",
            submitted + _pick(events, "grant.issued"),
        ),
        _entry(
            owasp,
            "ASI09",
            "Human-Agent Trust Exploitation",
            "Agent-supplied text is shown inert (it cannot mention, link or format its way into looking like "
            "something else); every human decision, refusal and thread message is attributed to a Slack user.",
            human,
            applicable=bool(human),
        ),
        _entry(
            owasp,
            "ASI10",
            "Rogue Agents",
            "Out-of-policy behaviour (rejections, refused clicks, escalations, expiries, failed runs, grants "
            "never followed by an outcome) raises an exception for the security owner; no answer fails closed.",
            exceptions,
            applicable=bool(exceptions),
        ),
        _entry(
            maestro,
            "L7",
            "Agent Ecosystem",
            "A human-in-the-loop gate stands between the agent and production: the action is proposed, routed "
            "to its named owner, decided in Slack, and only then granted"
            + (
                f"; it is a step of the multi-agent chain under {request.get('parent_id')}."
                if request.get("parent_id")
                else "."
            ),
            submitted + _pick(events, "decision.recorded", "grant.issued"),
        ),
        _entry(
            maestro,
            "L6",
            "Security and Compliance (cross-layer governance)",
            f"Governance on record: {owner_text}; exceptions go to the security owner for review; the record "
            "is tamper-evident (hash chain, signed checkpoints, signed bundle).",
            submitted + _pick(events, "exception.raised", "exception.reviewed"),
        ),
        _entry(
            maestro,
            "L5",
            "Evaluation and Observability",
            "The executor reports the outcome; a grant that expires with no outcome is itself recorded and "
            "raised as an exception.",
            outcome,
            applicable=granted,
        ),
    ]
