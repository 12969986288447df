"""``signoff serve`` as a process: a fake Slack, a fake executor, signed agent calls.

The whole loop over real HTTP; a SIGKILL while Slack is failing and a restart that then
delivers the owed message exactly once; and a clear refusal to start without a token.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import jwt
import pytest
import rfc8785

from e2e.harness import BOT_TOKEN, SIGNOFF, SLACK_SECRET, Serve, base_env, serve_env
from fakes.slack_api import FakeSlack
from signoff.demo.loopback import LoopbackHTTP
from support import DEPLOY_BOT, ROUTING, agent_secret, free_port, signed_headers, v1_signature, v2_signature, wait_until
from support import submission as base_submission


def config(hook: str) -> str:
    """The workflow file: deploy-bot asks, exec-bot executes through the webhook ``hook``."""
    return f"""
agents:
{DEPLOY_BOT}\
  - id: exec-bot
    sponsor: U0EXECSP
    secret_env: EXEC_BOT_SECRET
workflows:
  - id: prod-restart
{ROUTING}\
    agents: [deploy-bot, exec-bot]
    timeout: 30m
    execution:
      webhook: {hook}
      grant_ttl: 5m
"""


class Executor(LoopbackHTTP):
    """The executor's webhook: checks the X-Signoff-* signature and the grant before answering 2xx."""

    def __init__(self, secret: str, agent: str):
        self.secret = secret
        self.agent = agent
        self.jwks_url: str | None = None
        self.accepted: list[dict] = []
        self.refused: list[str] = []
        super().__init__()
        self.url += "/execute?team=ops%2Fprod"  # v2 signs the path and the query as sent

    def answer(self, method, target, headers, body):
        problem = self.check(method, target, headers, body)
        if problem:
            self.refused.append(problem)
        return (401 if problem else 200), b""

    def check(self, method: str, target: str, headers: dict, body: bytes) -> str | None:
        h = {k.lower(): v for k, v in headers.items()}
        if h.get("x-signoff-agent") != "signoff":
            return "agent header is not 'signoff'"
        ts = h.get("x-signoff-timestamp", "")
        if not ts.isdigit() or abs(time.time() - int(ts)) > 300:
            return "stale or missing timestamp"
        # signed v1 and v2; both must hold, v2 over this method and target (path and query)
        given = h.get("x-signoff-signature", "").split(",")
        if given != [v1_signature(self.secret, ts, body), v2_signature(self.secret, ts, method, target, body)]:
            return f"bad signature (v1 and v2 over {method} {target})"
        doc = json.loads(body)
        keys = httpx.get(self.jwks_url, timeout=5).json()["keys"]
        kid = jwt.get_unverified_header(doc["grant"])["kid"]
        jwk = next(k for k in keys if k["kid"] == kid)
        try:
            claims = jwt.decode(
                doc["grant"],
                jwt.PyJWK(jwk, algorithm="EdDSA").key,
                algorithms=["EdDSA"],
                issuer="signoff",
                options={"require": ["iss", "sub", "jti", "iat", "exp"]},
            )
        except jwt.PyJWTError as exc:
            return f"grant does not verify: {exc}"
        digest = hashlib.sha256(rfc8785.dumps(doc["action"])).hexdigest()
        if (
            claims["sub"] != self.agent
            or claims["jti"] != doc["id"]
            or claims["action_sha256"] != digest
            or doc["action_sha256"] != digest
        ):
            return f"grant claims do not match: {claims}"
        self.accepted.append({"doc": doc, "claims": claims})
        return None


@pytest.fixture
def world(tmp_path):
    with FakeSlack() as slack:
        executor = Executor(agent_secret("exec-bot"), "exec-bot")
        (tmp_path / "signoff.yaml").write_text(config(executor.url))
        env = serve_env(
            db_url=f"sqlite:///{tmp_path / 'signoff.db'}", slack_url=slack.url, config=tmp_path / "signoff.yaml"
        )
        servers: list[Serve] = []

        def serve(name: str, *args: str) -> Serve:
            s = Serve(tmp_path, env, name, args)
            servers.append(s)
            env["SIGNOFF_PUBLIC_URL"] = s.url
            return s

        try:
            yield slack, executor, serve
        finally:
            for s in servers:
                s.stop()
            executor.close()


def submission(title: str = "Restart checkout-api in prod-eu") -> dict:
    """A high-risk restart with a rollback plan, to be executed by exec-bot."""
    return base_submission(
        title=title, risk="high", rollback={"description": "restart is idempotent"}, executor="exec-bot"
    )


