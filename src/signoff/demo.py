"""``signoff demo``: the whole loop offline.

A throwaway SQLite file, an in-process Slack stand-in (a local HTTP server speaking the
Web API methods signoff uses), the real HTTP server, an agent submitting over the signed
webhook, the sponsor's refused click, the owner's approval, the executor receiving its
grant and reporting the outcome, and the evidence printed and verified.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import threading
import time
from urllib.parse import urlencode

import httpx
import jwt

from signoff.standin import LoopbackHTTP

DEMO_YAML = """\
agents:
  - id: deploy-bot
    sponsor: U0SPONSOR
    secret_env: SIGNOFF_DEMO_AGENT_SECRET
    signature: v2                # v1 signatures from this agent are refused
workflows:
  - id: prod-restart
    description: Restart production services
    owner: U0OWNER
    platform_owner: U0PLAT
    security_owner: U0SEC
    security_channel: C0SEC
    channel: C0APPROVALS
    approvers: [U0OWNER, U0SPONSOR]
    required_approvals: 1
    agents: [deploy-bot]
    timeout: 30m
    escalation:
      - after: 10m
        to: [U0PLAT]
    execution:
      webhook: {webhook}
      grant_ttl: 10m
"""

AGENT_SECRET = "demo-agent-secret"
SIGNING_SECRET = "demo-slack-signing-secret"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _agent_signature(ts: str, method: str, target: str | bytes, body: bytes) -> str:
    """The agent's v2 signature: it binds the method and the request target too."""
    from signoff.domain.agent_signature import sign_v2

    return sign_v2(AGENT_SECRET.encode(), ts, method, target, body)


