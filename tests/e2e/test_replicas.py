"""Three ``signoff serve`` processes on one PostgreSQL database, real clock, fake Slack.

Every escalation step is posted exactly once per request, every request expires exactly
once, and a click sent to one replica for a request submitted through another works.
Skipped unless SIGNOFF_TEST_POSTGRES_URL is set.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import create_engine, func, select

from conftest import PG_ENV
from fakes.slack_api import FakeSlack, dm_channel
from signoff.store.tables import EventRow, OutboxRow, RequestRow
from support import SECRETS, dumps, signed_headers, submission

pytestmark = pytest.mark.skipif(not os.environ.get(PG_ENV), reason=f"{PG_ENV} is not set: replica test skipped")

SIGNING_SECRET = "e2e-slack-signing-secret"
N_REQUESTS = 30

YAML = """
agents:
  - id: deploy-bot
    sponsor: U0SPONSOR
    secret_env: DEPLOY_BOT_SECRET
workflows:
  - id: ladder
    owner: U0OWNER
    platform_owner: U0PLAT
    security_owner: U0SEC
    security_channel: C0SEC
    channel: C0APPROVALS
    agents: [deploy-bot]
    timeout: 3s
    escalation:
      - after: 1s
        to: [U0ESCONE]
      - after: 2s
        to: [U0ESCTWO]
  - id: slow
    owner: U0OWNER
    platform_owner: U0PLAT
    security_owner: U0SEC
    security_channel: C0SEC
    channel: C0APPROVALS
    agents: [deploy-bot]
    timeout: 10m
