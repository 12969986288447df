"""The evidence bundle as one self-contained HTML page (inline CSS, no scripts, no
external assets). Every string from the bundle is HTML-escaped: agents and Slack users
wrote much of it."""

from __future__ import annotations

import json
from html import escape
from typing import Any

CSS = """
:root{color-scheme:light;--ink:#1d2330;--muted:#5b6474;--line:#d9dde5;--bg:#f6f7f9;--ok:#17663a;--bad:#a1231b;
--warn:#8a5a00}
*{box-sizing:border-box}body{margin:0;font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:var(--ink);background:var(--bg)}main{max-width:1100px;margin:0 auto;padding:24px}
header{background:#fff;border:1px solid var(--line);border-radius:8px;padding:20px 24px;margin-bottom:16px}
h1{font-size:22px;margin:0 0 8px}h2{font-size:16px;margin:0 0 10px}
section{background:#fff;border:1px solid var(--line);border-radius:8px;padding:16px 24px;margin-bottom:16px}
.badge{display:inline-block;padding:1px 10px;border-radius:999px;font-weight:600;font-size:12px;
border:1px solid currentColor;margin-right:6px}
.st-succeeded,.st-approved,.st-executing{color:var(--ok)}.st-rejected,.st-failed,.st-expired{color:var(--bad)}
.st-pending,.st-cancelled{color:var(--warn)}.risk-high,.risk-critical{color:var(--bad)}.risk-medium{color:var(--warn)}
.risk-low{color:var(--ok)}
dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;margin:0}dt{color:var(--muted)}dd{margin:0}
table{border-collapse:collapse;width:100%}th,td{text-align:left;vertical-align:top;padding:6px 8px;
border-bottom:1px solid var(--line)}th{color:var(--muted);font-weight:600;font-size:12px}
code,pre{font:12px/1.45 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
pre{background:var(--bg);border:1px solid var(--line);border-radius:6px;padding:10px;overflow:auto;
white-space:pre-wrap;word-break:break-word;margin:6px 0}
.hash{word-break:break-all;color:var(--muted)}.muted{color:var(--muted)}
.msg{border-left:3px solid var(--line);padding:4px 12px;margin:8px 0}.msg .who{font-weight:600}
.deleted .text{text-decoration:line-through;color:var(--muted)}
.ok{color:var(--ok);font-weight:600}.bad{color:var(--bad);font-weight:600}
details summary{cursor:pointer;color:var(--muted)}
"""


def e(value: Any) -> str:
    """HTML-escaped text of any value (None → empty)."""
    if value is None:
        return ""
    return escape(value if isinstance(value, str) else str(value), quote=True)


def _json(value: Any) -> str:
    return e(json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True))


def _cls(prefix: str, value: Any) -> str:
    text = str(value or "")
    return prefix + "-" + "".join(ch for ch in text if ch.isalnum())


