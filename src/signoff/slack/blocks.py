"""Block Kit rendering: request state → Slack blocks. Pure: no I/O, no Slack SDK.

A request comes in as a ``RequestCard`` (``slack/card.py``): typed, frozen, built from the
display query's plain data by ``RequestCard.from_view``.

Trust boundary. Ids from the workflow file (owners, sponsor, approvers) and timestamps we
wrote ourselves are trusted and may become mentions and date tokens. Everything an agent
supplied — title, justification, prompt, the action, the rollback plan, an outcome's
detail, and, to be safe, exception details and policy reasons — is untrusted: it is
escaped (``& < >``, Slack's documented escaping), ``@channel``/``@here``/``@everyone`` are
broken with a zero-width joiner, bidi controls are made visible, and it is shown either
in a code block (backtick runs broken so it cannot close the fence), in inline code
(backticks replaced), as ``plain_text``, or with its formatting characters replaced by
look-alikes. So it can neither mention, nor link, nor dress itself up as our own lines.

Every text is kept within Slack's limits; a cut is always announced with a visible
"… (truncated, N more characters)".
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

from signoff.domain.identifiers import GROUP_RE, INVISIBLE_FILLERS, USER_RE, mixed_scripts
from signoff.slack.card import Decision, ExceptionNote, RequestCard
from signoff.slack.ids import (
    COMMENT_INPUT,
    CONFIRM_INPUT,
    CONFIRM_MODAL,
    DECISION_BLOCK,
    REASON_INPUT,
    REJECT_REASON_MODAL,
    REVIEW_BLOCK,
    REVIEW_MODAL,
    ActionId,
)

# Slack's limits (Block Kit reference).
MAX_SECTION = 3000
MAX_HEADER = 150
MAX_FIELD = 2000
MAX_FIELDS = 10
MAX_CONTEXT = 2000
MAX_BLOCKS = 50
MAX_BUTTON_VALUE = 2000
MAX_BUTTON_TEXT = 75
MAX_URL = 3000
MAX_FALLBACK = 4000
MAX_CONFIRM_TITLE = 100
MAX_CONFIRM_TEXT = 300
MAX_METADATA = 3000

PROMPT_EXCERPT = 500
LIST_LIMIT = 20

RISK_EMOJI = {"low": "🟢", "medium": "🟡", "high": "🟠", "critical": "🔴"}

# ---------------------------------------------------------------------------------------
# Sanitising untrusted text

_BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_BROADCAST = re.compile(r"@(channel|here|everyone)", re.IGNORECASE)
_ZWJ = "\u200d"
_LOOKALIKE = str.maketrans({"*": "∗", "_": "ˍ", "~": "∼", "`": "ˋ"})


def _clean(value: Any) -> str:
    """Untrusted text made inert before any other step: no controls, no bidi tricks, no broadcasts."""
    s = "" if value is None else str(value)
    s = s.replace("\r\n", "\n").replace("\r", "\n")
    s = _BIDI.sub("\ufffd", s)
    s = _CONTROL.sub("", s)
    return _BROADCAST.sub("@" + _ZWJ + r"\1", s)


def _esc(s: str) -> str:
    """Slack's mrkdwn escaping of the three control characters."""
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _notice(n: int) -> str:
    return f"… (truncated, {n} more character{'s' if n != 1 else ''})"


def _fit(raw: str, budget: int, render: Callable[[str, str], str]) -> str:
    """``render(text, notice)`` with as much of ``raw`` as fits in ``budget`` characters.

    ``raw`` is already cleaned; ``render`` escapes, so a cut never splits an entity."""
    out = render(raw, "")
    if len(out) <= budget:
        return out
    lo, hi = 0, len(raw)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(render(raw[:mid], _notice(len(raw) - mid))) <= budget:
            lo = mid
        else:
            hi = mid - 1
    out = render(raw[:lo], _notice(len(raw) - lo))
    return out if len(out) <= budget else _cap(out, budget)


def _flat_render(s: str, notice: str) -> str:
    s = _esc(" ".join(s.split())).translate(_LOOKALIKE)
    return f"{s} {notice}" if notice else s


def _flat(value: Any, budget: int = 300) -> str:
    """Untrusted prose on one line of mrkdwn: escaped, formatting characters replaced."""
    return _fit(_clean(value), budget, _flat_render) or "—"


def _inline_render(s: str, notice: str) -> str:
    body = _esc(s.replace("\n", " ↵ ").replace("\t", " ")).replace("`", "ˋ")
    body = body if body.strip() else "(blank)"
    return f"`{body}`" + (f" {notice}" if notice else "")


def _inline(value: Any, budget: int = 300) -> str:
    """Untrusted short value as inline code (no formatting applies inside it)."""
    if value is None or value == "":
        return "—"
    return _fit(_clean(value), budget, _inline_render)


def _block_body(s: str) -> str:
    body = _esc(s)
    # No two backticks in a row: the text cannot close (or open) a ``` fence.
    body = re.sub("`(?=`)", "`\u200b", body)
    return body if body.strip() else "(blank)"


