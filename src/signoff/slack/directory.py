"""Who is in a user group or channel, from Slack, cached briefly."""

from __future__ import annotations

import logging
import threading
import time

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from signoff.domain.identifiers import GROUP_RE

log = logging.getLogger(__name__)


class SlackDirectory:
    """Members of a user group (``S…``) or channel, cached for ``ttl`` seconds.

    One look-up per reference at a time: callers that need the same group while it is
    being fetched (a burst of clicks on a fresh cache) wait for that answer instead of
    each calling Slack (and spending its rate limit)."""

    WAIT = 10.0  # seconds a caller waits for another's look-up before giving up (fail closed)

    def __init__(self, client: WebClient, ttl: float = 60.0):
        self.client = client
        self.ttl = ttl
        self._cache: dict[str, tuple[float, set[str]]] = {}
        self._inflight: dict[str, threading.Event] = {}
        self._emails: dict[str, tuple[float, str | None]] = {}
        self._lock = threading.Lock()

    def members(self, ref: str) -> set[str]:
        with self._lock:
            hit = self._cache.get(ref)
            if hit and time.monotonic() - hit[0] < self.ttl:
                return hit[1]
            running = self._inflight.get(ref)
            if running is None:
                running = self._inflight[ref] = threading.Event()
                mine = True
            else:
                mine = False
        if not mine:
            running.wait(self.WAIT)
            with self._lock:
                hit = self._cache.get(ref)
            return hit[1] if hit else set()
        try:
            return self._fetch(ref)
        finally:
            with self._lock:
                self._inflight.pop(ref, None)
            running.set()

    def _fetch(self, ref: str) -> set[str]:
        now = time.monotonic()
        try:
            if GROUP_RE.match(ref):
                users = set(self.client.usergroups_users_list(usergroup=ref).get("users") or [])
            else:
                users = set()
                cursor = None
                while True:
                    resp = self.client.conversations_members(channel=ref, cursor=cursor, limit=1000)
                    users |= set(resp.get("members") or [])
                    cursor = (resp.get("response_metadata") or {}).get("next_cursor")
                    if not cursor:
                        break
        except (SlackApiError, SlackClientError, OSError) as exc:
            # Fail closed: nobody from an unresolvable group may approve right now.
            log.warning("cannot resolve members of %s: %s", ref, exc)
            with self._lock:
                stale = self._cache.get(ref)
            return stale[1] if stale else set()
        with self._lock:
            self._cache[ref] = (now, users)
        return users

    EMAIL_TTL = 300.0  # a found user, cached this long
    EMAIL_MISS_TTL = 30.0  # nobody found: asked again this soon

    def user_by_email(self, email: str) -> str | None:
        """The active (not deleted, not a bot) Slack user with this email, cached. A Slack
        failure answers None (fail closed) and is not cached."""
        key = email.strip().lower()
        now = time.monotonic()
        with self._lock:
            hit = self._emails.get(key)
        if hit and now - hit[0] < (self.EMAIL_TTL if hit[1] else self.EMAIL_MISS_TTL):
            return hit[1]
        try:
            user = self.client.users_lookupByEmail(email=email.strip()).get("user") or {}
        except SlackApiError as exc:
            error = (exc.response.data or {}).get("error") if isinstance(exc.response.data, dict) else None
            if error != "users_not_found":
                log.warning("cannot look up a Slack user by email: %s", error or exc)
                return None
            user = {}
        except (SlackClientError, OSError) as exc:
            log.warning("cannot look up a Slack user by email: %s", exc)
            return None
        uid = (
            user.get("id")
            if isinstance(user.get("id"), str) and not user.get("deleted") and not user.get("is_bot")
            else None
        )
        with self._lock:
            self._emails[key] = (now, uid)
        return uid