def test_the_whole_loop_over_http(world):
    slack, executor, serve = world
    server = serve("loop").start()
    executor.jwks_url = server.url + "/.well-known/jwks.json"

    r = server.agent("POST", "/v1/actions", "deploy-bot", submission())
    assert r.status_code == 201, r.text
    rid = r.json()["id"]

    # v2 over the target exactly as uvicorn received it: percent-encoding and query kept
    target = f"/v1/actions/%{ord(rid[0]):02x}{rid[1:]}?x=a%20b"
    for signed, status in ((target, 200), (f"/v1/actions/{rid}?x=a%20b", 401), (f"/v1/actions/{rid}", 401)):
        h = signed_headers("deploy-bot", agent_secret("deploy-bot"), b"", version="v2", method="GET", target=signed)
        got = httpx.get(server.url + target, headers=h, timeout=10)
        assert got.status_code == status, (signed, got.text)

    [post] = slack.wait_for("chat.postMessage", 1, timeout=10)
    assert post.params["channel"] == "C0APPROVALS"
    assert post.token == BOT_TOKEN
    elements = [e for b in post.params["blocks"] if b.get("type") == "actions" for e in b["elements"]]
    assert {(e["action_id"], e["value"]) for e in elements} >= {("signoff.approve", rid), ("signoff.reject", rid)}

    click = server.click(rid, "U0OWNER", post.response["channel"], post.response["ts"])
    assert click.status_code == 200, click.text

    wait_until(lambda: executor.accepted, 10, "the executor webhook with a valid grant")
    assert executor.refused == []
    [delivery] = executor.accepted
    assert delivery["doc"]["id"] == rid and delivery["claims"]["sub"] == "exec-bot"

    view = wait_until(
        lambda: (v := server.agent("GET", f"/v1/actions/{rid}", "exec-bot").json())["status"] == "executing" and v,
        10,
        "executing",
    )
    assert view["grant"] == delivery["doc"]["grant"]
    assert server.agent("GET", f"/v1/actions/{rid}", "deploy-bot").json()["grant"] is None

    done = server.agent("POST", f"/v1/actions/{rid}/outcome", "exec-bot", {"status": "succeeded", "detail": "ok"})
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "succeeded"
    assert server.agent("GET", f"/v1/actions/{rid}", "deploy-bot").json()["status"] == "succeeded"
    assert server.agent("POST", f"/v1/actions/{rid}/outcome", "exec-bot", {"status": "failed"}).status_code == 409

    # the Slack message was updated: no live buttons left
    def settled():
        msg = slack.message(post.response["channel"], post.response["ts"])
        live = [
            e
            for b in msg.get("blocks") or []
            if b.get("type") == "actions"
            for e in b.get("elements") or []
            if e.get("action_id") in ("signoff.approve", "signoff.reject")
        ]
        return msg.get("edited") and not live

    wait_until(settled, 10, "the request message updated without buttons")
    assert len(executor.accepted) == 1
    roots = [
        c
        for c in slack.calls_to("chat.postMessage")
        if c.params["channel"] == "C0APPROVALS" and not c.params.get("thread_ts")
    ]
    assert len(roots) == 1

    metrics = httpx.get(server.url + "/metrics", timeout=5)
    assert metrics.status_code == 200 and "signoff_requests_submitted_total" in metrics.text
    assert httpx.get(server.url + "/readyz", timeout=5).status_code == 200
    assert "Traceback" not in server.output()


