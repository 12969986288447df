"""One ``signoff serve`` process for the agent-side tests (the Python client, ``signoff
request``, ``signoff mcp``): a fake Slack, two workflows, and a person who clicks.

Every client here signs v2, as shipped: these tests need a server that accepts signature v2.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from e2e.harness import Serve, request_of, serve_env, top_level_posts
from fakes.slack_api import FakeSlack
from support import DEPLOY_BOT, ROUTING, SECRETS, agent_secret, wait_until

WORKFLOWS = f"""
agents:
{DEPLOY_BOT}\
  - id: other-bot
    sponsor: U0OTHERSP
    secret_env: OTHER_BOT_SECRET
workflows:
  - id: prod-restart
{ROUTING}\
    agents: [deploy-bot, other-bot]
    timeout: 30m
    execution:
      grant_ttl: 5m
  - id: quick
{ROUTING}\
    agents: [deploy-bot]
    timeout: 2s
"""


@dataclass
class World:
    server: Serve
    slack: FakeSlack
    workdir: Path

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.workdir / 'signoff.db'}"

    def agent_env(self, agent: str = "deploy-bot") -> dict[str, str]:
        """SIGNOFF_URL, SIGNOFF_AGENT and SIGNOFF_AGENT_SECRET of ``agent`` on this server."""
        return {"SIGNOFF_URL": self.server.url, "SIGNOFF_AGENT": agent, "SIGNOFF_AGENT_SECRET": agent_secret(agent)}

    def post_of(self, title: str, timeout: float = 10.0):
        """The Slack post of the request titled ``title`` (waiting for it)."""

        def find():
            return next(
                (c for c in top_level_posts(self.slack) if title in json.dumps(c.params.get("blocks")) and c.response),
                None,
            )

        return wait_until(find, timeout, f"the Slack post of {title!r}", interval=0.05)

    def click(self, title: str, action: str = "signoff.approve", user: str = "U0OWNER") -> str:
        """Wait for the request titled ``title`` in Slack, click ``action`` on it as
        ``user``; the request id."""
        post = self.post_of(title)
        rid = request_of(post)
        r = self.server.click(rid, user, post.response["channel"], post.response["ts"], action=action)
        assert r.status_code == 200, r.text
        return rid

    def click_later(self, title: str, action: str = "signoff.approve") -> threading.Thread:
        """``click`` from another thread, as a person in Slack would while the agent waits."""
        errors: list[BaseException] = []

        def run():
            try:
                self.click(title, action)
            except BaseException as exc:  # surfaced by join_clean
                errors.append(exc)

        t = threading.Thread(target=run, daemon=True)
        t.errors = errors  # type: ignore[attr-defined]
        t.start()
        return t


def join_clean(thread: threading.Thread) -> None:
    thread.join(15)
    assert not thread.is_alive(), "the clicking thread did not finish"
    if thread.errors:  # type: ignore[attr-defined]
        raise thread.errors[0]  # type: ignore[attr-defined]


def start_world(workdir: Path, slack: FakeSlack) -> World:
    (workdir / "signoff.yaml").write_text(WORKFLOWS)
    env = serve_env(db_url=f"sqlite:///{workdir / 'signoff.db'}", slack_url=slack.url, config=workdir / "signoff.yaml")
    server = Serve(workdir, env, "agent-side")
    env["SIGNOFF_PUBLIC_URL"] = server.url
    server.start()
    return World(server, slack, workdir)


@pytest.fixture(scope="session")
def agent_world(tmp_path_factory) -> World:
    """One ``signoff serve`` shared by the agent-side tests (each uses its own titles).
    A plugin of tests/conftest.py."""
    with FakeSlack() as slack:
        world = start_world(tmp_path_factory.mktemp("agent-side"), slack)
        try:
            yield world
        finally:
            world.server.stop()


__all__ = ["SECRETS", "World", "agent_world", "join_clean", "start_world"]
