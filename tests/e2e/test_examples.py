"""The recipes of docs/integrations.md, run for real against ``signoff serve``: the
pre-tool-use hook, the MCP client configuration, a tool function behind
``require_approval``, and an executor checking its grant. Needs a server that accepts
signature v2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import anyio
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from e2e.client_world import join_clean
from e2e.harness import base_env
from signoff.client import Client
from support import agent_secret

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SIGNOFF_BIN = f"{sys.executable} -m signoff.cli"


def env_of(world, **more) -> dict[str, str]:
    env = base_env()
    env.update(world.agent_env())
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.update(more)
    return env


def hook(world, call: dict, **more) -> subprocess.CompletedProcess:
    env = env_of(world, SIGNOFF_BIN=SIGNOFF_BIN, SIGNOFF_GATE_WORKFLOW="prod-restart", SIGNOFF_GATE_WAIT="20", **more)
    return subprocess.run(
        ["bash", str(EXAMPLES / "hooks" / "gate-shell.sh")],
        input=json.dumps(call),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def bash_call(command: str) -> dict:
    return {"tool_name": "Bash", "tool_input": {"command": command}}


def test_the_hook_lets_ungated_commands_through_without_asking(agent_world):
    r = hook(agent_world, bash_call("ls -la"), SIGNOFF_URL="http://127.0.0.1:9")
    assert r.returncode == 0, r.stderr
    r = hook(
        agent_world, {"tool_name": "Read", "tool_input": {"file_path": "kubectl.txt"}}, SIGNOFF_URL="http://127.0.0.1:9"
    )
    assert r.returncode == 0, r.stderr


def test_the_hook_runs_an_approved_command_and_blocks_a_rejected_one(agent_world):
    tag = uuid.uuid4().hex[:8]
    approved = f"kubectl rollout restart deploy/checkout-{tag}"
    clicker = agent_world.click_later(f"Run: {approved}")
    r = hook(agent_world, bash_call(approved))
    join_clean(clicker)
    assert r.returncode == 0, r.stderr

    rejected = f'kubectl delete namespace "prod-{tag}"'
    clicker = agent_world.click_later(f"prod-{tag}", "signoff.reject")
    r = hook(agent_world, bash_call(rejected))
    join_clean(clicker)
    assert r.returncode == 2 and "rejected" in r.stderr

    # the exact command is the action's parameter, quotes and all
    post = agent_world.post_of(f"prod-{tag}")
    assert "prod-" + tag in json.dumps(post.params["blocks"])


def test_the_hook_fails_closed_when_signoff_is_unreachable(agent_world):
    r = hook(agent_world, bash_call("terraform apply -auto-approve"), SIGNOFF_URL="http://127.0.0.1:9")
    assert r.returncode == 2 and "blocked" in r.stderr


def test_the_mcp_configuration_starts_the_server(agent_world):
    config = json.loads((EXAMPLES / "mcp.json").read_text())
    entry = config["mcpServers"]["signoff"]
    assert entry["command"] == "signoff" and entry["args"] == ["mcp"]
    assert set(entry["env"]) == {"SIGNOFF_URL", "SIGNOFF_AGENT", "SIGNOFF_AGENT_SECRET"}

    async def main():
        # `signoff` as this interpreter runs it; the env as the configuration names it, filled in
        params = StdioServerParameters(
            command=sys.executable,
            args=["-m", "signoff.cli", *entry["args"]],
            env={**base_env(), **{k: agent_world.agent_env()[k] for k in entry["env"]}},
        )
        with anyio.fail_after(60):
            async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
                await session.initialize()
                return {t.name for t in (await session.list_tools()).tools}

    assert "request_approval" in anyio.run(main)


def test_the_gated_tool_runs_once_approved(agent_world):
    service = f"svc-{uuid.uuid4().hex[:8]}"
    clicker = agent_world.click_later(f"Restart {service} in production")
    r = subprocess.run(
        [sys.executable, str(EXAMPLES / "gated_tool.py"), service],
        env=env_of(agent_world),
        capture_output=True,
        text=True,
        timeout=60,
    )
    join_clean(clicker)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == f"{service} restarted"


def test_the_executor_checks_its_grant_then_reports(agent_world):
    title = f"Executor {uuid.uuid4().hex[:8]}"
    with Client(agent_world.server.url, "deploy-bot", agent_secret("deploy-bot")) as c:
        view = c.submit("prod-restart", title, {"type": "service.restart", "target": "api"}, "x")
    agent_world.click(title)
    r = subprocess.run(
        [sys.executable, str(EXAMPLES / "executor.py"), view["id"]],
        env=env_of(agent_world),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["status"] == "succeeded" and out["claims"]["jti"] == view["id"]
    assert out["claims"]["sub"] == "deploy-bot"