"""


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def signoff_command() -> list[str]:
    script = Path(sys.executable).with_name("signoff")
    return [str(script)] if script.exists() else [sys.executable, "-c", "from signoff.cli import main; main()"]


def pem_key() -> str:
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()


class Server:
    """One ``signoff serve`` process; stopped (SIGTERM, then SIGKILL) at teardown."""

    def __init__(self, workdir: Path, env: dict[str, str], name: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"{name}.log"
        self.env = env
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    def start(self) -> Server:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(signoff_command() + ["serve", "--port", str(self.port)],
                                         cwd=self.workdir, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"signoff serve exited {self.proc.returncode}:\n{self.log.read_text()[-4000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"signoff serve not ready after {timeout}s:\n{self.log.read_text()[-4000:]}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def server_env(*, db_url: str, slack_url: str, config: Path, signing_key: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIGNOFF_", "SLACK_"))}
    env.update(SECRETS)
    env.update({
        "SLACK_BOT_TOKEN": "xoxb-test",
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SIGNOFF_SLACK_API_URL": slack_url,
        "SIGNOFF_DATABASE_URL": db_url,
        "SIGNOFF_CONFIG": str(config),
        "SIGNOFF_SWEEP_INTERVAL": "0.2",
        "SIGNOFF_SIGNING_KEY": signing_key,
        "PYTHONUNBUFFERED": "1",
    })
    return env


# ---------------------------------------------------------------- clients


def submit(server: Server, workflow: str, n: int) -> str:
    """Submit like a well-behaved agent: an Idempotency-Key, and a retry on 503."""
    body = dumps(submission(workflow=workflow, title=f"e2e request {n}"))
    key = f"e2e-{workflow}-{n}-{time.time_ns()}"
    for _ in range(10):
        headers = signed_headers("deploy-bot", SECRETS["DEPLOY_BOT_SECRET"], body)
        headers["Idempotency-Key"] = key
        r = httpx.post(f"{server.url}/v1/actions", content=body, headers=headers, timeout=10)
        if r.status_code != 503:
            break
        time.sleep(0.05)
    assert r.status_code in (200, 201), r.text
    return r.json()["id"]


def get_request(server: Server, rid: str) -> dict:
    r = httpx.get(f"{server.url}/v1/actions/{rid}",
                  headers=signed_headers("deploy-bot", SECRETS["DEPLOY_BOT_SECRET"], b""), timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def click(server: Server, rid: str, user: str, channel: str, action: str = "signoff.approve") -> httpx.Response:
    """A block_actions interaction, signed with Slack's v0 scheme."""
    payload = {
        "type": "block_actions", "team": {"id": "T0FAKE"}, "user": {"id": user, "team_id": "T0FAKE"},
        "api_app_id": "A0SIGNOFF", "token": "legacy", "trigger_id": "1.2.3",
        "channel": {"id": channel}, "container": {"type": "message", "channel_id": channel},
        "actions": [{"type": "button", "action_id": action, "block_id": "actions", "value": rid,
                     "action_ts": f"{time.time():.6f}"}],
    }
    body = urlencode({"payload": json.dumps(payload)})
    ts = str(int(time.time()))
    sig = "v0=" + hmac.new(SIGNING_SECRET.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return httpx.post(f"{server.url}/slack/events", content=body, timeout=10, headers={
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sig})


def top_level_posts(slack: FakeSlack) -> list:
    """chat.postMessage calls that posted a copy of a request (not thread replies)."""
    return [c for c in slack.calls_to("chat.postMessage") if c.ok and not c.params.get("thread_ts")]


def request_of(call) -> str | None:
    meta = call.params.get("metadata") or {}
    return (meta.get("event_payload") or {}).get("request_id")


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# ---------------------------------------------------------------- the test


def test_three_replicas_post_each_step_once_and_expire_each_request_once(tmp_path, pg_url):
    config = tmp_path / "signoff.yaml"
    config.write_text(YAML)
    with FakeSlack() as slack:
        env = server_env(db_url=pg_url, slack_url=slack.url, config=config, signing_key=pem_key())
        servers = [Server(tmp_path, env, f"replica{i}") for i in range(3)]
        engine = create_engine(pg_url)
        try:
            for s in servers:
                s.start()
            for s in servers:
                s.wait_ready()

            # A request submitted through replica 0 is approved by a click sent to replica 1,
            # and replica 2 hands out its grant.
            slow = submit(servers[0], "slow", 0)
            root = wait_until(lambda: [c for c in top_level_posts(slack) if request_of(c) == slow], 15,
                              "the slow request's root post")[0]
            assert root.params["channel"] == "C0APPROVALS"
            resp = click(servers[1], slow, "U0OWNER", root.response["channel"])
            assert resp.status_code == 200, resp.text
            view = wait_until(lambda: (v := get_request(servers[2], slow))["status"] != "pending" and v, 15,
                              "the click to take effect")
            assert view["status"] in ("approved", "executing")
            assert [d["by"] for d in view["decisions"]] == ["U0OWNER"]
            assert view["grant"]

            # Many requests with second-scale ladders, spread over the three replicas.
            with ThreadPoolExecutor(8) as pool:
                ids = list(pool.map(lambda n: submit(servers[n % 3], "ladder", n), range(N_REQUESTS)))

            def settled():
                with engine.connect() as conn:
                    open_ = conn.scalar(select(func.count()).select_from(RequestRow)
                                        .where(RequestRow.id.in_(ids), RequestRow.status != "expired"))
                    owed = conn.scalar(select(func.count()).select_from(OutboxRow)
                                       .where(OutboxRow.state == "pending"))
                return open_ == 0 and owed == 0

            wait_until(settled, 60, "every request to expire and every message to be delivered", 0.2)
            time.sleep(0.5)  # a straggling duplicate, if any, would show up now

            # Slack: each request's root, each step's DM and the exception thread, exactly once.
            posts = Counter((request_of(c), c.response["channel"]) for c in top_level_posts(slack))
            for rid in ids:
                assert posts[(rid, "C0APPROVALS")] == 1, rid
                assert posts[(rid, dm_channel("U0ESCONE"))] == 1, rid
                assert posts[(rid, dm_channel("U0ESCTWO"))] == 1, rid
                assert posts[(rid, "C0SEC")] == 1, rid
            assert not [k for k, n in posts.items() if n != 1], posts

            # Every copy was updated to the expired state (no live buttons).
            updated = Counter((c.params["channel"], c.params["ts"]) for c in slack.calls_to("chat.update") if c.ok)
            for c in top_level_posts(slack):
                if request_of(c) in ids:
                    key = (c.response["channel"], c.response["ts"])
                    assert updated[key] >= 1, key
                    final = slack.message(*key)
                    assert "signoff.approve" not in json.dumps(final.get("blocks") or []), key

            # The evidence: two steps and one expiry per request.
            with engine.connect() as conn:
                rows = conn.execute(select(EventRow.request_id, EventRow.type, EventRow.data)
                                    .where(EventRow.request_id.in_(ids))).all()
            kinds = Counter((r.request_id, r.type) for r in rows)
            for rid in ids:
                assert kinds[(rid, "escalation.fired")] == 2, rid
                assert kinds[(rid, "request.expired")] == 1, rid
                assert kinds[(rid, "grant.issued")] == 0, rid
                steps = sorted(r.data["step"] for r in rows if r.request_id == rid and r.type == "escalation.fired")
                assert steps == [0, 1]
            for rid in ids[:3]:
                assert get_request(servers[(ids.index(rid) + 1) % 3], rid)["status"] == "expired"
        finally:
            for s in servers:
                s.stop()
            engine.dispose()