def _code_render(prefix: str) -> Callable[[str, str], str]:
    def render(s: str, notice: str) -> str:
        out = f"{prefix}```\n{_block_body(s)}\n```"
        return out + (f"\n_{notice}_" if notice else "")

    return render


def _code(value: Any, budget: int, prefix: str = "") -> str:
    """``prefix`` (trusted mrkdwn) followed by untrusted text in a code block."""
    return _fit(_clean(value), budget, _code_render(prefix))


def _plain(value: Any, budget: int) -> str:
    """Untrusted text for a plain_text object: never parsed, but angle brackets swapped anyway."""
    raw = _clean(value).replace("<", "‹").replace(">", "›")
    return _fit(raw, budget, lambda s, n: f"{s} {n}" if n else s) or "—"


def _cap(text: str, limit: int) -> str:
    """Last-resort cut of finished mrkdwn: never inside a token or entity, fences closed."""
    if len(text) <= limit:
        return text
    reserve = len(_notice(len(text))) + 6
    cut = text[: max(0, limit - reserve)]
    lt, gt = cut.rfind("<"), cut.rfind(">")
    if lt > gt:
        cut = cut[:lt]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    if cut.count("```") % 2:
        cut += "\n```"
    return f"{cut}\n{_notice(len(text) - len(cut))}"[:limit]


def indented_json(value: Any) -> str:
    """``json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False, default=str)``,
    character for character, for JSON data (string keys; text, numbers, booleans, null,
    lists, objects). With ``indent`` the json module encodes in pure Python, several
    times slower than this; anything else goes to json.dumps itself."""
    try:
        return _indented(value, "\n")
    except _NotPlain:
        return json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False, default=str)


class _NotPlain(Exception):
    pass


_str_json = json.encoder.encode_basestring  # the C one when available, as json.dumps uses
_INF = float("inf")


def _indented(v: Any, newline: str) -> str:
    t = type(v)
    if t is str:
        return _str_json(v)
    if t is dict:
        if not v:
            return "{}"
        inner = newline + "  "
        keys = list(v)
        if any(type(k) is not str for k in keys):
            raise _NotPlain
        keys.sort()
        return "{" + ",".join(f"{inner}{_str_json(k)}: {_indented(v[k], inner)}" for k in keys) + newline + "}"
    if t is list:
        if not v:
            return "[]"
        inner = newline + "  "
        return "[" + ",".join(inner + _indented(x, inner) for x in v) + newline + "]"
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if t is int:
        return int.__repr__(v)
    if t is float and v == v and v not in (_INF, -_INF):
        return float.__repr__(v)
    raise _NotPlain


def _action_json(value: Any) -> str:
    """The exact action as JSON (sorted keys, indented); invisible characters shown as \\u escapes."""
    try:
        s = indented_json(value)
    except (TypeError, ValueError):
        s = repr(value)
    # These can only occur inside JSON strings, where \uXXXX is the same value, made visible.
    s = re.sub(
        "[\u007f-\u009f\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]",
        lambda m: f"\\u{ord(m.group()):04x}",
        s,
    )
    return _BROADCAST.sub(r"\\u0040\1", s)


def _visible(value: Any) -> Any:
    """Invisible characters (format characters, fillers) spelled as \\u escapes, so an
    identifier that differs from what it looks like shows the difference."""
    if not isinstance(value, str) or value.isascii():
        return value
    return "".join(
        (f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}")
        if unicodedata.category(c) == "Cf" or c in INVISIBLE_FILLERS
        else c
        for c in value
    )


def _ident(value: Any, budget: int = 300) -> str:
    """An untrusted identifier as inline code, invisible characters shown."""
    return _inline(_visible(value), budget)


def _identifiers(r: RequestCard) -> list[tuple[str, str | None]]:
    return [
        ("workflow", r.workflow),
        ("action type", r.action_type),
        ("target", r.target),
        ("environment", r.environment),
        ("executor", r.executor),
    ]


def _script_warnings(r: RequestCard) -> list[str]:
    """A visible warning for each identifier that mixes scripts (a Cyrillic о in
    "production" reads the same but is another value, which rules do not match)."""
    out = []
    for label, value in _identifiers(r):
        mixed = mixed_scripts(value)
        if mixed:
            out.append(
                f":warning: mixed scripts in {label}: {_esc(' + '.join(mixed))} "
                "— some letters may look like others they are not"
            )
    return out


# ---------------------------------------------------------------------------------------
# Trusted fragments


def _who(ref: Any) -> str:
    """A decider or configured person: a mention for Slack ids, text for anything else."""
    s = "" if ref is None else str(ref)
    if USER_RE.match(s):
        return f"<@{s}>"
    if GROUP_RE.match(s):
        return f"<!subteam^{s}>"
    if s.startswith("policy:"):
        return f"policy ({_flat(s[len('policy:') :], 200)})"
    return _inline(s, 120)


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str) and value:
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt


def _when(value: Any) -> str:
    """A Slack date token, shown in the reader's time zone; UTC as the fallback text."""
    dt = _parse_time(value)
    if dt is None:
        return _inline(value, 60) if value else "—"
    fallback = dt.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(dt.timestamp())}^{{date_short_pretty}} {{time}}|{fallback}>"


