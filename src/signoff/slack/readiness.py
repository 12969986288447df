"""Is Slack taking our token? ``auth.test``, cached, for ``/readyz``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

# Slack's answers that mean the token itself is no good: no retry will deliver anything.
REFUSED = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "not_allowed_token_type",
        "team_disabled",
        "org_login_required",
        "ekm_access_denied",
    }
)


class SlackReadiness:
    """``check()``: ``{"status": "ok" | "refused" | "unreachable", …}``.

    Only a refused token makes the process not ready: while Slack is merely unreachable the
    outbox keeps every message for later, and agents can still submit, so taking the replica
    out of the load balancer would only add an outage. An answer is reused for ``ttl`` seconds
    (a refusal for ``refused_ttl``, so a fixed token is seen soon); concurrent probes share
    one call.
    """

    def __init__(
        self,
        client: WebClient,
        *,
        ttl: float = 60.0,
        refused_ttl: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._client = client
        self._ttl, self._refused_ttl, self._clock = ttl, refused_ttl, clock
        self._lock = threading.Lock()
        self._answer: dict | None = None
        self._until = 0.0

    def check(self) -> dict:
        with self._lock:
            now = self._clock()
            if self._answer is None or now >= self._until:
                self._answer = self._ask()
                self._until = now + (self._refused_ttl if self._answer["status"] == "refused" else self._ttl)
            return dict(self._answer)

    @property
    def ready(self) -> bool:
        return self.check()["status"] != "refused"

    def _ask(self) -> dict:
        try:
            resp = self._client.auth_test()
        except SlackApiError as exc:
            error = (exc.response.data or {}).get("error") if isinstance(exc.response.data, dict) else None
            status = exc.response.status_code
            if error in REFUSED:
                return {"status": "refused", "reason": error}
            return {"status": "unreachable", "reason": error or f"HTTP {status}"}
        except Exception as exc:  # connection refused, DNS, timeout: Slack is not there right now
            return {"status": "unreachable", "reason": type(exc).__name__}
        return {"status": "ok", "team": resp.get("team_id"), "bot_user": resp.get("user_id")}