def _summary(ev: dict[str, Any]) -> str:
    t = ev.get("type", "")
    d = ev.get("data") if isinstance(ev.get("data"), dict) else {}
    if t == "request.submitted":
        return f"submitted “{e(d.get('title'))}” ({e(d.get('risk'))} risk) to workflow {e(d.get('workflow'))}"
    if t == "decision.recorded":
        su = d.get("step_up") if isinstance(d.get("step_up"), dict) else None
        if su:
            return (
                f"<b>{e(d.get('decision'))}</b> after signing in at {e(su.get('issuer'))} as {e(su.get('sub'))} "
                f"(amr {e(', '.join(map(str, su.get('amr') or [])))}, auth_time {e(su.get('auth_time'))})"
            )
        return f"<b>{e(d.get('decision'))}</b>"
    if t == "step_up.refused":
        return f"tried to approve after signing in: <span class=bad>refused</span> — {e(d.get('reason'))}" + (
            f" ({e(d.get('detail'))})" if d.get("detail") else ""
        )
    if t == "click.refused":
        return f"tried to {e(d.get('decision'))}: <span class=bad>refused</span> — {e(d.get('reason'))}"
    if t == "click.repeated":
        return f"clicked {e(d.get('decision'))} after the request was {e(d.get('status'))}; nothing changed"
    if t.startswith("request."):
        extra = d.get("reason") or d.get("detail") or d.get("delivery")
        return f"{e(d.get('from'))} → <b>{e(d.get('to'))}</b>" + (f" — {e(extra)}" if extra else "")
    if t == "policy.checked":
        verdict = "<span class=ok>allowed</span>" if d.get("allowed") else "<span class=bad>refused</span>"
        return f"runtime policy re-check: {verdict} ({e(d.get('reason'))})"
    if t == "grant.issued":
        c = d.get("claims") if isinstance(d.get("claims"), dict) else {}
        return f"grant for {e(c.get('sub'))}, action {e(str(c.get('action_sha256'))[:12])}…, expires {e(c.get('exp'))}"
    if t == "grant.delivered":
        return f"grant delivered ({e(d.get('delivery'))})"
    if t == "escalation.fired":
        step = d.get("step")
        label = step + 1 if isinstance(step, int) else step
        return f"escalation step {e(label)}: now also asking {e(', '.join(map(str, d.get('to') or [])))}"
    if t == "exception.raised":
        return f"exception: <b>{e(d.get('kind'))}</b>" + (f" — {e(d.get('detail'))}" if d.get("detail") else "")
    if t == "thread.reply":
        return f"replied: “{e(d.get('text'))}”"
    if t == "thread.agent_reply":
        return f"commented in the thread (agent): “{e(d.get('text'))}”"
    if t == "thread.edited":
        return f"edited a reply: “{e(d.get('previous_text'))}” → “{e(d.get('text'))}”"
    if t == "thread.deleted":
        return "deleted a reply"
    if t == "slack.posted":
        return f"posted to {e(d.get('channel'))} ({e(d.get('role'))})"
    if t == "exception.reviewed":
        return "marked the exceptions reviewed"
    if t == "review.comment":
        return f"review comment: “{e(d.get('comment'))}”"
    if t == "review.refused":
        return f"tried to review: <span class=bad>refused</span> — {e(d.get('reason'))}"
    text = json.dumps(d, ensure_ascii=False, sort_keys=True)
    return e(text if len(text) <= 200 else text[:200] + "…")