def _risk(r: RequestCard) -> str:
    risk = str(r.risk or "medium")
    if risk in RISK_EMOJI:
        return f"{RISK_EMOJI[risk]} {risk}"
    return f"⚪ {_inline(risk, 40)}"


def _decisions(r: RequestCard, kind: str) -> list[Decision]:
    return [d for d in r.decisions if d.decision == kind]


def _agent(r: RequestCard) -> str:
    out = _inline(r.submitted_by, 120)
    if r.sponsor:
        out += f" (human sponsor {_who(r.sponsor)})"
    return out


def _owners(r: RequestCard) -> str:
    o = r.owners
    parts = [
        f"{label} {_who(who)}"
        for who, label in (
            (o.owner, "owner"),
            (o.platform_owner, "platform owner"),
            (o.security_owner, "security owner"),
        )
        if who
    ]
    return "*Owners on record:* " + (", ".join(parts) if parts else "none")


# ---------------------------------------------------------------------------------------
# Block helpers


def _mrkdwn(text: str, limit: int) -> dict:
    return {"type": "mrkdwn", "text": _cap(text, limit)}


def _pt(text: str) -> dict:
    return {"type": "plain_text", "text": text, "emoji": True}


def _section(text: str) -> dict:
    return {"type": "section", "text": _mrkdwn(text, MAX_SECTION)}


def _context(*texts: str) -> dict:
    return {"type": "context", "elements": [_mrkdwn(t, MAX_CONTEXT) for t in texts[:10]]}


def _header(value: Any) -> dict:
    return {"type": "header", "text": {"type": "plain_text", "text": _plain(value, MAX_HEADER), "emoji": False}}


def _fields(pairs: Iterable[tuple[str, str]]) -> dict:
    return {
        "type": "section",
        "fields": [_mrkdwn(f"*{label}*\n{value}", MAX_FIELD) for label, value in list(pairs)[:MAX_FIELDS]],
    }


def _button(action_id: str, text: str, value: Any, style: str | None = None, confirm: dict | None = None) -> dict:
    b: dict[str, Any] = {
        "type": "button",
        "action_id": action_id,
        "text": _pt(text[:MAX_BUTTON_TEXT]),
        "value": str(value or "")[:MAX_BUTTON_VALUE],
    }
    if style:
        b["style"] = style
    if confirm:
        b["confirm"] = confirm
    return b


def _finish(blocks: list[dict], limit: int = MAX_BLOCKS) -> list[dict]:
    if len(blocks) <= limit:
        return blocks
    dropped = len(blocks) - (limit - 1)
    # keep a trailing actions block (live buttons) if there was one
    tail = [blocks[-1]] if blocks[-1].get("type") == "actions" else []
    keep = blocks[: limit - 1 - len(tail)]
    return keep + [_context(f"… (truncated, {dropped} more blocks)")] + tail


def _fallback(text: str) -> str:
    return _cap(text, MAX_FALLBACK)


# ---------------------------------------------------------------------------------------
# Status lines


def _approved_line(approvals: list[Decision]) -> str:
    if not approvals:
        return ""
    return "✅ Approved by " + ", ".join(f"{_who(d.by)} at {_when(d.at)}" for d in approvals)


def _quorum_line(r: RequestCard) -> str:
    approvals = _decisions(r, "approve")
    if not approvals:
        return ""
    who = ", ".join(_who(d.by) for d in approvals)
    return f"Approvals so far: {who} ({len(approvals)} of {r.required_approvals})"


def _outcome_text(r: RequestCard) -> str:
    """What happened, who decided and when, for a request that is no longer pending."""
    status = r.status
    approvals, rejects = _decisions(r, "approve"), _decisions(r, "reject")
    approved = _approved_line(approvals)
    outcome = r.outcome
    executor = _inline(r.executor, 120)
    lines: list[str] = []
    if status == "approved":
        grant = f", valid until {_when(r.grant_expires_at)}" if r.grant_expires_at else ""
        lines += [approved or "✅ Approved", f"🔑 Grant issued to {executor}{grant} — waiting for it to run."]
    elif status == "executing":
        lines += [approved or "✅ Approved", f"▶️ Executing — the grant was delivered to {executor}."]
    elif status in ("succeeded", "failed"):
        if approved:
            lines.append(approved)
        by = _inline(outcome.by or r.executor, 120)
        at = f" at {_when(outcome.at)}" if outcome.at else ""
        detail = outcome.detail
        if status == "succeeded":
            lines.append(f"✅ Succeeded — reported by {by}{at}")
            if detail:
                lines.append(_code(detail, 1000, "Executor's detail (agent-supplied):\n"))
        else:
            lines.append(f"💥 Failed — reported by {by}{at}" + (":" if detail else ""))
            if detail:
                lines.append(_code(detail, 1000))
    elif status == "rejected":
        if approved:
            lines.append(approved)
        if rejects:
            d = rejects[-1]
            lines.append(f"❌ Rejected by {_who(d.by)} at {_when(d.at)}")
            if d.reason:
                lines.append(_code(d.reason, 1200, "Reason given:\n"))
        else:
            lines.append("❌ Rejected")
    elif status == "expired":
        if approvals and len(approvals) >= r.required_approvals:
            lines.append(approved)
            until = f" by {_when(r.grant_expires_at)}" if r.grant_expires_at else ""
            lines.append(f"⌛ Approval lapsed — not executed{until} (denied)")
        elif approvals:
            lines.append(
                f"⌛ Expired at {_when(r.deadline)} — quorum not reached: "
                f"{', '.join(_who(d.by) for d in approvals)} "
                f"({len(approvals)} of {r.required_approvals}) (denied)"
            )
        else:
            lines.append(f"⌛ Expired at {_when(r.deadline)} — no decision (denied)")
    elif status == "cancelled":
        lines.append(f"🚫 Cancelled by the agent {_inline(r.submitted_by, 120)}")
    else:
        lines.append(f"Status: {_inline(status, 40)}")
    return "\n".join(lines)


