"""Helpers shared by tests: a fake clock, a runtime from YAML, signed agent requests."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from datetime import datetime, timedelta, timezone

from signoff.bootstrap import build
from signoff.config import parse_config
from signoff.settings import Settings

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)

BASIC_YAML = """
agents:
  - id: deploy-bot
    sponsor: U0SPONSOR
    secret_env: DEPLOY_BOT_SECRET
  - id: other-bot
    sponsor: U0OTHERSP
    secret_env: OTHER_BOT_SECRET
  - id: outsider
    sponsor: U0OUTSP
    secret_env: OUTSIDER_SECRET
workflows:
  - id: prod-restart
    description: Restart production services
    owner: U0OWNER
    platform_owner: U0PLAT
    security_owner: U0SEC
    security_channel: C0SEC
    channel: C0APPROVALS
    approvers: [U0OWNER, U0SPONSOR, U0SECOND]
    required_approvals: 1
    agents: [deploy-bot, other-bot]
    timeout: 30m
    escalation:
      - after: 10m
        to: [U0ESC]
      - after: 20m
        to: [U0PLAT]
    execution:
      grant_ttl: 10m
"""

SECRETS = {"DEPLOY_BOT_SECRET": "deploy-secret", "OTHER_BOT_SECRET": "other-secret",
           "OUTSIDER_SECRET": "outsider-secret"}


class FakeClock:
    """An aware-UTC clock tests move by hand."""

    def __init__(self, start: datetime = T0):
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.now

    def advance(self, **kw) -> datetime:
        with self._lock:
            self.now += timedelta(**kw)
            return self.now


def runtime(db_url: str, yaml_text: str = BASIC_YAML, clock=None, monkeypatch=None, **settings):
    """A Runtime on ``db_url`` with the workflow file ``yaml_text`` and agent secrets set."""
    if monkeypatch is not None:
        for k, v in SECRETS.items():
            monkeypatch.setenv(k, v)
    s = Settings(SIGNOFF_DATABASE_URL=db_url, **settings)
    return build(s, config=parse_config(yaml_text), clock=clock or FakeClock())


def signed_headers(agent: str, secret: str, body: bytes, ts: int | None = None) -> dict[str, str]:
    import time

    ts = int(time.time()) if ts is None else ts
    sig = "v1=" + hmac.new(secret.encode(), b"v1:" + str(ts).encode() + b":" + body, hashlib.sha256).hexdigest()
    return {"X-Signoff-Agent": agent, "X-Signoff-Timestamp": str(ts), "X-Signoff-Signature": sig,
            "Content-Type": "application/json"}


def submission(**over) -> dict:
    body = {
        "workflow": "prod-restart",
        "title": "Restart checkout-api in prod-eu",
        "action": {"type": "service.restart", "target": "checkout-api", "environment": "production",
                   "parameters": {"graceful": True}},
        "justification": "p99 latency doubled after the 14:02 deploy",
        "prompt": "latency is bad, fix it",
        "risk": "medium",
    }
    body.update(over)
    return body


def dumps(body) -> bytes:
    return json.dumps(body).encode()
