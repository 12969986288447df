"""Pacing of Slack Web API calls within Slack's published rate limits.

Slack limits each method per workspace by tier (Tier 2 about 20 calls a minute, Tier 3 about
50, Tier 4 about 100) and ``chat.postMessage`` per channel (about one message a second, short
bursts tolerated) under a workspace ceiling of several hundred messages a minute. A ``429``
names what it limits and says for how long (``Retry-After``).

``Pacer.take(method, channel, priority)`` answers 0 and spends a token when the call may go
now, or the seconds until it may (spending nothing): the outbox then defers the row instead
of holding a delivery thread, so one busy channel never stalls the others. Calls told to
wait take turns: the second is told to come back a token's time after the first, and so
on, rather than all at the next token. ``pause`` records
a 429 for just the method (and, for ``chat.postMessage``, just the channel) it named.

Priority: the workspace-wide ``chat.postMessage`` bucket keeps headroom for the people who can
decide. A post at priority 0 (a request or escalation to its approvers) may take the last
tokens; thread notes (1) and security threads (2) leave some for them.

Each process paces alone, with the limits divided by the number of processes sharing the
workspace (``share``): coordinating every call through the database would add a round trip
to each, and Slack's limits are soft — a burst gets a 429 with ``Retry-After``, which is
honoured for exactly what it names.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

TIER_PER_MINUTE = {1: 1, 2: 20, 3: 50, 4: 100}

# Slack's documented tier of each method signoff calls; others count as Tier 3.
METHOD_TIER = {
    "chat.update": 3,
    "chat.postEphemeral": 4,
    "conversations.open": 3,
    "conversations.history": 3,
    "conversations.replies": 3,
    "conversations.members": 4,
    "usergroups.users.list": 2,
    "users.info": 4,
    "users.lookupByEmail": 3,
    "views.open": 4,
    "views.update": 4,
    "auth.test": 4,
}
POST = "chat.postMessage"
POST_PER_CHANNEL_PER_SECOND = 1.0
POST_CHANNEL_BURST = 2
POST_WORKSPACE_PER_MINUTE = 300
POST_WORKSPACE_BURST = 20
# tokens of the workspace bucket that priority p leaves to the ones above it
HEADROOM = {0: 0.0, 1: 3.0, 2: 6.0}


@dataclass
class _Bucket:
    rate: float  # tokens per second
    burst: float
    tokens: float
    at: float
    paused_until: float = 0.0
    # When the last call told to wait here was told to come back: a call that must wait
    # takes the turn after it (one token's time later) instead of the same next token,
    # so a queue of n calls comes back one at a time, not n times a second (each time a
    # claim and a deferral of every one of them).
    turn_at: float = 0.0
    takes_turns: bool = True

    def refill(self, now: float) -> None:
        if now > self.at:
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
            self.at = now

    def wait(self, now: float, need: float = 1.0) -> float:
        """Seconds until ``need`` tokens are there (0: now)."""
        if now < self.paused_until:
            return self.paused_until - now
        self.refill(now)
        if self.tokens >= need:
            return 0.0
        return (need - self.tokens) / self.rate


class Pacer:
    def __init__(self, *, share: int = 1, clock: Callable[[], float] = time.monotonic):
        self.share = max(1, share)
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    def _bucket(self, method: str, channel: str, now: float) -> _Bucket:
        key = (method, channel)
        b = self._buckets.get(key)
        if b is None:
            if method == POST and channel != "*":
                rate, burst = POST_PER_CHANNEL_PER_SECOND, POST_CHANNEL_BURST
            elif method == POST:
                rate, burst = POST_WORKSPACE_PER_MINUTE / 60.0, POST_WORKSPACE_BURST
            else:
                per_minute = TIER_PER_MINUTE[METHOD_TIER.get(method, 3)]
                rate, burst = per_minute / 60.0, max(1.0, per_minute / 10.0)
            rate /= self.share
            burst = max(1.0, burst / self.share)
            # The workspace-wide post bucket keeps headroom by priority: no queue there,
            # or an approver's post would wait its turn behind security threads.
            b = self._buckets[key] = _Bucket(rate, burst, burst, now, takes_turns=key != (POST, "*"))
        return b

    def take(self, method: str, channel: str | None = None, priority: int = 0) -> float:
        """0.0 (and a token spent) when the call may go now; else the seconds to wait."""
        now = self.clock()
        with self._lock:
            buckets = self._keys(method, channel)
            limits = []
            for (m, c), need in buckets:
                b = self._bucket(m, c, now)
                limits.append(
                    (b, need, b.wait(now, need + (HEADROOM.get(priority, 6.0) if c == "*" and m == POST else 0.0)))
                )
            wait = max(w for _b, _n, w in limits)
            if wait <= 0:
                for b, need, _w in limits:
                    b.tokens -= need
                return 0.0
            queues = [(b, need) for b, need, w in limits if w > 0 and b.takes_turns]
            for b, need in queues:
                wait = max(wait, b.turn_at + need / b.rate - now)
            for b, _need in queues:
                b.turn_at = now + wait
            return wait

    def allowance(self, method: str, channel: str | None, horizon: float) -> float:
        """How many calls of ``method`` (in ``channel``) pacing lets through from now until
        ``horizon`` seconds from now: the tokens there now plus what refills by then (a pause
        first runs out). Spends nothing."""
        now = self.clock()
        with self._lock:
            out = float("inf")
            for (m, c), _need in self._keys(method, channel):
                b = self._bucket(m, c, now)
                b.refill(now)
                paused = max(0.0, b.paused_until - now)
                if paused >= horizon:
                    return 0.0
                out = min(out, max(0.0, b.tokens) + b.rate * (horizon - paused))
            return out

    def pause(self, method: str, channel: str | None, seconds: float) -> None:
        """Slack answered 429 for ``method`` (in ``channel``): hold just that for ``seconds``."""
        now = self.clock()
        with self._lock:
            key = (method, channel) if method == POST and channel else (method, "*")
            b = self._bucket(key[0], key[1], now)
            b.paused_until = max(b.paused_until, now + max(0.0, seconds))
            b.tokens = min(b.tokens, 0.0)

    @staticmethod
    def _keys(method: str, channel: str | None) -> list[tuple[tuple[str, str], float]]:
        if method == POST:
            keys = [((POST, "*"), 1.0)]
            if channel:
                keys.append(((POST, channel), 1.0))
            return keys
        return [((method, "*"), 1.0)]