def render_html(bundle: dict[str, Any]) -> str:
    """A readable, self-contained page for one evidence bundle."""
    req = bundle.get("request") or {}
    owners = bundle.get("owners") or {}
    status = bundle.get("status") or req.get("status")
    out: list[str] = []
    w = out.append
    w("<!doctype html><html lang=en><head><meta charset=utf-8>")
    w("<meta http-equiv=Content-Security-Policy content=\"default-src 'none'; style-src 'unsafe-inline'\">")
    w('<meta name=viewport content="width=device-width,initial-scale=1">')
    w(f"<title>Evidence: {e(req.get('title'))}</title><style>{CSS}</style></head><body><main>")

    # header
    w("<header>")
    w(f"<h1>{e(req.get('title'))}</h1>")
    w(
        f'<p><span class="badge {_cls("st", status)}">{e(status)}</span>'
        f'<span class="badge {_cls("risk", req.get("risk"))}">{e(req.get("risk"))} risk</span>'
        f"<span class=muted>request <code>{e(req.get('id'))}</code> · workflow <code>{e(req.get('workflow'))}</code>"
        f"</span></p>"
    )
    action = req.get("action") if isinstance(req.get("action"), dict) else {}
    w(
        f"<p><b>Action</b> <code>{e(action.get('type'))}</code> on <code>{e(action.get('target'))}</code>"
        + (f" in <code>{e(action.get('environment'))}</code>" if action.get("environment") else "")
        + "</p>"
    )
    w(f"<pre>{_json(req.get('action'))}</pre>")
    w(f"<p class=hash>action_sha256 {e(req.get('action_sha256'))}</p>")
    integ = bundle.get("integrity") or {}
    if integ.get("ok", True):
        w("<p class=ok>Hash chain intact at export.</p>")
    else:
        w(
            "<p class=bad>Integrity problems at export:</p><ul>"
            + "".join(f"<li>{e(p)}</li>" for p in integ.get("problems") or [])
            + "</ul>"
        )
    w("</header>")

    # who
    w("<section><h2>People on record</h2><dl>")
    for label, value in (
        ("Owner", owners.get("owner")),
        ("Platform owner", owners.get("platform_owner")),
        ("Security owner", owners.get("security_owner")),
        ("Agent sponsor", req.get("sponsor")),
        ("Submitted by (agent)", req.get("submitted_by")),
        ("Executor (agent)", req.get("executor")),
    ):
        w(f"<dt>{e(label)}</dt><dd><code>{e(value)}</code></dd>")
    w("</dl></section>")

    # the request
    w("<section><h2>What was asked</h2><dl>")
    for label, key in (
        ("Created", "created_at"),
        ("Deadline", "deadline"),
        ("Decided", "decided_at"),
        ("Parent request", "parent_id"),
        ("Rolls back", "rollback_of"),
        ("Policy", "policy_sha256"),
        ("Rule", "rule"),
    ):
        if req.get(key):
            w(f"<dt>{e(label)}</dt><dd><code>{e(req.get(key))}</code></dd>")
    w("</dl>")
    w(f"<h3>Justification</h3><pre>{e(req.get('justification'))}</pre>")
    if req.get("rollback") is not None:
        w(f"<h3>Rollback plan</h3><pre>{_json(req.get('rollback'))}</pre>")
    if req.get("prompt"):
        w(
            f"<details><summary>Prompt that led the agent here ({len(str(req.get('prompt')))} characters)"
            f"</summary><pre>{e(req.get('prompt'))}</pre></details>"
        )
    w("</section>")

    # decisions
    w("<section><h2>Decisions</h2>")
    decisions = bundle.get("decisions") or []
    if decisions:
        w("<table><tr><th>When</th><th>Who</th><th>Decision</th><th>Event</th></tr>")
        for d in decisions:
            w(
                f"<tr><td>{e(d.get('at'))}</td><td><code>{e(d.get('by'))}</code></td><td><b>{e(d.get('decision'))}"
                f"</b></td><td>#{e(d.get('seq'))}</td></tr>"
            )
        w("</table>")
    else:
        w("<p class=muted>No decision recorded.</p>")
    refused = bundle.get("refused_clicks") or []
    if refused:
        w(
            "<h3>Refused clicks</h3><table><tr><th>When</th><th>Who</th><th>Tried</th><th>Why refused</th>"
            "<th>Event</th></tr>"
        )
        for d in refused:
            tried = d.get("decision") or d.get("what")
            w(
                f"<tr><td>{e(d.get('at'))}</td><td><code>{e(d.get('by'))}</code></td><td>{e(tried)}</td>"
                f"<td>{e(d.get('reason'))}</td><td>#{e(d.get('seq'))}</td></tr>"
            )
        w("</table>")
    w("</section>")

    # thread
    w("<section><h2>Thread</h2>")
    thread = bundle.get("thread") or []
    if not thread:
        w("<p class=muted>No replies in the request's thread.</p>")
    for m in thread:
        cls = "msg deleted" if m.get("deleted") else "msg"
        who = f"{e(m.get('user'))} <span class=muted>(agent)</span>" if m.get("agent") else e(m.get("user"))
        w(
            f'<div class="{cls}"><span class=who>{who}</span> <span class=muted>{e(m.get("at"))}'
            f" · ts {e(m.get('ts'))}</span>"
        )
        w(f"<div class=text>{e(m.get('text'))}</div>")
        for ed in m.get("edits") or []:
            w(f"<div class=muted>edited {e(ed.get('at'))}; before: “{e(ed.get('previous_text'))}”</div>")
        if m.get("deleted"):
            w(f"<div class=muted>deleted {e(m.get('deleted_at'))}</div>")
        w("</div>")
    w("</section>")

    # grant and outcome
    w("<section><h2>Grant and outcome</h2>")
    grant = bundle.get("grant")
    if grant:
        w(
            f"<p>Grant issued {e(grant.get('issued_at'))} (key <code>{e(grant.get('kid'))}</code>); the token itself "
            "is never stored in evidence.</p>"
        )
        w(f"<pre>{_json(grant.get('claims'))}</pre>")
        if grant.get("delivered"):
            w(f"<p>Delivered {e(grant['delivered'].get('at'))} ({e(grant['delivered'].get('how'))}).</p>")
        if grant.get("revoked"):
            w(
                f"<p class=bad>Revoked by <code>{e(grant['revoked'].get('by'))}</code> at "
                f"{e(grant['revoked'].get('at'))}.</p>"
            )
        if grant.get("expired_without_outcome"):
            w(
                f"<p class=bad>The grant expired with no outcome reported "
                f"({e(grant['expired_without_outcome'].get('at'))}).</p>"
            )
    else:
        w("<p class=muted>No grant was issued.</p>")
    outcome = bundle.get("outcome")
    if outcome:
        cls = "ok" if outcome.get("status") == "succeeded" else "bad"
        w(
            f"<p>Outcome: <span class={cls}>{e(outcome.get('status'))}</span>, reported by "
            f"<code>{e(outcome.get('by'))}</code> at {e(outcome.get('at'))}</p>"
        )
        if outcome.get("detail"):
            w(f"<pre>{e(outcome.get('detail'))}</pre>")
    elif grant:
        w("<p class=muted>No outcome reported.</p>")
    w("</section>")

    # exceptions
    exceptions = bundle.get("exceptions") or []
    reviews = bundle.get("reviews") or []
    if exceptions or reviews:
        w(
            "<section><h2>Exceptions and review</h2><table><tr><th>When</th><th>What</th><th>Detail</th>"
            "<th>Event</th></tr>"
        )
        for x in exceptions:
            w(
                f"<tr><td>{e(x.get('at'))}</td><td>{e(x.get('kind'))}</td><td>{e(x.get('detail'))}</td>"
                f"<td>#{e(x.get('seq'))}</td></tr>"
            )
        for r in reviews:
            detail = r.get("comment") or r.get("reason") or ""
            w(
                f"<tr><td>{e(r.get('at'))}</td><td>{e(r.get('type'))} by <code>{e(r.get('by'))}</code></td>"
                f"<td>{e(detail)}</td><td>#{e(r.get('seq'))}</td></tr>"
            )
        w("</table></section>")

    # timeline
    w("<section><h2>Timeline</h2><table><tr><th>#</th><th>When</th><th>Who</th><th>What</th></tr>")
    for ev in bundle.get("events") or []:
        w(
            f"<tr><td>{e(ev.get('seq'))}</td><td><code>{e(ev.get('at'))}</code></td><td><code>{e(ev.get('actor'))}"
            f"</code></td><td><code>{e(ev.get('type'))}</code><br>{_summary(ev)}"
            f"<details><summary>data and hashes</summary><pre>{_json(ev.get('data'))}</pre>"
            f"<div class=hash>prev {e(ev.get('prev_hash'))}<br>hash {e(ev.get('hash'))}</div></details></td></tr>"
        )
    w("</table></section>")

    # controls
    w(
        "<section><h2>Controls evidenced</h2><table><tr><th>Framework</th><th>Item</th><th>What the record shows"
        "</th><th>Events</th></tr>"
    )
    for c in bundle.get("controls") or []:
        status_cls = "ok" if c.get("status") == "evidenced" else "muted"
        seqs = ", ".join(f"#{x.get('seq')} {x.get('type')}" for x in (c.get("events") or [])[:12])
        more = len(c.get("events") or []) - 12
        w(
            f"<tr><td>{e(c.get('framework'))}</td><td><b>{e(c.get('id'))}</b> {e(c.get('title'))}<br>"
            f"<span class={status_cls}>{e(c.get('status'))}</span></td><td>{e(c.get('evidence'))}</td>"
            f"<td><code>{e(seqs)}</code>{e(f' and {more} more') if more > 0 else ''}</td></tr>"
        )
    w("</table></section>")

    # signature
    sig = bundle.get("signature") or {}
    chain_info = bundle.get("chain") or {}
    w("<section><h2>Signature</h2><dl>")
    w(f"<dt>Algorithm</dt><dd>{e(sig.get('alg'))}</dd><dt>Key id</dt><dd><code>{e(sig.get('kid'))}</code></dd>")
    w(f"<dt>Value</dt><dd class=hash>{e(sig.get('value'))}</dd>")
    w(f"<dt>Chain head</dt><dd class=hash>{e(chain_info.get('head'))} ({e(chain_info.get('event_count'))} events)</dd>")
    w(f"<dt>Exported</dt><dd>{e(bundle.get('exported_at'))}</dd></dl>")
    w(
        "<p class=muted>The signature covers the RFC 8785 canonical JSON of the bundle without its signature; "
        "check the JSON form with <code>signoff evidence verify-bundle</code>.</p></section>"
    )
    w("</main></body></html>")
    return "".join(out)