_STATUS_WORD = {
    "approved": "Approved",
    "rejected": "Rejected",
    "expired": "Expired (denied)",
    "cancelled": "Cancelled by the agent",
    "executing": "Executing",
    "succeeded": "Succeeded",
    "failed": "Failed",
    "pending": "Waiting for approval",
}


def _status_word(r: RequestCard) -> str:
    status = r.status
    return _STATUS_WORD.get(status) or _flat(status, 40)


# ---------------------------------------------------------------------------------------
# The request message


def _request_context(r: RequestCard) -> str:
    parts = [f"Request {_inline(r.id, 120)}"]
    if r.created_at:
        parts.append(f"submitted {_when(r.created_at)}")
    if r.not_before:
        parts.append(f"not before {_when(r.not_before)}")
    if r.parent_id:
        parts.append(f"step of {_inline(r.parent_id, 120)}")
    if r.rollback_of:
        parts.append(f"rollback of {_inline(r.rollback_of, 120)}")
    return " · ".join(parts)


def _rollback_text(r: RequestCard) -> str:
    rb = r.rollback
    if rb is None or not (rb.description or rb.action):
        return "*Rollback plan:* none given"
    label = "*Rollback plan* (agent-supplied)\n"
    if rb.action is not None:
        desc = _code(rb.description or "(no description)", 1400, label)
        act = _code(_action_json(rb.action), MAX_SECTION - len(desc) - 40, "\nRollback action:\n")
        return desc + act
    return _code(rb.description, MAX_SECTION, label)


def _approvals_needed(r: RequestCard) -> str:
    n = r.required_approvals
    approvers = r.approvers
    if approvers and all(USER_RE.match(a) for a in approvers):
        return f"{n} of {len(approvers)}"
    if approvers:
        return f"{n} (approvers include a user group)"
    return str(n)


def _approve_confirm(r: RequestCard) -> dict:
    risk = str(r.risk or "")
    title = _plain(f"Approve a {risk}-risk action?", MAX_CONFIRM_TITLE)
    mixed = [label for label, value in _identifiers(r) if mixed_scripts(value)]
    warn = f"⚠️ Mixed scripts in {', '.join(mixed)}: look-alike letters. " if mixed else ""
    text = _plain(
        warn
        + f"This authorises {r.action_type} on {r.target}"
        + (f" in {r.environment}" if r.environment else "")
        + f" (sha256 {str(r.action_sha256 or '')[:16]}…). "
        "Check the exact action in the message first.",
        MAX_CONFIRM_TEXT,
    )
    return {
        "title": _pt(title),
        "text": _pt(text),
        "confirm": _pt("Approve"),
        "deny": _pt("Cancel"),
        "style": "primary",
    }


