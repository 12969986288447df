"""Three ``signoff serve`` processes on one PostgreSQL database, real clock, fake Slack.

Every escalation step is posted exactly once per request, every request expires exactly
once, and a click sent to one replica for a request submitted through another works.
Skipped unless SIGNOFF_TEST_POSTGRES_URL is set.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import create_engine, select

from conftest import PG_ENV
from e2e.harness import (
    Serve,
    all_expired_and_delivered,
    ladder_yaml,
    pem_key,
    request_of,
    serve_env,
    submit,
    top_level_posts,
)
from fakes.slack_api import FakeSlack
from signoff.demo.slack_standin import dm_channel
from signoff.store.tables import EventRow
from support import ROUTING, wait_until

pytestmark = pytest.mark.skipif(not os.environ.get(PG_ENV), reason=f"{PG_ENV} is not set: replica test skipped")

N_REQUESTS = 30

YAML = (
    ladder_yaml("3s")
    + f"""\
  - id: slow
{ROUTING}\
    agents: [deploy-bot]
    timeout: 10m
"""
)


def get_request(server: Serve, rid: str) -> dict:
    r = server.agent("GET", f"/v1/actions/{rid}", "deploy-bot")
    assert r.status_code == 200, r.text
    return r.json()


# ---------------------------------------------------------------- the test


def test_three_replicas_post_each_step_once_and_expire_each_request_once(tmp_path, pg_url):
    config = tmp_path / "signoff.yaml"
    config.write_text(YAML)
    with FakeSlack() as slack:
        env = serve_env(db_url=pg_url, slack_url=slack.url, config=config, SIGNOFF_SIGNING_KEY=pem_key())
        servers = [Serve(tmp_path, env, f"replica{i}") for i in range(3)]
        engine = create_engine(pg_url)
        try:
            for s in servers:
                s.launch()
            for s in servers:
                s.wait_ready()

            # A request submitted through replica 0 is approved by a click sent to replica 1,
            # and replica 2 hands out its grant.
            slow = submit(servers[0], "slow", 0)
            root = wait_until(
                lambda: [c for c in top_level_posts(slack) if request_of(c) == slow],
                15,
                "the slow request's root post",
                0.1,
            )[0]
            assert root.params["channel"] == "C0APPROVALS"
            resp = servers[1].click(slow, "U0OWNER", root.response["channel"])
            assert resp.status_code == 200, resp.text
            view = wait_until(
                lambda: (v := get_request(servers[2], slow))["status"] != "pending" and v,
                15,
                "the click to take effect",
                0.1,
            )
            assert view["status"] in ("approved", "executing")
            assert [d["by"] for d in view["decisions"]] == ["U0OWNER"]
            assert view["grant"]

            # Many requests with second-scale ladders, spread over the three replicas.
            with ThreadPoolExecutor(8) as pool:
                ids = list(pool.map(lambda n: submit(servers[n % 3], "ladder", n), range(N_REQUESTS)))

            wait_until(
                lambda: all_expired_and_delivered(engine, ids),
                60,
                "every request to expire and every message to be delivered",
                0.2,
            )
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
                rows = conn.execute(
                    select(EventRow.request_id, EventRow.type, EventRow.data).where(EventRow.request_id.in_(ids))
                ).all()
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