class _Executor(LoopbackHTTP):
    """A stand-in executor: receives the signed webhook, checks signature and grant."""

    def __init__(self):
        self.received: list[dict] = []
        self.event = threading.Event()
        super().__init__()
        self.url += "/execute"

    def answer(self, method: str, target: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        from signoff.domain.agent_signature import MalformedSignature, matches, parse_header

        h = {k.lower(): v for k, v in headers.items()}
        ts = h.get("x-signoff-timestamp", "")
        try:  # signoff signs its webhooks v1 and v2: check v2, over this method and target
            given = parse_header(h.get("x-signoff-signature", "")).get("v2", "")
        except MalformedSignature:
            given = ""
        ok = bool(given) and matches(_agent_signature(ts, method, target, body), given)
        self.received.append({"body": json.loads(body), "signature_ok": ok, "agent": h.get("x-signoff-agent")})
        self.event.set()
        return (200 if ok else 401), b""


def _say(step: str, text: str = "") -> None:
    print(f"\n== {step}")
    if text:
        print(text)


def _wait(predicate, timeout: float = 10.0, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise RuntimeError(f"demo: timed out waiting for {what}")


def run_demo(verbose: bool = False) -> int:
    import logging

    import uvicorn

    from signoff.bootstrap import build
    from signoff.config import parse_config
    from signoff.evidence.export import build_bundle, verify_bundle
    from signoff.evidence.verify import verify_store
    from signoff.server import build_service
    from signoff.settings import Settings
    from slack_sdk.signature import SignatureVerifier

    from signoff.standin import SlackStandIn

    slack_signer = SignatureVerifier(SIGNING_SECRET)

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    tmp = tempfile.mkdtemp(prefix="signoff-demo-")
    os.environ["SIGNOFF_DEMO_AGENT_SECRET"] = AGENT_SECRET
    executor = _Executor()
    slack = SlackStandIn()
    server = None
    service = None
    try:
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        settings = Settings(SLACK_BOT_TOKEN="xoxb-demo", SLACK_SIGNING_SECRET=SIGNING_SECRET,
                            SIGNOFF_SLACK_API_URL=slack.url, SIGNOFF_DATABASE_URL=f"sqlite:///{tmp}/demo.db",
                            SIGNOFF_SWEEP_INTERVAL=0.2, SIGNOFF_PUBLIC_URL=base)
        config = parse_config(DEMO_YAML.format(webhook=executor.url), "demo.yaml")
        runtime = build(settings, config=config)
        service = build_service(runtime)
        server = uvicorn.Server(uvicorn.Config(service.app, host="127.0.0.1", port=port, log_level="warning"))
        threading.Thread(target=server.run, daemon=True).start()
        _wait(lambda: server.started, what="the HTTP server")
        service.start()
        print(f"signoff demo — database {tmp}/demo.db, HTTP {base}, Slack stand-in {slack.url}")
        http = httpx.Client(base_url=base, timeout=10)

        def agent(method: str, path: str, body: dict | None = None) -> httpx.Response:
            raw = json.dumps(body).encode() if body is not None else b""
            ts = str(int(time.time()))
            headers = {"X-Signoff-Agent": "deploy-bot", "X-Signoff-Timestamp": ts,
                       "X-Signoff-Signature": _agent_signature(ts, method, httpx.URL(path).raw_path, raw),
                       "Content-Type": "application/json"}
            return http.request(method, path, content=raw, headers=headers)

        def click(user: str, action_id: str, request_id: str, channel: str, ts: str) -> httpx.Response:
            payload = {"type": "block_actions", "user": {"id": user, "username": user.lower()},
                       "team": {"id": "T0DEMO"}, "api_app_id": "A0DEMO", "token": "x",
                       "channel": {"id": channel}, "container": {"type": "message", "channel_id": channel,
                                                                  "message_ts": ts},
                       "message": {"ts": ts}, "trigger_id": "1.2.3",
                       "actions": [{"type": "button", "action_id": action_id, "block_id": "signoff.decision",
                                    "value": request_id, "action_ts": str(time.time())}]}
            raw = urlencode({"payload": json.dumps(payload)}).encode()
            st = str(int(time.time()))
            headers = {"X-Slack-Request-Timestamp": st, "X-Slack-Signature": slack_signer.generate_signature(timestamp=st, body=raw),
                       "Content-Type": "application/x-www-form-urlencoded"}
            return http.post("/slack/events", content=raw, headers=headers)

        body = {
            "workflow": "prod-restart",
            "title": "Restart checkout-api in prod-eu",
            "action": {"type": "service.restart", "target": "checkout-api", "environment": "production",
                       "parameters": {"graceful": True}},
            "justification": "p99 latency doubled after the 14:02 deploy",
            "prompt": "Checkout is slow since the last deploy. Find out why and fix it. <!channel>",
            "risk": "high",
            "rollback": {"description": "no rollback needed: restart is idempotent"},
        }
        resp = agent("POST", "/v1/actions", body)
        req = resp.json()
        _say("1. agent deploy-bot submits over the signed webhook",
             f"POST /v1/actions → {resp.status_code}; id {req['id']}, status {req['status']}, "
             f"action_sha256 {req['action_sha256'][:16]}…, sponsor {req['sponsor']}")

        post = _wait(lambda: [c for c in slack.calls_to("chat.postMessage") if c.params.get("channel") == "C0APPROVALS"],
                     what="the Slack post")[0]
        root = slack.messages("C0APPROVALS")[0]
        buttons = [e["action_id"] for b in post.params["blocks"] if b.get("type") == "actions" for e in b["elements"]]
        _say("2. the owner sees it in #C0APPROVALS",
             f"chat.postMessage → channel C0APPROVALS, ts {root['ts']}, buttons {buttons}\n"
             f"   text: {post.params.get('text')}")

        resp = click("U0SPONSOR", "signoff.approve", req["id"], "C0APPROVALS", root["ts"])
        eph = _wait(lambda: slack.calls_to("chat.postEphemeral"), what="the ephemeral refusal")[0]
        _say("3. the agent's sponsor clicks Approve — refused (separation of duties)",
             f"/slack/events → {resp.status_code}; ephemeral to {eph.params['user']}: {eph.params['text']}")

        resp = click("U0OWNER", "signoff.approve", req["id"], "C0APPROVALS", root["ts"])
        _say("4. the owner clicks Approve", f"/slack/events → {resp.status_code} (acknowledged at once)")

        executor.event.wait(10)
        hook = executor.received[0]
        jwks = http.get("/.well-known/jwks.json").json()
        token = hook["body"]["grant"]
        kid = jwt.get_unverified_header(token)["kid"]
        key = jwt.PyJWK(next(k for k in jwks["keys"] if k["kid"] == kid))
        claims = jwt.decode(token, key, algorithms=["EdDSA"], issuer="signoff", options={"require": ["exp", "jti"]})
        bound = claims["action_sha256"] == hook["body"]["action_sha256"] == req["action_sha256"]
        _say("5. the executor receives the signed webhook with its grant",
             f"HMAC signature valid: {hook['signature_ok']} (agent header {hook['agent']!r})\n"
             f"grant verified against /.well-known/jwks.json (kid {kid}): sub={claims['sub']} jti={claims['jti']}\n"
             f"   valid {claims['exp'] - claims['iat']} s, bound to the approved action: {bound}")

        resp = agent("POST", f"/v1/actions/{req['id']}/outcome", {"status": "succeeded", "detail": "restarted 6/6 pods"})
        _say("6. the executor reports the outcome", f"POST …/outcome → {resp.status_code}; status {resp.json()['status']}")

        _wait(lambda: len(slack.calls_to("chat.update")) >= 1, what="the message update")
        final = slack.messages("C0APPROVALS")[0]
        live = any(b.get("type") == "actions" for b in final.get("blocks") or [])
        _say("7. every copy of the message is updated", f"chat.update × {len(slack.calls_to('chat.update'))}; "
             f"live buttons left: {live}")

        time.sleep(0.3)
        bundle = build_bundle(runtime.store, runtime.context.keys, req["id"], runtime.context.clock())
        ok, reason = verify_bundle(bundle, jwks)
        result = verify_store(runtime.store, runtime.context.keys)
        lines = [f"   {e['seq']:>2} {e['at'][11:23]} {e['type']:<28} {e['actor']}" for e in bundle["events"]]
        _say("8. the evidence (hash-chained, signed)",
             "\n".join(lines) + f"\nbundle signature ({bundle['signature']['alg']}, kid {bundle['signature']['kid']}) "
             f"and chain verify: {ok}{'' if ok else ' — ' + str(reason)}\n"
             f"store verify: {'OK' if result.ok else result.failure} "
             f"({result.checked_events} events in {result.checked_requests} request(s))")
        exit_ok = ok and result.ok and bound and hook["signature_ok"] and resp.json()["status"] == "succeeded"
        print("\ndemo finished:", "everything held" if exit_ok else "SOMETHING FAILED")
        return 0 if exit_ok else 1
    finally:
        if service:
            service.stop()
        if server:
            server.should_exit = True
            time.sleep(0.2)
        slack.stop()
        executor.close()
        if service:
            service.runtime.store.dispose()
        shutil.rmtree(tmp, ignore_errors=True)