def request_message(r: RequestCard, *, role: str = "request") -> tuple[str, list[dict]]:
    """The approval request: details, the exact action, and live buttons only while pending."""
    status = r.status
    pending = status == "pending"
    blocks: list[dict] = []
    if role == "escalation":
        blocks.append(
            _section(
                "⏫ *Escalated to you:* no decision yet from the owner."
                if pending
                else "⏫ This request was escalated to you; it is now closed."
            )
        )
    blocks.append(_header(r.title))
    blocks.append(
        _fields(
            [
                ("Workflow", _ident(r.workflow, 200)),
                ("Risk", _risk(r)),
                ("Action", _ident(r.action_type, 300)),
                ("Environment", _ident(r.environment, 300)),
                ("Target", _ident(r.target, 300)),
                ("Agent", _agent(r)),
                ("Executor", _ident(r.executor, 200)),
                ("Deadline", _when(r.deadline)),
                ("Approvals needed", _approvals_needed(r)),
            ]
        )
    )
    warnings = _script_warnings(r)
    if warnings:
        blocks.append(_section("\n".join(warnings)))
    blocks.append(_section(_code(r.justification, MAX_SECTION, "*Justification* (agent-supplied)\n")))
    sha = f"\nsha256: {_inline(r.action_sha256, 100)}"
    blocks.append(
        _section(
            _code(_action_json(r.action), MAX_SECTION - len(sha), "*Exact action* (what a grant will authorise)\n")
            + sha
        )
    )
    blocks.append(_section(_rollback_text(r)))
    prompt = r.prompt
    if prompt:
        cleaned = _clean(prompt)
        excerpt = cleaned[:PROMPT_EXCERPT]
        more = len(cleaned) - len(excerpt)
        text = _code(excerpt, MAX_SECTION - 60, "*Prompt excerpt* (agent-supplied, unverified)\n")
        if more:
            text += f"\n_{_notice(more)}_"
        blocks.append(_section(text))
    blocks.append(_context(_owners(r)))
    blocks.append(_context(_request_context(r)))

    title = _flat(r.title, 300)
    if pending:
        quorum = _quorum_line(r)
        if quorum:
            blocks.append(_section(quorum))
        rid = r.id
        # a typed confirmation (a modal) replaces the confirm dialog
        typed = r.typed_confirmation
        confirm = _approve_confirm(r) if str(r.risk) in ("high", "critical") and not typed else None
        step_up_url = r.step_up_url
        if step_up_url:
            # Approve only after a sign-in at the company's identity provider: a link, not a
            # click Slack's own session could make (rejecting stays one click).
            approve = {
                **_button(ActionId.STEP_UP.value, "Approve (sign in)", rid, "primary"),
                "url": str(step_up_url)[:MAX_URL],
            }
            blocks.append(_context("🔐 Approving takes a fresh sign-in with the company's identity provider."))
        else:
            approve = _button(ActionId.APPROVE.value, "Approve…" if typed else "Approve", rid, "primary", confirm)
        blocks.append(
            {
                "type": "actions",
                "block_id": DECISION_BLOCK,
                "elements": [
                    approve,
                    _button(ActionId.REJECT.value, "Reject", rid, "danger"),
                    _button(ActionId.REJECT_REASON.value, "Reject with reason…", rid, None),
                ],
            }
        )
        if typed and not step_up_url:
            blocks.append(_context("Approving asks you to type the target exactly."))
        lead = "Escalated — approval needed" if role == "escalation" else "Approval needed"
        fallback = f"{lead}: {title} ({r.risk or 'medium'} risk, workflow {_flat(r.workflow, 100)})"
    else:
        blocks.append(_section(_outcome_text(r)))
        if r.auto_approved_by:
            blocks.append(
                _context(
                    f"Approved by policy (rule {_inline(r.auto_approved_by, 100)}): "
                    "posted for information; the owner may revoke it before it runs."
                )
            )
        if r.not_before and status == "approved":
            blocks.append(_context(f"Waiting for the change window: the grant is issued from {_when(r.not_before)}."))
        follow_up = []
        if role == "request" and r.revocable:
            follow_up.append(
                _button(
                    ActionId.REVOKE.value,
                    "Revoke",
                    r.id,
                    "danger",
                    {
                        "title": _pt("Revoke this approval?"),
                        "text": _pt("The grant is withdrawn and the request rejected."),
                        "confirm": _pt("Revoke"),
                        "deny": _pt("Keep it"),
                    },
                )
            )
        if role == "request" and r.can_roll_back:
            follow_up.append(
                _button(
                    ActionId.ROLLBACK.value,
                    "Roll back",
                    r.id,
                    None,
                    {
                        "title": _pt("Request a rollback?"),
                        "text": _pt("A linked rollback request goes through approval."),
                        "confirm": _pt("Request rollback"),
                        "deny": _pt("Cancel"),
                    },
                )
            )
        if follow_up:
            blocks.append({"type": "actions", "block_id": "signoff.follow_up", "elements": follow_up})
        fallback = f"{title}: {_status_word(r)}"
    return _fallback(fallback), _finish(blocks)


# ---------------------------------------------------------------------------------------
# The security exception thread


def _evidence_link(url: Any) -> str:
    s = str(url or "")
    if re.match(r"^https?://[^\s<>|]+$", s):
        return f"<{s.replace('&', '&amp;')}|Open the evidence>"
    return ""


def _exception_lines(items: Sequence[ExceptionNote], budget: int) -> str:
    lines: list[str] = []
    used = 0
    for i, e in enumerate(items):
        line = f"• {_inline(e.kind, 80)} — {_when(e.at)}"
        if e.detail:
            line += f" — {_inline(e.detail, 300)}"
        rest = len(items) - i - 1
        reserve = 40 if rest else 0
        if used + len(line) + 1 + reserve > budget:
            lines.append(f"… and {len(items) - i} more exception(s)")
            break
        lines.append(line)
        used += len(line) + 1
    return "\n".join(lines) if lines else "none recorded"


