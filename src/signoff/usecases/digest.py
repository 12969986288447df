"""Digests: several requests owed to one channel or person shown in one Slack message.

``form_digests`` takes claimed ``slack.post`` rows over, in one transaction: a digest row
per group, its messages marked as shown there (so their own post is never made and their
later updates go to the digest), their post rows done, and one ``slack.digest`` row that
posts it. ``record_digest_posted_in`` keeps where Slack put it — on the digest and on each
message it shows — and appends to each request's evidence a ``slack.posted`` event naming
the digest message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from signoff.usecases.ports import Context, Repository
from signoff.usecases.slack_ops import read_messages

# A digest not posted after this long (its post given up on) no longer counts as owed.
OWED_HORIZON = timedelta(hours=1)


class DigestRace(Exception):
    """A row meant for a digest was no longer this worker's, or its message was posted."""


@dataclass(frozen=True)
class Planned:
    """One digest to form (or to join): its kind (``decide`` or ``exception``), where it goes, and the
    claimed ``slack.post`` rows (row id, message id) it replaces, in order."""

    kind: str
    target: str
    rows: list[tuple[int, int]]
    digest_id: int | None = None  # join this digest (not posted yet) instead of a new one


def owed_posts(
    ctx: Context, *, targets: list[str], exclude: list[int], claimed: list[int]
) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """Posts already owed to each target besides the messages ``exclude`` (a claim's), and
    the digests among them that may still take requests (``Repository.open_digests``;
    ``claimed``: the digest rows of this claim, not delivered yet)."""
    since = ctx.clock() - OWED_HORIZON
    targets = sorted(set(targets))

    def read(repo: Repository) -> tuple[dict[str, int], list[dict[str, Any]]]:
        return (repo.owed_posts(targets, sorted(set(exclude)), since), repo.open_digests(targets, since, claimed))

    return ctx.uow.read(read)


def form_digests(
    ctx: Context, *, worker: str, planned: list[Planned], capacity: int, claimed: Sequence[int] = ()
) -> list[int]:
    """Replace the planned rows' posts by digests (new ones, or ones not posted yet that
    they join), all or nothing; returns the digest ids. A digest holds at most
    ``capacity`` requests (what one Slack message can show). ``DigestRace`` (nothing changed)
    when a row is no longer ``worker``'s to deliver, or a digest to join is being posted."""

    def tx(repo: Repository) -> list[int]:
        now = ctx.clock()
        ids = []
        for p in planned:
            row_ids = [r for r, _m in p.rows]
            message_ids = [m for _r, m in p.rows]
            if repo.take_claimed(row_ids, worker, now, "shown in a digest") != len(row_ids):
                raise DigestRace("a row is no longer held by this worker")
            if p.digest_id is not None:
                digest_id = p.digest_id
                if not repo.hold_digest_post(digest_id, worker, list(claimed)):
                    raise DigestRace(f"digest {digest_id} is being posted")
                if len(repo.digest_members(digest_id)) + len(message_ids) > capacity:
                    raise DigestRace(f"digest {digest_id} is full")
            else:
                digest_id = repo.add_digest(p.kind, p.target, now)
                repo.enqueue(
                    "slack.digest", {"digest_id": digest_id, "target": p.target}, now, dedupe_key=f"digest:{digest_id}"
                )  # store.repo.digest_key
            if repo.put_in_digest(digest_id, message_ids) != len(message_ids):
                raise DigestRace("a message was posted meanwhile")
            ids.append(digest_id)
        return ids

    return ctx.uow.transaction(tx, attempts=3)


def digest_context(ctx: Context, digest_id: int) -> dict[str, Any] | None:
    """The digest and, in its order, (role, render data) of each request it shows."""
    head = ctx.uow.read(lambda repo: (repo.digest(digest_id), repo.digest_members(digest_id)))
    digest, members = head
    if digest is None:
        return None
    read = read_messages(ctx, [m.id for m in members]) if members else None
    items = []
    for m in members:
        data = read.context(m.id) if read is not None else None
        if data is not None:
            items.append((m.role, data["request"]))
    return {
        "digest": {k: digest[k] for k in ("id", "kind", "target", "channel", "ts")},
        "items": items,
        "request_ids": [m.request_id for m in members],
    }


def record_digest_posted_in(repo: Repository, now: datetime, *, digest_id: int, channel: str, ts: str) -> bool:
    """Slack took the digest: where it is, on the digest and its messages, and per request
    a ``slack.posted`` event naming it. False: recorded already."""
    if not repo.record_digest_post(digest_id, channel, ts, now):
        return False
    members = repo.digest_members(digest_id)
    for i, m in enumerate(members, 1):
        repo.append_event_by_id(
            m.request_id,
            "slack.posted",
            "signoff",
            {
                "role": m.role,
                "target": m.target,
                "channel": channel,
                "ts": ts,
                "digest": {"id": digest_id, "position": i, "of": len(members)},
            },
            now,
        )
    return True
