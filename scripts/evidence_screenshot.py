"""Render a sample evidence page and screenshot it in headless Chromium (a documented check).

Usage: python scripts/evidence_screenshot.py OUT.png   (needs Debian's `chromium` package)

Builds a throwaway SQLite store with one request that went through a refused click, an
escalation, thread replies, approval, grant and a failed outcome; exports its HTML
evidence page and asks Chromium for a full-page screenshot, so a person can look at it.
"""

import os
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

from signoff.bootstrap import build
from signoff.config import parse_config
from signoff.evidence.export import build_bundle, render_html
from signoff.settings import Settings
from signoff.usecases.agent_ops import get_request, record_outcome
from signoff.usecases.decide import decide
from signoff.usecases.reply import record_thread_message
from signoff.usecases.slack_ops import record_posted
from signoff.usecases.submit import submit
from signoff.usecases.sweep import sweep

YAML = """
agents: [{id: deploy-bot, sponsor: U0SPONSOR, secret_env: SHOT_SECRET}]
workflows:
  - id: prod-restart
    owner: U0OWNER
    platform_owner: U0PLAT
    security_owner: U0SEC
    security_channel: C0SEC
    channel: C0APPROVALS
    agents: [deploy-bot]
    timeout: 30m
    escalation: [{after: 10m, to: [U0PLAT]}]
"""


def main(out: str) -> int:
    os.environ["SHOT_SECRET"] = "x"
    tmp = tempfile.mkdtemp()
    now = [datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)]
    rt = build(Settings(SIGNOFF_DATABASE_URL=f"sqlite:///{tmp}/s.db"), config=parse_config(YAML), clock=lambda: now[0])
    ctx = rt.context
    body = {
        "workflow": "prod-restart",
        "title": "Restart checkout-api <!channel>",
        "risk": "high",
        "action": {"type": "service.restart", "target": "checkout-api", "environment": "production"},
        "justification": "p99 latency doubled after the 14:02 deploy",
        "prompt": "fix checkout <script>x</script>",
        "rollback": {"description": "restart is idempotent"},
    }
    rid = submit(ctx, agent_id="deploy-bot", body=body).request["id"]
    msg_id = rt.store.read(lambda s: __import__("signoff.store.repo", fromlist=["Repo"]).Repo(s).messages(rid)[0].id)
    record_posted(ctx, message_id=msg_id, channel="C0APPROVALS", ts="1700000000.000100")
    decide(ctx, request_id=rid, user="U0SPONSOR", decision="approve", channel="C0APPROVALS")
    now[0] += timedelta(minutes=11)
    sweep(ctx)
    for i, (user, text) in enumerate(
        [
            ("U0OWNER", "Is the deploy rolled back already?"),
            ("U0PLAT", "No — restart first, then we look at the deploy."),
        ]
    ):
        record_thread_message(
            ctx,
            event={
                "type": "message",
                "channel": "C0APPROVALS",
                "user": user,
                "text": text,
                "ts": f"1700000100.00010{i}",
                "thread_ts": "1700000000.000100",
            },
            event_id=f"Ev{i}",
        )
    decide(ctx, request_id=rid, user="U0OWNER", decision="approve", channel="C0APPROVALS")
    get_request(ctx, agent_id="deploy-bot", request_id=rid)
    record_outcome(
        ctx, agent_id="deploy-bot", request_id=rid, body={"status": "failed", "detail": "2 of 6 pods crashlooping"}
    )
    html = Path(tmp) / "evidence.html"
    html.write_text(render_html(build_bundle(rt.store, ctx.keys, rid, now[0])), encoding="utf-8")
    cmd = [
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp}/chrome",
        "--window-size=1280,2400",
        f"--screenshot={os.path.abspath(out)}",
        html.as_uri(),
    ]
    subprocess.run(cmd, check=True, timeout=60, capture_output=True)
    print(f"wrote {out} from {html}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "evidence.png"))