def exception_message(r: RequestCard) -> tuple[str, list[dict]]:
    """Root post of a request's security exception thread."""
    exceptions = list(r.exceptions)
    title = _flat(r.title, 300)
    blocks: list[dict] = [
        {"type": "header", "text": _pt("🛡️ Exception for security review")},
        _section(
            f"*Request:* {title}\n{_inline(r.id, 120)} · workflow {_inline(r.workflow, 200)}"
            f" · status {_inline(r.status, 40)} · risk {_risk(r)}"
        ),
        _section("*Exceptions*\n" + _exception_lines(exceptions, MAX_SECTION - 20)),
        _fields([("Agent", _agent(r)), ("Executor", _inline(r.executor, 200))]),
        _context(_owners(r)),
    ]
    link = _evidence_link(r.evidence_url)
    if link:
        blocks.append(_section(f"📄 {link} (signed link, expires)"))
    if r.reviewed_by:
        at = f" at {_when(r.reviewed_at)}" if r.reviewed_at else ""
        blocks.append(_section(f"👀 Reviewed by {_who(r.reviewed_by)}{at}"))
        fallback = f"Security review done: {title}"
    else:
        blocks.append(
            {
                "type": "actions",
                "block_id": REVIEW_BLOCK,
                "elements": [_button(ActionId.REVIEW.value, "Mark reviewed", r.id, "primary")],
            }
        )
        kinds = ", ".join(_flat(e.kind, 40) for e in exceptions[:10])
        fallback = f"Security review needed ({kinds or 'exception'}): {title}"
    return _fallback(fallback), _finish(blocks)


def review_modal(request_id: str) -> dict[str, Any]:
    """The optional comment modal opened after "Mark reviewed"."""
    rid = str(request_id or "")
    return {
        "type": "modal",
        "callback_id": REVIEW_MODAL,
        "private_metadata": rid[:MAX_METADATA],
        "title": _pt("Security review"),
        "submit": _pt("Mark reviewed"),
        "close": _pt("Cancel"),
        "blocks": [
            _section(
                f"Request {_inline(rid, 200)}: your review is recorded. Add a comment for the evidence if you like."
            ),
            {
                "type": "input",
                "block_id": COMMENT_INPUT,
                "optional": True,
                "label": _pt("Comment"),
                "element": {
                    "type": "plain_text_input",
                    "action_id": COMMENT_INPUT,
                    "multiline": True,
                    "max_length": 3000,
                },
            },
        ],
    }


def confirm_modal(r: RequestCard) -> dict[str, Any]:
    """Approve on a request that asks for a typed confirmation: type the action's target."""
    rid = r.id
    where = f" in {_inline(r.environment, 200)}" if r.environment else ""
    return {
        "type": "modal",
        "callback_id": CONFIRM_MODAL,
        "private_metadata": rid[:MAX_METADATA],
        "title": _pt("Confirm approval"),
        "submit": _pt("Approve"),
        "close": _pt("Cancel"),
        "blocks": [
            _section(
                f"*{_flat(r.title, 200)}*\n{_inline(r.action_type, 200)} on "
                f"{_inline(r.target, 300)}{where} — {_inline(r.risk, 20)} risk."
            ),
            {
                "type": "input",
                "block_id": CONFIRM_INPUT,
                "label": _pt("Type the target to approve"),
                "hint": _pt("Exactly as shown above; anything else records nothing but a refusal."),
                "element": {"type": "plain_text_input", "action_id": CONFIRM_INPUT, "max_length": 300},
            },
        ],
    }


def reject_reason_modal(request_id: str) -> dict[str, Any]:
    """The "Reject with reason…" modal: the reason is kept on the decision and shown to the agent."""
    rid = str(request_id or "")
    return {
        "type": "modal",
        "callback_id": REJECT_REASON_MODAL,
        "private_metadata": rid[:MAX_METADATA],
        "title": _pt("Reject with a reason"),
        "submit": _pt("Reject"),
        "close": _pt("Cancel"),
        "blocks": [
            _section(f"Request {_inline(rid, 200)}: the agent and the evidence will see your reason."),
            {
                "type": "input",
                "block_id": REASON_INPUT,
                "label": _pt("Reason"),
                "element": {
                    "type": "plain_text_input",
                    "action_id": REASON_INPUT,
                    "multiline": True,
                    "max_length": 3000,
                },
            },
        ],
    }


def agent_comment(agent: Any, text: Any) -> tuple[str, list[dict]]:
    """An agent's comment in a request's thread: who says it (a header line, so nobody takes
    it for a person or for signoff itself), then its text — untrusted, in code blocks, split
    over as many sections as it needs rather than cut."""
    who = _inline(agent, 120)
    raw = _clean(text)
    blks = [_context(f"🤖 *agent {who}* says (agent-supplied, not a person):")]
    render = _code_render("")
    while True:
        # the longest prefix whose rendering fits one section (escaping can lengthen it)
        lo, hi = 1, len(raw)
        if len(render(raw, "")) <= MAX_SECTION:
            lo = len(raw)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if len(render(raw[:mid], "")) <= MAX_SECTION:
                lo = mid
            else:
                hi = mid - 1
        blks.append(_section(render(raw[:lo], "")))
        raw = raw[lo:]
        if not raw:
            break
    return _fallback(f"agent {_flat(agent, 120)} says: {_flat(text, 600)}"), _finish(blks)


