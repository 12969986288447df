"""``signoff serve`` as a child process, for the end-to-end tests: its environment, the
process itself (start, wait until ready, SIGTERM, SIGKILL) and the calls tests make to it
over real HTTP (signed agent requests, signed Slack clicks).

Import as ``from e2e.harness import ...`` (``tests`` is on the path).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from fakes.slack_api import FakeSlack
from signoff.store.tables import OutboxRow, RequestRow
from support import (
    DEPLOY_BOT,
    ROUTING,
    SECRETS,
    agent_secret,
    block_actions,
    free_port,
    signed_headers,
    slack_form,
    submission,
)

SIGNOFF = [sys.executable, "-m", "signoff.cli"]
SLACK_SECRET = "e2e-slack-signing-secret"
BOT_TOKEN = "xoxb-e2e"


def ladder_yaml(timeout: str) -> str:
    """A workflow file with deploy-bot and the workflow "ladder": escalation steps after 1 s
    (to U0ESCONE) and 2 s (to U0ESCTWO), expiry after ``timeout``."""
    return f"""
agents:
{DEPLOY_BOT}\
workflows:
  - id: ladder
{ROUTING}\
    agents: [deploy-bot]
    timeout: {timeout}
    escalation:
      - after: 1s
        to: [U0ESCONE]
      - after: 2s
        to: [U0ESCTWO]
"""


def base_env() -> dict[str, str]:
    """This process's environment without any signoff or Slack settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("SIGNOFF_", "SLACK_"))}


def serve_env(*, db_url: str, slack_url: str, config: Path, **more: str) -> dict[str, str]:
    """The environment of ``signoff serve`` against the fake Slack at ``slack_url``: the agent
    secrets of ``support.SECRETS``, a sweep every 0.2 s, and ``more`` on top."""
    env = base_env()
    env.update(SECRETS)
    env.update(
        {
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SLACK_SECRET,
            "SIGNOFF_SLACK_API_URL": slack_url,
            "SIGNOFF_DATABASE_URL": db_url,
            "SIGNOFF_CONFIG": str(config),
            "SIGNOFF_SWEEP_INTERVAL": "0.2",
            # The fake Slack has no rate limits unless a test gives it some (and turns pacing on).
            "SIGNOFF_SLACK_PACING": "false",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(more)
    return env


def pem_key() -> str:
    """A fresh Ed25519 grant-signing key (PEM), for replicas that must share one."""
    return (
        Ed25519PrivateKey.generate()
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
    )


class Serve:
    """One ``signoff serve`` process on a free port, run in ``workdir`` with ``env``; its
    output goes to ``workdir/serve-<name>.log``. Stop it (SIGTERM, then SIGKILL) when done."""

    def __init__(self, workdir: Path, env: dict[str, str], name: str, args: tuple[str, ...] = ()):
        self.workdir, self.env, self.name, self.args = workdir, env, name, args
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"serve-{name}.log"
        self.proc: subprocess.Popen | None = None

    def launch(self) -> Serve:
        """Start the process and return at once (see ``wait_ready``)."""
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [*SIGNOFF, "serve", "--port", str(self.port), *self.args],
                env=self.env,
                cwd=self.workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    def wait_ready(self, timeout: float = 30.0) -> Serve:
        """Wait until ``/readyz`` answers 200; an AssertionError with the log if the process
        exits or is not ready in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"signoff serve exited {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"signoff serve not ready after {timeout}s:\n{self.output()}")

    def start(self) -> Serve:
        return self.launch().wait_ready()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    # -- calls ---------------------------------------------------------------------------
    def agent(
        self, method: str, path: str, agent: str, body: dict | None = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        """A request from ``agent``, signed with its secret from ``support.SECRETS``."""
        raw = b"" if body is None else json.dumps(body).encode()
        h = {**signed_headers(agent, agent_secret(agent), raw), **(headers or {})}
        return httpx.request(method, self.url + path, content=raw, headers=h, timeout=10)

    def click(
        self, rid: str, user: str, channel: str, ts: str | None = None, action: str = "signoff.approve"
    ) -> httpx.Response:
        """A signed ``block_actions`` click on button ``action`` of the message ``ts`` in ``channel``."""
        body, headers = slack_form(
            {"payload": json.dumps(block_actions(rid, user, action, channel=channel, ts=ts))}, SLACK_SECRET
        )
        return httpx.post(self.url + "/slack/events", content=body, headers=headers, timeout=10)


def submit(server: Serve, workflow: str, n: int) -> str:
    """Submit request number ``n`` like a well-behaved agent: an Idempotency-Key, and a
    retry on 503. Its id."""
    key = f"e2e-{workflow}-{n}-{time.time_ns()}"
    body = submission(workflow=workflow, title=f"e2e request {n}")
    for _ in range(10):
        r = server.agent("POST", "/v1/actions", "deploy-bot", body, headers={"Idempotency-Key": key})
        if r.status_code != 503:
            break
        time.sleep(0.05)
    assert r.status_code in (200, 201), r.text
    return r.json()["id"]


def exported_events(workdir: Path, env: dict[str, str], request_id: str) -> list[dict]:
    """The events of ``signoff evidence export`` for one request, as an operator runs it."""
    bundle = workdir / f"bundle-{request_id}.json"
    subprocess.run(
        [*SIGNOFF, "evidence", "export", request_id, "-o", str(bundle)], env=env, cwd=workdir, check=True, timeout=60
    )
    return json.loads(bundle.read_text())["events"]


def top_level_posts(slack: FakeSlack) -> list:
    """chat.postMessage calls that posted a copy of a request (not thread replies)."""
    return [c for c in slack.calls_to("chat.postMessage") if c.ok and not c.params.get("thread_ts")]


def request_of(call) -> str | None:
    """The request id in a posted message's metadata."""
    meta = call.params.get("metadata") or {}
    return (meta.get("event_payload") or {}).get("request_id")


def all_expired_and_delivered(engine: Engine, ids: list[str]) -> bool:
    """Every request of ``ids`` has expired and nothing is owed to Slack any more."""
    with engine.connect() as conn:
        open_ = conn.scalar(
            select(func.count()).select_from(RequestRow).where(RequestRow.id.in_(ids), RequestRow.status != "expired")
        )
        owed = conn.scalar(select(func.count()).select_from(OutboxRow).where(OutboxRow.state == "pending"))
    return open_ == 0 and owed == 0
