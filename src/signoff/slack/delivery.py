"""Outbox handlers that talk to Slack's Web API."""

from __future__ import annotations

import logging
import threading
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from signoff.domain.identifiers import USER_RE
from signoff.outbox.dispatcher import Claim, Defer, GiveUp, Job, Record, Retry
from signoff.slack import blocks, notes
from signoff.slack.card import RequestCard
from signoff.slack.digest import DigestPlanner
from signoff.slack.pacing import Pacer
from signoff.usecases.digest import digest_context, record_digest_posted_in
from signoff.usecases.escalate import expand_group
from signoff.usecases.ports import Context
from signoff.usecases.reply import reconcile_thread
from signoff.usecases.slack_ops import (
    ClaimRead,
    message_context,
    message_ref,
    read_messages,
    record_comment_posted_in,
    record_posted_in,
)

log = logging.getLogger(__name__)

METADATA_TYPE = "signoff_message"
COMMENT_METADATA_TYPE = "signoff_agent_comment"
# Errors that retrying cannot fix.
PERMANENT = {
    "channel_not_found",
    "not_in_channel",
    "is_archived",
    "invalid_auth",
    "account_inactive",
    "user_not_found",
    "cant_update_message",
    "msg_too_long",
    "invalid_blocks",
    "no_text",
    "not_authed",
    "missing_scope",
    "no_such_subteam",
    "message_not_found",
    "restricted_action",
    "cannot_dm_bot",
    "user_disabled",
}


# Calls whose arguments are plain JSON data: made with KeepAliveWebClient.post_json (the
# same request slack_sdk's method makes, without its layers around it).
JSON_METHODS = frozenset({"chat.postMessage", "chat.update", "chat.postEphemeral"})


def call_slack(fn, **kwargs) -> Any:
    """Call the Web API; turn failures into Retry (transient), GiveUp (permanent) or, for a
    429, ``RateLimited`` (no attempt counted: waiting out a limit is not a failure)."""
    try:
        return fn(**kwargs)
    except SlackApiError as exc:
        resp = exc.response
        status = getattr(resp, "status_code", None)
        error = (resp.data or {}).get("error") if isinstance(getattr(resp, "data", None), dict) else None
        if status == 429:
            raise RateLimited(_retry_after(resp.headers or {})) from None
        if error in PERMANENT:
            raise GiveUp(f"Slack refused: {error}") from None
        raise Retry(f"Slack error {status}: {error}") from None
    except (SlackClientError, OSError) as exc:
        raise Retry(f"Slack unreachable: {exc}") from None


def _retry_after(headers) -> float:
    raw = headers.get("Retry-After") or headers.get("retry-after") or "1"
    try:
        return max(0.0, min(float(raw), 3600.0))
    except ValueError:
        return 1.0


class RateLimited(Exception):
    def __init__(self, after: float):
        super().__init__(f"rate limited by Slack for {after:g} s")
        self.after = after


# Who hears first when Slack's limits leave room for only some posts: the people who can
# decide (a request or escalation), then notes in threads, then security threads.
PRIORITY = {"request": 0, "escalation": 0, "thread": 1, "exception": 2}


# Rows that only read (and post): a claim's one read stays valid for a request's later
# rows as long as all its earlier rows in the claim are of these kinds (their writes are
# ``Record``s, and a post's is mirrored into the read).
READ_ONLY = frozenset(
    {"slack.post", "slack.update", "slack.thread", "slack.comment", "slack.ephemeral", "slack.digest"}
)
READS = frozenset({"slack.post", "slack.update", "slack.thread", "slack.comment"})


def render(ctx_data: dict[str, Any]) -> tuple[str, list[dict]]:
    """Text and blocks of one message, from ``message_context`` (its message and request)."""
    role = ctx_data["message"]["role"]
    card = RequestCard.from_view(ctx_data["request"])
    if role == "exception":
        return blocks.exception_message(card)
    return blocks.request_message(card, role=role)


def render_digest(data: dict[str, Any]) -> tuple[str, list[dict]]:
    """Text and blocks of one digest message, from ``digest_context``."""
    items = [(role, RequestCard.from_view(request)) for role, request in data["items"]]
    return blocks.digest_message(data["digest"]["kind"], items)


