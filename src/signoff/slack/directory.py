"""Who is in a user group or channel, from Slack, cached briefly."""

from __future__ import annotations

import logging
import threading
import time

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

log = logging.getLogger(__name__)


class SlackDirectory:
    def __init__(self, client: WebClient, ttl: float = 60.0):
        self.client = client
        self.ttl = ttl
        self._cache: dict[str, tuple[float, set[str]]] = {}
        self._lock = threading.Lock()

    def members(self, ref: str) -> set[str]:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(ref)
            if hit and now - hit[0] < self.ttl:
                return hit[1]
        try:
            if ref.startswith("S"):
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
