"""Helpers shared by tests: a fake clock, a runtime from YAML, signed agent requests,
signed Slack requests, polling, and the workflow-file pieces most tests share."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode

from signoff.bootstrap import build
from signoff.config import parse_config
from signoff.demo import samples
from signoff.demo.loopback import free_port  # noqa: F401  (for the tests)
from signoff.domain import agent_signature as sig
from signoff.settings import Settings

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)

# -- workflow files ---------------------------------------------------------------------------
# Pieces of YAML that most test workflow files repeat word for word; a test's own file is
# written around them, e.g. f"agents:\n{DEPLOY_BOT}workflows:\n  - id: x\n{ROUTING}    ...".

# the demo's agent (signoff.demo.samples), its secret in DEPLOY_BOT_SECRET
DEPLOY_BOT = samples.agent_entry("DEPLOY_BOT_SECRET")

# the owners and where a workflow's requests are posted
ROUTING = samples.ROUTING

# deploy-bot alone, asking in one workflow that posts to C0APPROVALS
ONE_WORKFLOW_YAML = f"""
agents:
{DEPLOY_BOT}\
workflows:
  - id: prod-restart
{ROUTING}\
    agents: [deploy-bot]
    timeout: 30m
"""

BASIC_YAML = f"""
agents:
{DEPLOY_BOT}\
  - id: other-bot
    sponsor: U0OTHERSP
    secret_env: OTHER_BOT_SECRET
  - id: outsider
    sponsor: U0OUTSP
    secret_env: OUTSIDER_SECRET
workflows:
  - id: prod-restart
    description: Restart production services
{ROUTING}\
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

# the agents' shared secrets, by the environment variable their ``secret_env`` names
SECRETS = {
    "DEPLOY_BOT_SECRET": "deploy-secret",
    "OTHER_BOT_SECRET": "other-secret",
    "OUTSIDER_SECRET": "outsider-secret",
    "EXEC_BOT_SECRET": "exec-secret",
    "STRICT_BOT_SECRET": "strict-secret",
}


def agent_secret(agent: str) -> str:
    """The secret of ``agent`` in SECRETS ("deploy-bot" reads DEPLOY_BOT_SECRET)."""
    return SECRETS[agent.upper().replace("-", "_") + "_SECRET"]


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


# -- signed requests --------------------------------------------------------------------------


def v1_signature(secret: str, ts: int | str, body: bytes) -> str:
    """The v1 X-Signoff-Signature of ``body`` sent at ``ts``."""
    return sig.sign_v1(secret.encode(), str(ts), body)


def v2_signature(secret: str, ts: int | str, method: str, target: str, body: bytes) -> str:
    """The v2 X-Signoff-Signature of ``method`` on ``target`` (path and ?query as sent)."""
    return sig.sign_v2(secret.encode(), str(ts), method, target, body)


def signature(
    secret: str, ts: int | str, body: bytes, *, version: str = "v1", method: str = "POST", target: str = "/v1/actions"
) -> str:
    """The X-Signoff-Signature for ``version`` "v1", "v2" or "both" (``v1=…,v2=…``)."""
    if version == "v1":
        return v1_signature(secret, ts, body)
    if version == "v2":
        return v2_signature(secret, ts, method, target, body)
    assert version == "both", version
    return sig.sign_both(secret.encode(), str(ts), method, target, body)


def signed_headers(
    agent: str,
    secret: str,
    body: bytes,
    ts: int | None = None,
    *,
    version: str = "v1",
    method: str = "POST",
    target: str = "/v1/actions",
) -> dict[str, str]:
    """An agent's request headers: JSON body signed with ``secret`` now (or at ``ts``); v2
    (and "both") sign ``method`` and ``target`` too."""
    ts = int(time.time()) if ts is None else ts
    return {
        "X-Signoff-Agent": agent,
        "X-Signoff-Timestamp": str(ts),
        "X-Signoff-Signature": signature(secret, ts, body, version=version, method=method, target=target),
        "Content-Type": "application/json",
    }


