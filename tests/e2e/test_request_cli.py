"""``signoff request`` against ``signoff serve``: the request object on stdout and the exit
code for each way a wait can end. Needs a server that accepts signature v2."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest

from e2e.client_world import join_clean
from e2e.harness import SIGNOFF, base_env, request_of
from signoff.cli import main


def run(world, *args: str, env: dict | None = None, timeout: float = 30, stdin: str | None = None):
    e = base_env()
    e.update(world.agent_env() if env is None else env)
    return subprocess.run(
        [*SIGNOFF, "request", *args], env=e, capture_output=True, text=True, timeout=timeout, input=stdin
    )


def args(title: str, workflow: str = "prod-restart", *more: str) -> list[str]:
    return [
        "--workflow",
        workflow,
        "--title",
        title,
        "--type",
        "service.restart",
        "--target",
        "checkout-api",
        "--justification",
        "p99 doubled",
        *more,
    ]


def unique(title: str) -> str:
    return f"{title} {uuid.uuid4().hex[:8]}"


def test_without_wait_it_prints_the_pending_request_and_exits_0(agent_world, tmp_path):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("the user asked for a restart")
    title = unique("CLI submit")
    r = run(
        agent_world,
        *args(
            title,
            "prod-restart",
            "--environment",
            "production",
            "--param",
            "graceful=true",
            "--param",
            "replicas=3",
            "--param",
            "note=hello world",
            "--param",
            'tags=["a","b"]',
            "--prompt-file",
            str(prompt),
            "--risk",
            "high",
            "--rollback",
            "restart again",
        ),
    )
    assert r.returncode == 0, r.stderr
    view = json.loads(r.stdout)
    assert view["status"] == "pending" and view["title"] == title and view["risk"] == "high"
    assert view["action"] == {
        "type": "service.restart",
        "target": "checkout-api",
        "environment": "production",
        "parameters": {"graceful": True, "replicas": 3, "note": "hello world", "tags": ["a", "b"]},
    }
    assert view["rollback"]["description"] == "restart again"


@pytest.mark.parametrize(
    "click, code, status",
    [
        # this agent is the executor: reading the approved request takes its grant (pull mode)
        ("signoff.approve", 0, "executing"),
        ("signoff.reject", 3, "rejected"),
    ],
)
def test_wait_exits_by_the_decision(agent_world, click, code, status):
    title = unique(f"CLI {click}")
    clicker = agent_world.click_later(title, click)
    r = run(agent_world, *args(title, "prod-restart", "--wait", "20"))
    join_clean(clicker)
    assert r.returncode == code, r.stderr
    view = json.loads(r.stdout)
    assert view["status"] == status
    assert bool(view["grant"]) == (status == "executing")


def test_wait_exits_4_when_it_expires(agent_world):
    r = run(agent_world, *args(unique("CLI expire"), "quick", "--wait", "15"))
    assert r.returncode == 4, r.stderr
    assert json.loads(r.stdout)["status"] == "expired"


def test_wait_exits_5_when_cancelled(agent_world):
    title = unique("CLI cancel")

    def cancel():
        post = agent_world.post_of(title)
        rid = request_of(post)
        assert agent_world.server.agent("POST", f"/v1/actions/{rid}/cancel", "deploy-bot").status_code == 200

    import threading

    t = threading.Thread(target=cancel, daemon=True)
    t.start()
    r = run(agent_world, *args(title, "prod-restart", "--wait", "15"))
    t.join(10)
    assert r.returncode == 5, r.stderr
    assert json.loads(r.stdout)["status"] == "cancelled"


def test_wait_exits_6_while_still_pending(agent_world):
    r = run(agent_world, *args(unique("CLI pending"), "prod-restart", "--wait", "1"))
    assert r.returncode == 6, r.stderr
    assert json.loads(r.stdout)["status"] == "pending"


def test_an_http_error_exits_1_with_its_message(agent_world):
    r = run(agent_world, *args("x", "no-such-workflow"))
    assert r.returncode == 1 and r.stdout == ""
    assert "404" in r.stderr and "workflow" in r.stderr.lower()
    r = run(agent_world, *args("x", "prod-restart", "--risk", "critical"))
    assert r.returncode == 1 and "422" in r.stderr and "rollback" in r.stderr
    r = run(agent_world, *args("x"), env={**agent_world.agent_env(), "SIGNOFF_AGENT_SECRET": "wrong"})
    assert r.returncode == 1 and "401" in r.stderr


@pytest.mark.parametrize(
    "bad",
    [
        ["--title", "x"],  # required flags missing
        args("x", "prod-restart", "--risk", "extreme"),
        args("x", "prod-restart", "--param", "novalue"),
        args("x", "prod-restart", "--param", "=1"),
        args("x", "prod-restart", "--param", "a=1", "--param", "a=2"),
        args("x", "prod-restart", "--wait", "soon"),
        args("x", "prod-restart", "--wait", "-1"),
        args("x", "prod-restart", "--prompt-file", "/nonexistent/prompt.txt"),
    ],
)
def test_bad_usage_exits_2(agent_world, bad, monkeypatch, capsys):
    for k, v in agent_world.agent_env().items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SystemExit) as info:
        main(["request", *bad])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip()


def test_a_missing_identity_exits_2_naming_it(agent_world):
    r = run(agent_world, *args("x"), env={"SIGNOFF_URL": agent_world.server.url})
    assert r.returncode == 2
    assert "SIGNOFF_AGENT" in r.stderr and "SIGNOFF_AGENT_SECRET" in r.stderr
