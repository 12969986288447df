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
import tempfile
import threading
import time
from urllib.parse import urlencode

import httpx
import jwt

from signoff.demo import samples
from signoff.demo.loopback import Executor, free_port
from signoff.domain.agent_signature import sign_v2


def _agent_signature(ts: str, method: str, target: str | bytes, body: bytes) -> str:
    """The agent's v2 signature: it binds the method and the request target too."""
    return sign_v2(samples.AGENT_SECRET.encode(), ts, method, target, body)


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
    from slack_sdk.signature import SignatureVerifier

    from signoff.bootstrap import build
    from signoff.config import parse_config
    from signoff.demo.slack_standin import SlackStandIn
    from signoff.evidence.export import build_bundle, verify_bundle
    from signoff.evidence.verify import verify_store
    from signoff.server import build_service
    from signoff.settings import Settings

    slack_signer = SignatureVerifier(samples.SIGNING_SECRET)

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    tmp = tempfile.mkdtemp(prefix="signoff-demo-")
    os.environ[samples.AGENT_SECRET_ENV] = samples.AGENT_SECRET
    executor = Executor(samples.AGENT_SECRET)
    slack = SlackStandIn()
    server = None
    service = None
    try:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        settings = Settings(
            SLACK_BOT_TOKEN="xoxb-demo",
            SLACK_SIGNING_SECRET=samples.SIGNING_SECRET,
            SIGNOFF_SLACK_API_URL=slack.url,
            SIGNOFF_DATABASE_URL=f"sqlite:///{tmp}/demo.db",
            SIGNOFF_SWEEP_INTERVAL=0.2,
            SIGNOFF_PUBLIC_URL=base,
        )
        config = parse_config(samples.workflow_yaml(executor.url), "demo.yaml")
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
            headers = {
                "X-Signoff-Agent": samples.AGENT,
                "X-Signoff-Timestamp": ts,
                "X-Signoff-Signature": _agent_signature(ts, method, httpx.URL(path).raw_path, raw),
                "Content-Type": "application/json",
            }
            return http.request(method, path, content=raw, headers=headers)

        def click(user: str, action_id: str, request_id: str, channel: str, ts: str) -> httpx.Response:
            payload = {
                "type": "block_actions",
                "user": {"id": user, "username": user.lower()},
                "team": {"id": "T0DEMO"},
                "api_app_id": "A0DEMO",
                "token": "x",
                "channel": {"id": channel},
                "container": {"type": "message", "channel_id": channel, "message_ts": ts},
                "message": {"ts": ts},
                "trigger_id": "1.2.3",
                "actions": [
                    {
                        "type": "button",
                        "action_id": action_id,
                        "block_id": "signoff.decision",
                        "value": request_id,
                        "action_ts": str(time.time()),
                    }
                ],
            }
            raw = urlencode({"payload": json.dumps(payload)}).encode()
            st = str(int(time.time()))
            headers = {
                "X-Slack-Request-Timestamp": st,
                "X-Slack-Signature": slack_signer.generate_signature(timestamp=st, body=raw),
                "Content-Type": "application/x-www-form-urlencoded",
            }
            return http.post("/slack/events", content=raw, headers=headers)

        body = samples.demo_submission()
        resp = agent("POST", "/v1/actions", body)
        req = resp.json()
        _say(
            "1. agent deploy-bot submits over the signed webhook",
            f"POST /v1/actions → {resp.status_code}; id {req['id']}, status {req['status']}, "
            f"action_sha256 {req['action_sha256'][:16]}…, sponsor {req['sponsor']}",
        )

        post = _wait(
            lambda: [c for c in slack.calls_to("chat.postMessage") if c.params.get("channel") == samples.CHANNEL],
            what="the Slack post",
        )[0]
        root = slack.messages(samples.CHANNEL)[0]
        buttons = [e["action_id"] for b in post.params["blocks"] if b.get("type") == "actions" for e in b["elements"]]
        _say(
            "2. the owner sees it in #C0APPROVALS",
            f"chat.postMessage → channel C0APPROVALS, ts {root['ts']}, buttons {buttons}\n"
            f"   text: {post.params.get('text')}",
        )

        resp = click(samples.SPONSOR, "signoff.approve", req["id"], samples.CHANNEL, root["ts"])
        eph = _wait(lambda: slack.calls_to("chat.postEphemeral"), what="the ephemeral refusal")[0]
        _say(
            "3. the agent's sponsor clicks Approve — refused (separation of duties)",
            f"/slack/events → {resp.status_code}; ephemeral to {eph.params['user']}: {eph.params['text']}",
        )

        resp = click(samples.OWNER, "signoff.approve", req["id"], samples.CHANNEL, root["ts"])
        _say("4. the owner clicks Approve", f"/slack/events → {resp.status_code} (acknowledged at once)")

        executor.event.wait(10)
        hook = executor.received[0]
        jwks = http.get("/.well-known/jwks.json").json()
        token = hook["body"]["grant"]
        kid = jwt.get_unverified_header(token)["kid"]
        key = jwt.PyJWK(next(k for k in jwks["keys"] if k["kid"] == kid))
        claims = jwt.decode(token, key, algorithms=["EdDSA"], issuer="signoff", options={"require": ["exp", "jti"]})
        bound = claims["action_sha256"] == hook["body"]["action_sha256"] == req["action_sha256"]
        _say(
            "5. the executor receives the signed webhook with its grant",
            f"HMAC signature valid: {hook['signature_ok']} (agent header {hook['agent']!r})\n"
            f"grant verified against /.well-known/jwks.json (kid {kid}): sub={claims['sub']} jti={claims['jti']}\n"
            f"   valid {claims['exp'] - claims['iat']} s, bound to the approved action: {bound}",
        )

        resp = agent(
            "POST", f"/v1/actions/{req['id']}/outcome", {"status": "succeeded", "detail": "restarted 6/6 pods"}
        )
        _say(
            "6. the executor reports the outcome",
            f"POST …/outcome → {resp.status_code}; status {resp.json()['status']}",
        )

        _wait(lambda: len(slack.calls_to("chat.update")) >= 1, what="the message update")
        final = slack.messages(samples.CHANNEL)[0]
        live = any(b.get("type") == "actions" for b in final.get("blocks") or [])
        _say(
            "7. every copy of the message is updated",
            f"chat.update × {len(slack.calls_to('chat.update'))}; live buttons left: {live}",
        )

        time.sleep(0.3)
        bundle = build_bundle(runtime.store, runtime.context.keys, req["id"], runtime.context.clock())
        ok, reason = verify_bundle(bundle, jwks)
        result = verify_store(runtime.store, runtime.context.keys)
        lines = [f"   {e['seq']:>2} {e['at'][11:23]} {e['type']:<28} {e['actor']}" for e in bundle["events"]]
        _say(
            "8. the evidence (hash-chained, signed)",
            "\n".join(lines) + f"\nbundle signature ({bundle['signature']['alg']}, kid {bundle['signature']['kid']}) "
            f"and chain verify: {ok}{'' if ok else ' — ' + str(reason)}\n"
            f"store verify: {'OK' if result.ok else result.failure} "
            f"({result.checked_events} events in {result.checked_requests} request(s))",
        )
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