def slack_signed(body: bytes, secret: str, ts: int | None = None) -> dict[str, str]:
    """Slack's v0 signature headers for ``body`` sent now (or at ``ts``)."""
    ts_s = str(int(time.time()) if ts is None else ts)
    sig = "v0=" + hmac.new(secret.encode(), b"v0:" + ts_s.encode() + b":" + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts_s, "X-Slack-Signature": sig}


def slack_form(fields: dict, secret: str) -> tuple[bytes, dict[str, str]]:
    """A form post as Slack sends interactions and commands: the urlencoded body and its
    headers (content type and v0 signature)."""
    body = urlencode(fields).encode()
    return body, {"Content-Type": "application/x-www-form-urlencoded", **slack_signed(body, secret)}


def slash_command(user: str, text: str, response_url: str) -> dict[str, str]:
    """The form fields Slack posts for ``/signoff <text>`` typed by ``user`` in the approvals channel."""
    return {
        "token": "legacy",
        "team_id": "T0FAKE",
        "team_domain": "fake",
        "channel_id": "C0APPROVALS",
        "channel_name": "approvals",
        "user_id": user,
        "user_name": user.lower(),
        "command": "/signoff",
        "text": text,
        "api_app_id": "A0SIGNOFF",
        "response_url": response_url,
        "trigger_id": "1.2.3",
    }


def block_actions(
    rid: str,
    user: str,
    action: str = "signoff.approve",
    *,
    channel: str = "C0APPROVALS",
    ts: str | None = "1700000000.000100",
    block_id: str = "signoff.decision",
    response_url: str | None = None,
) -> dict:
    """The ``block_actions`` payload of a click on button ``action`` (value ``rid``) by
    ``user`` on the message ``ts`` in ``channel`` (``ts=None``: no message in the payload)."""
    payload = {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "team_id": "T0FAKE"},
        "api_app_id": "A0SIGNOFF",
        "token": "legacy-verification-token",
        "container": {"type": "message", "channel_id": channel, "is_ephemeral": False},
        "trigger_id": "123.456.abc",
        "team": {"id": "T0FAKE", "domain": "fake"},
        "channel": {"id": channel, "name": "approvals"},
        "actions": [
            {
                "action_id": action,
                "block_id": block_id,
                "value": rid,
                "type": "button",
                "action_ts": "1700000001.000200",
            }
        ],
    }
    if ts is not None:
        payload["container"]["message_ts"] = ts
        payload["message"] = {"type": "message", "ts": ts, "text": "request"}
    if response_url is not None:
        payload["response_url"] = response_url
    return payload


# -- waiting ----------------------------------------------------------------------------------


def wait_until(predicate, timeout: float = 5.0, what: str = "condition", interval: float = 0.01):
    """Call ``predicate`` until it returns something truthy, and return that; an
    AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def listeners_done(app, timeout: float = 10.0) -> None:
    """Return once every Bolt listener (lazy ones too) that ``app`` started so far has
    finished: proof that a request acknowledged earlier did all it was going to do.

    One task per worker of the app's listener pool, all held at a barrier: they run
    together only when no worker is busy with anything else, and the pool hands out its
    tasks in order, so everything queued before them has run to its end."""
    pool = app.listener_runner.listener_executor
    workers = pool._max_workers  # a ThreadPoolExecutor (Bolt's default): it starts that many threads
    barrier = threading.Barrier(workers, timeout=timeout)
    try:
        for future in [pool.submit(barrier.wait) for _ in range(workers)]:
            future.result(timeout)
    except (threading.BrokenBarrierError, TimeoutError) as exc:
        raise AssertionError(f"Slack listeners still busy after {timeout}s") from exc


def submission(**over) -> dict:
    """The sample submission (signoff.demo.samples) at medium risk with a short prompt,
    then the fields in ``over``."""
    body = samples.submission(prompt="latency is bad, fix it", risk="medium")
    body.update(over)
    return body


def dumps(body) -> bytes:
    return json.dumps(body).encode()