class SlackDelivery:
    def __init__(self, ctx: Context, client: WebClient, pacer: Pacer | None = None):
        self.ctx = ctx
        self.client = client
        self.pacer = pacer
        self._planner = DigestPlanner(ctx, pacer, self._claim_read) if pacer is not None else None

    def plan(self, claim: Claim) -> set[int]:
        """The dispatcher's planning hook: posts owed to one place beyond what pacing lets
        through within ``digest_after`` are taken over into digests (``slack.digest``).
        Without pacing there is no such limit, and no digest."""
        return self._planner(claim) if self._planner is not None else set()

    def _slack(self, method: str, *, priority: int = 0, **kwargs) -> Any:
        """One Web API call, paced: when Slack's limits (as the pacer keeps them) do not
        allow it now, or Slack answers 429, the row is deferred — no attempt counted — for
        as long as it takes, and only that method (and channel) waits."""
        channel = kwargs.get("channel")
        if self.pacer is not None:
            wait = self.pacer.take(method, channel, priority)
            if wait > 0:
                raise Defer(f"paced: {method}" + (f" in {channel}" if channel else ""), after=wait, alone=True)
        post_json = getattr(self.client, "post_json", None) if method in JSON_METHODS else None
        fn = (
            getattr(self.client, method.replace(".", "_"))
            if post_json is None
            else (lambda **body: post_json(method, body))
        )
        try:
            return call_slack(fn, **kwargs)
        except RateLimited as limited:
            if self.pacer is not None:
                self.pacer.pause(method, channel, limited.after)
            raise Defer(str(limited), after=limited.after, alone=True) from None

    def handlers(self) -> dict:
        return {
            "slack.post": self.post,
            "slack.digest": self.digest,
            "slack.update": self.update,
            "slack.thread": self.thread,
            "slack.comment": self.comment,
            "slack.ephemeral": self.ephemeral,
            "slack.expand": self.expand,
            "slack.reconcile": self.reconcile,
        }

    def _claim_read(self, job: Job) -> ClaimRead | None:
        """The claim's one read, when it may answer for ``job`` (None: read afresh)."""
        claim = job.claim
        if claim is None or job.request_id is None:
            return None
        with claim.lock:
            cached = claim.cache.get("slack")
            if cached is None:
                usable: set[int] = set()
                ids: list[int] = []
                tainted: set[str] = set()  # requests with a row that writes directly
                for j in claim.jobs:
                    if j.request_id is None:
                        continue
                    if j.kind in READS and j.request_id not in tainted and "message_id" in j.payload:
                        usable.add(j.id)
                        ids.append(j.payload["message_id"])
                    if j.kind not in READ_ONLY:
                        tainted.add(j.request_id)
                cached = claim.cache["slack"] = (usable, read_messages(self.ctx, ids) if ids else None)
        usable, read = cached
        return read if job.id in usable else None

    def _context(self, job: Job) -> dict[str, Any] | None:
        read = self._claim_read(job)
        mid = job.payload["message_id"]
        return read.context(mid) if read is not None else message_context(self.ctx, mid)

    def post(self, job: Job) -> Record | None:
        """Post the message; where Slack put it is recorded (with its evidence event) by the
        returned ``Record``, in the transaction that finishes the outbox row."""
        data = self._context(job)
        if data is None:
            raise GiveUp("message or request no longer exists")
        msg = data["message"]
        if msg["ts"] or msg.get("digest_id"):
            return None  # already posted (a redelivery after the post was recorded), or in a digest
        metadata = {
            "event_type": METADATA_TYPE,
            "event_payload": {"request_id": msg["request_id"], "message_id": str(msg["id"])},
        }
        if job.was_in_flight:
            # A previous attempt may have reached Slack before this process died: look first.
            found = self._find_posted(msg["target"], "message_id", str(msg["id"]))
            if found:
                return self._posted(job, msg["id"], found[0], found[1])
        text, blks = render(data)
        resp = self._slack(
            "chat.postMessage",
            priority=PRIORITY.get(msg["role"], 0),
            channel=msg["target"],
            text=text,
            blocks=blks,
            metadata=metadata,
            unfurl_links=False,
            unfurl_media=False,
        )
        return self._posted(job, msg["id"], resp["channel"], resp["ts"])

    def _posted(self, job: Job, message_id: int, channel: str, ts: str) -> Record:
        clock = self.ctx.clock
        read = self._claim_read(job)
        if read is not None:
            # the request's next row runs only once this is recorded: it sees the post
            read.posted(message_id, channel, ts)

        def write(session) -> None:
            record_posted_in(session, clock(), message_id=message_id, channel=channel, ts=ts)

        return Record(write, key=message_id)

    def _find_posted(self, target: str, key: str, value: str) -> tuple[str, str] | None:
        """Where a post that may have reached Slack before a crash is: the message in
        ``target`` whose metadata carries ``key`` = ``value``."""
        channel = target
        try:
            if USER_RE.match(target):
                channel = self.client.conversations_open(users=target)["channel"]["id"]
            history = self.client.conversations_history(channel=channel, limit=100, include_all_metadata=True)
        except (SlackApiError, SlackClientError, OSError, KeyError, TypeError):
            return None
        for m in history.get("messages", []) or []:
            meta = m.get("metadata") or {}
            if meta.get("event_type") == METADATA_TYPE and (meta.get("event_payload") or {}).get(key) == value:
                return channel, m["ts"]
        return None

    def update(self, job: Job) -> None:
        data = self._context(job)
        if data is None:
            raise GiveUp("message or request no longer exists")
        msg = data["message"]
        if msg.get("digest_id"):
            return self._update_digest(job, msg["digest_id"])
        if not msg["ts"]:
            raise Defer("message not posted yet")
        text, blks = render(data)
        self._slack("chat.update", channel=msg["channel"], ts=msg["ts"], text=text, blocks=blks)

    def thread(self, job: Job) -> None:
        read = self._claim_read(job)  # nothing to render
        mid = job.payload["message_id"]
        msg = read.message(mid) if read is not None else message_ref(self.ctx, mid)
        if msg is None:
            raise GiveUp("message or request no longer exists")
        if not msg["ts"]:
            raise Defer("parent message not posted yet")
        text = notes.thread_text(job.payload)
        if msg.get("digest_id"):
            # the digest's thread holds the notes of all its requests: say which one
            data = self._context(job)
            title = (data or {}).get("request", {}).get("title")
            text = blocks.digest_thread_note(msg["request_id"], title, text)
        priority = PRIORITY["exception"] if msg.get("role") == "exception" else PRIORITY["thread"]
        self._slack(
            "chat.postMessage",
            priority=priority,
            channel=msg["channel"],
            thread_ts=msg["ts"],
            text=text,
            unfurl_links=False,
        )

    # ------------------------------------------------------------------ digests
    def digest(self, job: Job) -> Record | None:
        """Post a digest (exactly once, like any post: after a crash mid-delivery it is
        looked for by its metadata first); where it landed is recorded on it, on each
        message it shows, and in each request's evidence."""
        digest_id = job.payload["digest_id"]
        data = digest_context(self.ctx, digest_id)
        if data is None or not data["items"]:
            raise GiveUp("digest or its requests no longer exist")
        d = data["digest"]
        if d["ts"]:
            return None
        if job.was_in_flight:
            found = self._find_posted(d["target"], "digest_id", str(digest_id))
            if found:
                return self._digest_posted(digest_id, *found)
        text, blks = render_digest(data)
        metadata = {"event_type": METADATA_TYPE, "event_payload": {"digest_id": str(digest_id)}}
        priority = PRIORITY["exception"] if d["kind"] == "exception" else PRIORITY["request"]
        resp = self._slack(
            "chat.postMessage",
            priority=priority,
            channel=d["target"],
            text=text,
            blocks=blks,
            metadata=metadata,
            unfurl_links=False,
            unfurl_media=False,
        )
        return self._digest_posted(digest_id, resp["channel"], resp["ts"])

    def _digest_posted(self, digest_id: int, channel: str, ts: str) -> Record:
        clock = self.ctx.clock

        def write(session) -> None:
            record_digest_posted_in(session, clock(), digest_id=digest_id, channel=channel, ts=ts)

        return Record(write, key=f"digest:{digest_id}")

    def _update_digest(self, job: Job, digest_id: int) -> None:
        """A request shown in a digest changed: the whole digest is rendered again from
        what is committed now. Several of its requests' updates in one claim make one
        ``chat.update`` (the first renders what all of them committed before the claim)."""
        claim = job.claim
        if claim is None:
            return self._rerender_digest(digest_id)
        with claim.lock:
            lock = claim.cache.setdefault(("digest-lock", digest_id), threading.Lock())
        with lock:
            if claim.cache.get(("digest-updated", digest_id)):
                return None
            self._rerender_digest(digest_id)
            claim.cache[("digest-updated", digest_id)] = True
        return None

    def _rerender_digest(self, digest_id: int) -> None:
        data = digest_context(self.ctx, digest_id)
        if data is None or not data["items"]:
            raise GiveUp("digest or its requests no longer exist")
        d = data["digest"]
        if not d["ts"]:
            raise Defer("digest not posted yet", after=0.5)
        text, blks = render_digest(data)
        self._slack("chat.update", channel=d["channel"], ts=d["ts"], text=text, blocks=blks)

    def comment(self, job: Job) -> Record | None:
        """An agent's comment, posted in the thread of a request's root message once that
        message is posted; recorded (``slack.posted``, role ``comment``) with where it went."""
        p = job.payload
        read = self._claim_read(job)
        msg = read.message(p["message_id"]) if read is not None else message_ref(self.ctx, p["message_id"])
        if msg is None:
            raise GiveUp("message or request no longer exists")
        if not msg["ts"]:
            raise Defer("parent message not posted yet")
        meta = {
            "event_type": COMMENT_METADATA_TYPE,
            "event_payload": {
                "request_id": msg["request_id"],
                "comment_id": p["comment_id"],
                "message_id": str(msg["id"]),
            },
        }
        found = self._find_reply(msg, meta["event_payload"]) if job.was_in_flight else None
        if found is None:
            text, blks = blocks.agent_comment(p.get("agent"), p.get("text"))
            resp = self._slack(
                "chat.postMessage",
                priority=PRIORITY["thread"],
                channel=msg["channel"],
                thread_ts=msg["ts"],
                text=text,
                blocks=blks,
                metadata=meta,
                unfurl_links=False,
                unfurl_media=False,
            )
            found = resp["ts"]
        clock, rid = self.ctx.clock, msg["request_id"]

        def write(session) -> None:
            record_comment_posted_in(
                session,
                clock(),
                request_id=rid,
                comment_id=p["comment_id"],
                channel=msg["channel"],
                thread_ts=msg["ts"],
                ts=found,
            )

        return Record(write, key=rid)

    def _find_reply(self, msg: dict, payload: dict) -> str | None:
        """The ts of a comment an earlier attempt already posted (it died before recording)."""
        try:
            resp = self.client.conversations_replies(
                channel=msg["channel"], ts=msg["ts"], limit=200, include_all_metadata=True
            )
        except (SlackApiError, SlackClientError, OSError):
            return None
        for m in resp.get("messages") or []:
            meta = m.get("metadata") or {}
            if (
                meta.get("event_type") == COMMENT_METADATA_TYPE
                and (meta.get("event_payload") or {}).get("comment_id") == payload["comment_id"]
            ):
                return m.get("ts")
        return None

    def ephemeral(self, job: Job) -> None:
        p = job.payload
        self._slack("chat.postEphemeral", channel=p["channel"], user=p["user"], text=p["text"])

    def expand(self, job: Job) -> None:
        p = job.payload
        resp = self._slack("usergroups.users.list", usergroup=p["group"])
        expand_group(
            self.ctx,
            request_id=p["request_id"],
            group=p["group"],
            members=list(resp.get("users") or []),
            step=p.get("step"),
        )

    def reconcile(self, job: Job) -> None:
        msg = message_ref(self.ctx, job.payload["message_id"])
        if msg is None:
            raise GiveUp("message or request no longer exists")
        if not msg["ts"]:
            raise Defer("message not posted yet", after=1.0)
        replies, cursor = [], None
        while True:
            resp = self._slack("conversations.replies", channel=msg["channel"], ts=msg["ts"], cursor=cursor, limit=200)
            replies.extend(resp.get("messages") or [])
            cursor = (resp.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                break
        reconcile_thread(self.ctx, channel=msg["channel"], thread_ts=msg["ts"], replies=replies)