def test_sigkill_while_slack_fails_then_restart_delivers_once(world):
    slack, executor, serve = world
    slack.set_down(True)
    first = serve("before-crash").start()
    r = first.agent("POST", "/v1/actions", "deploy-bot", submission("Owed through a crash"))
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    slack.wait_for("chat.postMessage", 2, timeout=10)  # tried and retried against the outage
    first.kill()
    assert slack.messages() == []

    slack.set_down(False)
    second = serve("after-restart").start()

    def posted():
        return [m for m in slack.messages("C0APPROVALS") if not m.get("thread_ts")]

    wait_until(posted, 20, "the owed message after the restart")
    # a few more dispatcher and sweep rounds: nothing is posted twice
    time.sleep(1.0)
    roots = posted()
    assert len(roots) == 1, roots
    assert rid in json.dumps(roots[0]["blocks"])
    ok_posts = [
        c
        for c in slack.calls_to("chat.postMessage")
        if c.ok and c.params["channel"] == "C0APPROVALS" and not c.params.get("thread_ts")
    ]
    assert len(ok_posts) == 1
    # and the restarted process carries on: the request can be decided from that message
    executor.jwks_url = second.url + "/.well-known/jwks.json"
    assert second.click(rid, "U0OWNER", "C0APPROVALS", roots[0]["ts"]).status_code == 200
    wait_until(lambda: executor.accepted, 10, "the webhook after the restart")


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return sorted(found)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc")
def test_workers_share_the_port_and_one_sqlite_file(world):
    slack, executor, serve = world
    server = serve("workers", "--workers", "2").start()
    executor.jwks_url = server.url + "/.well-known/jwks.json"
    workers = wait_until(
        lambda: len(_children(server.proc.pid)) == 2 and _children(server.proc.pid), 20, "two worker processes"
    )

    # concurrent submissions over both workers: every one accepted, posted once
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(
                lambda i: server.agent("POST", "/v1/actions", "deploy-bot", submission(f"Restart number {i}")),
                range(40),
            )
        )
    assert [a.status_code for a in answers] == [201] * 40, [a.text for a in answers if a.status_code != 201]
    ids = {a.json()["id"] for a in answers}

    def roots():
        return [m for m in slack.messages("C0APPROVALS") if not m.get("thread_ts")]

    wait_until(lambda: len(roots()) >= 40, 30, "40 posts")
    time.sleep(0.5)
    posted = [json.dumps(m["blocks"]) for m in roots()]
    assert len(posted) == 40 and all(sum(rid in p for p in posted) == 1 for rid in ids)

    # a worker that dies is replaced; the port keeps answering meanwhile
    os.kill(workers[0], signal.SIGKILL)
    assert server.agent("GET", f"/v1/actions/{next(iter(ids))}", "deploy-bot").status_code == 200
    wait_until(
        lambda: len(_children(server.proc.pid)) == 2 and workers[0] not in _children(server.proc.pid),
        20,
        "the worker started again",
    )
    assert "exited with -9" in server.output()

    # SIGHUP to the supervisor: every worker reloads the workflow file
    yaml_file = Path(server.env["SIGNOFF_CONFIG"])
    yaml_file.write_text(
        yaml_file.read_text()
        + """
  - id: prod-deploy
    owner: U0OWNER
    platform_owner: U0PLAT
    security_owner: U0SEC
    channel: C0APPROVALS
    agents: [deploy-bot]
"""
    )
    new_workflow = dict(submission("Deploy after reload"), workflow="prod-deploy")
    new_workflow.pop("executor")
    assert server.agent("POST", "/v1/actions", "deploy-bot", new_workflow).status_code == 404
    server.proc.send_signal(signal.SIGHUP)
    wait_until(
        lambda: server.agent("POST", "/v1/actions", "deploy-bot", new_workflow).status_code == 201,
        20,
        "the new workflow after SIGHUP",
    )
    time.sleep(0.5)  # both workers had the signal at once; give the slower one its moment
    # each its own body: the same body signed in the same second would be one signed request, sent again
    codes = [
        server.agent("POST", "/v1/actions", "deploy-bot", dict(new_workflow, title=f"Deploy {n}")).status_code
        for n in range(12)
    ]
    assert codes == [201] * 12, codes

    # the store is one intact chain after two processes wrote it
    env = dict(server.env)
    verify = subprocess.run(
        [*SIGNOFF, "evidence", "verify"], env=env, cwd=server.workdir, capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr

    # SIGTERM to the supervisor stops every worker
    alive = _children(server.proc.pid)
    server.proc.terminate()
    assert server.proc.wait(timeout=40) == 0
    assert all(
        not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2] for pid in alive
    )
    assert "Traceback" not in server.output()


def test_serve_without_a_bot_token_says_so(tmp_path):
    (tmp_path / "signoff.yaml").write_text(config("http://127.0.0.1:9/x"))
    env = base_env()
    env.update(
        {
            "SLACK_SIGNING_SECRET": SLACK_SECRET,
            "SIGNOFF_CONFIG": str(tmp_path / "signoff.yaml"),
            "SIGNOFF_DATABASE_URL": f"sqlite:///{tmp_path / 'signoff.db'}",
        }
    )
    out = subprocess.run(
        [*SIGNOFF, "serve", "--port", str(free_port())],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "SLACK_BOT_TOKEN" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout


def test_killed_between_slacks_answer_and_the_commit_posts_once(world):
    """The one window for a duplicate: Slack accepted the post, the process died before
    recording it. On restart the dispatcher finds the message by its metadata instead of
    posting again."""
    slack, _executor, serve = world
    first = serve("in-flight").start()
    slack.delay = 1.5  # every answer from Slack takes this long
    r = first.agent("POST", "/v1/actions", "deploy-bot", submission("Posted while dying"))
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    time.sleep(0.6)  # the post is on its way to Slack, not yet answered
    killed_at = time.time()
    first.kill()
    [call] = slack.wait_for("chat.postMessage", 1, timeout=10)
    slack.delay = 0.0
    assert call.ok and call.at > killed_at, "the post did not reach Slack after the process died"

    second = serve("after-in-flight").start()
    store = f"sqlite:///{second.workdir / 'signoff.db'}"

    def recorded():
        from sqlalchemy import create_engine, select

        from signoff.store.tables import SlackMessageRow

        engine = create_engine(store)
        try:
            with engine.connect() as conn:
                return conn.execute(
                    select(SlackMessageRow.ts).where(
                        SlackMessageRow.request_id == rid, SlackMessageRow.role == "request"
                    )
                ).scalar()
        finally:
            engine.dispose()

    ts = wait_until(recorded, 25, "the in-flight post to be found and recorded")
    assert ts == call.response["ts"]
    time.sleep(0.5)
    posts = [
        c
        for c in slack.calls_to("chat.postMessage")
        if c.params["channel"] == "C0APPROVALS" and not c.params.get("thread_ts")
    ]
    assert len(posts) == 1
    assert len([m for m in slack.messages("C0APPROVALS") if not m.get("thread_ts")]) == 1
    assert slack.calls_to("conversations.history"), "the restarted dispatcher looked before posting"
