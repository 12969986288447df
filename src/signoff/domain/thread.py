"""A request's Slack thread as the agent sees it, folded from its evidence events. Pure.

Human replies (``thread.reply``), their edits and deletions, and the agents' own comments
(``thread.agent_reply``) become one list, oldest first, each ``{"user", "ts", "text"}``:
an edited reply shows its current text (and ``"edited": true``), a deleted one is left
out — the evidence bundle keeps the whole history.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

TYPES = ("thread.reply", "thread.edited", "thread.deleted", "thread.agent_reply")


def slack_ts(at: datetime) -> str:
    """``at`` written like a Slack message ts (unix seconds, six decimals): where an agent's
    comment sorts among the human replies."""
    at = at if at.tzinfo else at.replace(tzinfo=timezone.utc)
    delta = at - datetime(1970, 1, 1, tzinfo=timezone.utc)
    micros = delta.days * 86_400_000_000 + delta.seconds * 1_000_000 + delta.microseconds
    return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"


def ts_key(ts: Any) -> tuple[int, int]:
    """A Slack ts as a sortable pair; anything unreadable sorts last."""
    try:
        sec, _, frac = str(ts).partition(".")
        return int(sec), int(frac.ljust(6, "0")[:6] or 0)
    except ValueError:
        return (2**62, 0)


def fold(events: Iterable[tuple[int, str, str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The thread from ``(seq, type, actor, data)`` of a request's thread events, in seq order."""
    entries: list[tuple[int, dict[str, Any]]] = []
    human: dict[str, dict[str, Any]] = {}  # by Slack ts
    deleted: set[str] = set()
    for seq, type_, actor, data in events:
        d = data if isinstance(data, dict) else {}
        ts = d.get("ts")
        if type_ == "thread.agent_reply":
            entries.append((seq, {"user": actor, "ts": ts, "text": d.get("text", ""), "id": d.get("comment_id")}))
            continue
        key = str(ts)
        if type_ == "thread.deleted":
            deleted.add(key)
            continue
        entry = human.get(key)
        if entry is None:
            # a first sighting; for an edit, the original never reached us: it stands for it
            entry = human[key] = {"user": d.get("user") or actor, "ts": ts}
            entries.append((seq, entry))
        # the latest text wins (a reply found late, after close, carries the current text)
        entry["text"] = d.get("text", "")
        if type_ == "thread.edited":
            entry["edited"] = True
    kept = [(seq, e) for seq, e in entries if "id" in e or str(e["ts"]) not in deleted]
    kept.sort(key=lambda se: (ts_key(se[1]["ts"]), se[0]))
    return [e for _seq, e in kept]