def ephemeral_text(reason: Any) -> str:
    """A private answer (e.g. a refused click); the reason is shown as text, never parsed."""
    return _fit(_clean(reason), MAX_SECTION, lambda s, n: _esc(s) + (f" {n}" if n else "")) or "Refused."


# ---------------------------------------------------------------------------------------
# App Home and slash-command answers


def _list_item(r: RequestCard) -> str:
    line = (
        f"{RISK_EMOJI.get(str(r.risk), '⚪')} *{_flat(r.title, 200)}*\n"
        f"{_inline(r.id, 120)} · {_risk(r)} risk · status {_inline(r.status, 40)}"
        f" · workflow {_inline(r.workflow, 100)}"
    )
    if r.status == "pending" and r.deadline:
        line += f" · deadline {_when(r.deadline)}"
    kinds = [e.kind for e in r.exceptions]
    if kinds:
        line += " · exceptions: " + ", ".join(_inline(k, 40) for k in kinds[:5])
        if len(kinds) > 5:
            line += f" and {len(kinds) - 5} more"
    return line


def home_view(pending: Sequence[RequestCard], exceptions: Sequence[RequestCard] | None = None) -> dict[str, Any]:
    """The App Home tab: what the user may decide now and, for security owners, open exceptions."""
    pending = list(pending or [])
    blocks: list[dict] = [{"type": "header", "text": _pt("Waiting for your decision")}]
    if pending:
        blocks += [_section(_list_item(r)) for r in pending[:LIST_LIMIT]]
        if len(pending) > LIST_LIMIT:
            blocks.append(_context(f"… and {len(pending) - LIST_LIMIT} more — `/signoff pending` lists them."))
        blocks.append(_context("Decide with the buttons on each request's message."))
    else:
        blocks.append(_section("Nothing is waiting for your decision."))
    if exceptions is not None:
        exceptions = list(exceptions)
        blocks += [{"type": "divider"}, {"type": "header", "text": _pt("Exceptions to review")}]
        if exceptions:
            blocks += [_section(_list_item(r)) for r in exceptions[:LIST_LIMIT]]
            if len(exceptions) > LIST_LIMIT:
                blocks.append(_context(f"… and {len(exceptions) - LIST_LIMIT} more — `/signoff exceptions`."))
        else:
            blocks.append(_section("No unreviewed exceptions."))
    return {"type": "home", "blocks": _finish(blocks)}


def request_summary_lines(items: Sequence[RequestCard]) -> str:
    """mrkdwn lines for ``/signoff pending`` and ``/signoff exceptions``; empty string for none."""
    items = list(items or [])
    lines: list[str] = []
    used = 0
    for i, r in enumerate(items):
        line = "• " + _list_item(r).replace("\n", " — ", 1)
        if used + len(line) + 1 > MAX_FALLBACK - 60:
            lines.append(f"… and {len(items) - i} more")
            break
        lines.append(line)
        used += len(line) + 1
    return _cap("\n".join(lines), MAX_FALLBACK)


def request_detail_text(r: RequestCard) -> str:
    """mrkdwn for ``/signoff show ID``: the request, its decisions and outcome."""
    lines = [
        f"*{_flat(r.title, 200)}*",
        (
            f"Request {_inline(r.id, 120)} · status {_inline(r.status, 40)} · "
            f"workflow {_inline(r.workflow, 100)} · risk {_risk(r)}"
        ),
        f"Action {_inline(r.action_type, 200)} on {_inline(r.target, 200)}"
        + (f" in {_inline(r.environment, 100)}" if r.environment else ""),
        f"Agent {_agent(r)} · executor {_inline(r.executor, 120)}",
        f"Deadline {_when(r.deadline)} · approvals needed {_approvals_needed(r)}",
        _owners(r),
    ]
    decisions = r.decisions
    if decisions:
        lines.append(
            "Decisions: " + "; ".join(f"{_inline(d.decision, 20)} by {_who(d.by)} at {_when(d.at)}" for d in decisions)
        )
    lines.append(_quorum_line(r) if r.status == "pending" else _outcome_text(r))
    head = "\n".join(x for x in lines if x)
    justification = _code(r.justification, 700, "*Justification* (agent-supplied)\n")
    sha = f"\nsha256: {_inline(r.action_sha256, 100)}"
    action = _code(_action_json(r.action), 1200, "*Exact action*\n") + sha
    rb = r.rollback
    if rb is not None and rb.description:
        rollback = _code(rb.description, 500, "*Rollback plan* (agent-supplied)\n")
    elif rb is not None and rb.action is not None:
        rollback = _code(_action_json(rb.action), 500, "*Rollback action*\n")
    else:
        rollback = "*Rollback plan:* none given"
    return _cap("\n".join([head, justification, action, rollback]), MAX_FALLBACK)


# ---------------------------------------------------------------------------------------
# Digests: several requests in one message, each with its own buttons

DIGEST_MAX = 10  # requests per digest message: 10 × (section + actions + context) + 3 < 50 blocks


