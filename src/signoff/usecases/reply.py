"""record_reply: human messages in a request's thread become evidence."""

from __future__ import annotations

import hashlib
from typing import Any

from signoff.usecases.ports import Context, Repository


def record_thread_message(
    ctx: Context, *, event: dict[str, Any], event_id: str | None, found_late: bool = False
) -> bool:
    """Record a thread reply, edit or deletion once (Slack retries share ``event_id``).

    Returns True when it was recorded (False: not a request thread, or seen before).
    """
    subtype = event.get("subtype")
    channel = event.get("channel")
    if subtype == "message_changed":
        msg = event.get("message") or {}
        prev = event.get("previous_message") or {}
        kind, user, ts, thread_ts = "thread.edited", msg.get("user"), msg.get("ts"), msg.get("thread_ts")
        data = {"user": user, "ts": ts, "text": msg.get("text", ""), "previous_text": prev.get("text")}
    elif subtype == "message_deleted":
        prev = event.get("previous_message") or {}
        kind, user, ts, thread_ts = "thread.deleted", prev.get("user"), event.get("deleted_ts"), prev.get("thread_ts")
        data = {"user": user, "ts": ts}
    elif subtype in (None, "thread_broadcast", "file_share"):
        kind, user, ts, thread_ts = "thread.reply", event.get("user"), event.get("ts"), event.get("thread_ts")
        data = {"user": user, "ts": ts, "text": event.get("text", "")}
    else:
        return False
    if event.get("bot_id") or not user or not thread_ts or thread_ts == ts:
        return False
    data.update(channel=channel, thread_ts=thread_ts)
    if found_late:
        data["found_late"] = True

    def tx(repo: Repository) -> bool:
        now = ctx.clock()
        # a digest's thread is the thread of every request it shows
        msgs = repo.messages_by_ts(channel, thread_ts)
        if not msgs:
            return False
        # Keyed by what the message is, not by event_id: Slack's retries and the
        # reconciliation after close (conversations.replies) must not record it twice.
        text_hash = hashlib.sha256((data.get("text") or "").encode()).hexdigest()[:16]
        if not repo.first_sighting(f"{kind}:{channel}:{ts}:{text_hash}", now):
            return False
        recorded = False
        for request_id in dict.fromkeys(m.request_id for m in msgs):
            req = repo.get(request_id)
            if req is not None:
                repo.append_event(req, kind, user, data, now)
                repo.touch(req)  # the agent's view shows the thread
                recorded = True
        return recorded

    return ctx.uow.transaction(tx)


def reconcile_thread(ctx: Context, *, channel: str, thread_ts: str, replies: list[dict[str, Any]]) -> int:
    """After a request closes: record thread messages the Events API never delivered."""
    found = 0
    for m in replies:
        if m.get("ts") == thread_ts:
            continue
        event = {
            "type": "message",
            "channel": channel,
            "user": m.get("user"),
            "text": m.get("text", ""),
            "ts": m.get("ts"),
            "thread_ts": m.get("thread_ts") or thread_ts,
            "bot_id": m.get("bot_id"),
            "subtype": m.get("subtype"),
        }
        if record_thread_message(ctx, event=event, event_id=None, found_late=True):
            found += 1
    return found
