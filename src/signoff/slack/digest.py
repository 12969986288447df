"""Deciding, for a claim of outbox rows, which posts go out together as digests.

Slack lets about one message a second into a channel (or a DM). When more requests are owed
to one channel or person than pacing lets through within the workflow's ``digest_after``,
posting them one by one keeps the last of them from their approvers for minutes. So, where
the backlog is visible — the rows the dispatcher has just claimed, plus what is still owed
to the same place from earlier — the oldest go one by one while that still fits, and the
rest are merged into digest messages of at most ``blocks.DIGEST_MAX`` requests, so that
every one of them is in front of its approvers within ``digest_after``.

Only rows of this claim are ever put in a digest (another worker's, or rows waiting out a
pause, cannot be posted behind our back meanwhile), and never a row that may have reached
Slack already (``was_in_flight``). Requests (and escalation copies) digest apart from
security exceptions: each kind has its own message.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from signoff.durations import parse_duration_or_zero
from signoff.outbox.dispatcher import Claim, Job
from signoff.slack.blocks import DIGEST_MAX
from signoff.slack.pacing import POST, Pacer
from signoff.usecases.digest import DigestRace, Planned, form_digests, owed_posts
from signoff.usecases.ports import Context
from signoff.usecases.slack_ops import ClaimRead

log = logging.getLogger(__name__)

DEFAULT_DIGEST_AFTER = 5.0  # seconds; the workflow default (a snapshot from before the key)


def split(n: int, allowance: float, free: int = 0, per_message: int = DIGEST_MAX) -> tuple[int, int, list[int]]:
    """How ``n`` posts owed to one place go out when ``allowance`` posts fit in time and
    digests not posted yet have ``free`` places left: (how many of them — the oldest — go one
    by one, how many join those digests, the sizes of the new digests for the rest).

    As many as possible go one by one such that they and the new digests together still
    fit (joining a digest that is owed already costs no post); new digests are as even as
    can be, and never of a single request (that one is simply posted)."""
    fits = math.floor(allowance + 1e-9)
    if n <= fits:
        return n, 0, []

    def posts(alone: int) -> int:
        return alone + math.ceil(max(0, n - alone - free) / per_message)

    alone = next((k for k in range(min(n, max(fits, 0)), -1, -1) if posts(k) <= fits), 0)
    joined = min(n - alone, free)
    rest = n - alone - joined
    if rest == 1:
        return alone + 1, joined, []
    if rest == 0:
        return alone, joined, []
    count = math.ceil(rest / per_message)
    return alone, joined, [rest // count + (1 if i < rest % count else 0) for i in range(count)]


def digest_after(policy: dict | None) -> float:
    """A request's ``digest_after`` in seconds, from its policy snapshot (0: off)."""
    raw = (policy or {}).get("digest_after")
    if raw is None:
        return DEFAULT_DIGEST_AFTER
    try:
        return parse_duration_or_zero(raw).total_seconds()
    except ValueError:
        return DEFAULT_DIGEST_AFTER


def kind_of(role: str) -> str:
    return "exception" if role == "exception" else "decide"


@dataclass
class _Group:
    kind: str
    target: str
    horizon: float
    rows: list[tuple[Job, dict]] = field(default_factory=list)


class DigestPlanner:
    """The dispatcher's planning hook for Slack posts (``Dispatcher.plan``): returns the ids
    of the claimed rows it took over (they are done: their requests are in digests)."""

    def __init__(self, ctx: Context, pacer: Pacer, claim_read: Callable[[Job], ClaimRead | None]):
        self.ctx = ctx
        self.pacer = pacer
        self.claim_read = claim_read

    def __call__(self, claim: Claim) -> set[int]:
        posts = [j for j in claim.jobs if j.kind == "slack.post" and "message_id" in j.payload and not j.was_in_flight]
        if not posts:
            return set()
        groups: dict[tuple[str, str, float], _Group] = {}
        read: ClaimRead | None = None
        for job in posts:
            read = self.claim_read(job)
            if read is None:
                continue
            msg = read.message(job.payload["message_id"])
            if msg is None or msg["ts"] or msg.get("digest_id"):
                continue
            horizon = digest_after(read.policy(msg["request_id"]))
            if horizon <= 0:
                continue
            key = (kind_of(msg["role"]), msg["target"], horizon)
            groups.setdefault(key, _Group(*key)).rows.append((job, msg))
        # a lone post is worth a look only when its channel is busy (it may join a digest)
        busy = [g for g in groups.values() if len(g.rows) >= 2 or self.pacer.allowance(POST, g.target, 0.0) < 1.0]
        if not busy or read is None:
            return set()
        claimed_digests = [j.id for j in claim.jobs if j.kind == "slack.digest" and not j.was_in_flight]
        owed, open_digests = owed_posts(
            self.ctx,
            targets=[g.target for g in busy],
            exclude=[m["id"] for g in groups.values() for _j, m in g.rows],
            claimed=claimed_digests,
        )
        used: dict[str, int] = defaultdict(int)
        planned: list[tuple[Planned, list[tuple[Job, dict]]]] = []
        # people who decide first: their posts take the allowance before security threads
        for g in sorted(busy, key=lambda g: (g.kind != "decide", g.horizon)):
            room = self.pacer.allowance(POST, g.target, g.horizon) - owed.get(g.target, 0) - used[g.target]
            joinable = [
                d for d in open_digests if d["kind"] == g.kind and d["target"] == g.target and d["members"] < DIGEST_MAX
            ]
            alone, joined, sizes = split(len(g.rows), room, sum(DIGEST_MAX - d["members"] for d in joinable))
            used[g.target] += alone + len(sizes)
            rest = g.rows[alone:]
            for d in joinable:
                take = min(joined, DIGEST_MAX - d["members"])
                if take <= 0:
                    break
                chunk, rest, joined = rest[:take], rest[take:], joined - take
                d["members"] += take
                planned.append((Planned(g.kind, g.target, [(j.id, m["id"]) for j, m in chunk], d["id"]), chunk))
            for size in sizes:
                chunk, rest = rest[:size], rest[size:]
                planned.append((Planned(g.kind, g.target, [(j.id, m["id"]) for j, m in chunk]), chunk))
        if not planned:
            return set()
        try:
            digest_ids = form_digests(
                self.ctx,
                worker=claim.worker_id,
                planned=[p for p, _c in planned],
                capacity=DIGEST_MAX,
                claimed=claimed_digests,
            )
        except DigestRace as exc:
            log.info("digest not formed (%s): the requests are posted one by one", exc)
            return set()
        taken: set[int] = set()
        for digest_id, (p, chunk) in zip(digest_ids, planned, strict=True):
            for job, msg in chunk:
                read.digested(msg["id"], digest_id)
                taken.add(job.id)
            log.info(
                "%d requests to %s %s digest %s",
                len(chunk),
                p.target,
                "join" if p.digest_id else "go out in",
                digest_id,
            )
        return taken