def _digest_request(r: RequestCard, role: str, n: int) -> list[dict]:
    """A request's part of a digest: a compact summary, then its own buttons while it is
    pending, or its outcome (no buttons) once it is not."""
    pending = r.status == "pending"
    where = f" in {_inline(r.environment, 200)}" if r.environment else ""
    lead = "⏫ _Escalated to you_ · " if role == "escalation" else ""
    text = (
        f"{lead}*{n}. {_flat(r.title, 200)}*\n"
        f"{_risk(r)} · {_inline(r.action_type, 200)} on {_inline(r.target, 300)}{where}\n"
        f"Agent {_agent(r)} · workflow {_inline(r.workflow, 100)} · deadline {_when(r.deadline)}"
    )
    if pending:
        quorum = _quorum_line(r)
        if quorum:
            text += f"\n{quorum}"
    out = [_section(text)]
    rid = r.id
    if pending:
        typed = r.typed_confirmation
        confirm = _approve_confirm(r) if str(r.risk) in ("high", "critical") and not typed else None
        # block ids are unique within a message: one decision block per request
        out.append(
            {
                "type": "actions",
                "block_id": f"{DECISION_BLOCK}.{n}",
                "elements": [
                    _button(ActionId.APPROVE.value, "Approve…" if typed else "Approve", rid, "primary", confirm),
                    _button(ActionId.REJECT.value, "Reject", rid, "danger"),
                    _button(ActionId.REJECT_REASON.value, "Reject with reason…", rid, None),
                ],
            }
        )
        out.append(_context(_request_context(r) + (" · approving asks you to type the target" if typed else "")))
    else:
        out.append(_context(_request_context(r)))
        out.append(_section(_outcome_text(r)))
    return out


def _digest_exception(r: RequestCard, n: int) -> list[dict]:
    """A request's part of an exception digest: what happened, the evidence link, and
    "Mark reviewed" until the security owner has."""
    title = _flat(r.title, 200)
    link = _evidence_link(r.evidence_url)
    text = (
        f"*{n}. {title}*\n{_inline(r.id, 120)} · workflow {_inline(r.workflow, 100)}"
        f" · status {_inline(r.status, 40)} · risk {_risk(r)}\n" + _exception_lines(list(r.exceptions), 1800)
    )
    if link:
        text += f"\n📄 {link} (signed link, expires)"
    out = [_section(text), _context(_owners(r))]
    if r.reviewed_by:
        at = f" at {_when(r.reviewed_at)}" if r.reviewed_at else ""
        out.append(_section(f"👀 Reviewed by {_who(r.reviewed_by)}{at}"))
    else:
        out.append(
            {
                "type": "actions",
                "block_id": f"{REVIEW_BLOCK}.{n}",
                "elements": [_button(ActionId.REVIEW.value, "Mark reviewed", r.id, "primary")],
            }
        )
    return out


def digest_message(kind: str, items: Sequence[tuple[str, RequestCard]]) -> tuple[str, list[dict]]:
    """One message for several requests owed to the same channel or person: ``kind``
    ``decide`` (requests and escalations; ``items`` are (role, card)) or
    ``exception`` (security review). Each request has its own section and, while it is
    open, its own buttons (value = its id); a decided one shows its outcome and none."""
    items = list(items)[:DIGEST_MAX]
    n = len(items)
    blks: list[dict] = []
    if kind == "exception":
        open_ = sum(1 for _role, r in items if not r.reviewed_by)
        head = (
            f"🛡️ {n} exceptions for security review"
            if open_ == n
            else f"🛡️ {open_} of {n} exceptions still to review"
            if open_
            else f"🛡️ {n} exceptions, all reviewed"
        )
        blks.append({"type": "header", "text": _pt(head)})
        for i, (_role, r) in enumerate(items, 1):
            blks += _digest_exception(r, i)
        titles = ", ".join(_flat(r.title, 80) for _role, r in items)
        fallback = (
            f"Security review needed for {open_} request(s): {titles}" if open_ else f"Security review done: {titles}"
        )
    else:
        open_ = sum(1 for _role, r in items if r.status == "pending")
        head = (
            f"{n} requests need a decision"
            if open_ == n
            else f"{open_} of {n} requests still need a decision"
            if open_
            else f"{n} requests, all decided"
        )
        blks.append({"type": "header", "text": _pt(head)})
        for i, (role, r) in enumerate(items, 1):
            blks.append({"type": "divider"})
            blks += _digest_request(r, role, i)
        titles = ", ".join(_flat(r.title, 80) for _role, r in items)
        fallback = f"Approval needed for {open_} request(s): {titles}" if open_ else f"Decided: {titles}"
    blks.append(
        _context(
            "Posted together: more arrived at once than Slack lets signoff post one by one. "
            "Each request is decided on its own, with its own buttons; its thread notes "
            "appear in this message's thread."
        )
    )
    return _fallback(fallback), blks[:MAX_BLOCKS]


def digest_thread_note(request_id: Any, title: Any, text: str) -> str:
    """A request's thread note (trusted mrkdwn ``text``) posted in its digest's thread:
    prefixed with which request it is about."""
    return _cap(f"*{_flat(title, 150)}* ({_inline(request_id, 120)}): {text}", MAX_FALLBACK)
