"""SIGTERM under load on PostgreSQL: the replica finishes what it started, hands back the
outbox rows it holds, exits promptly, and the other replica delivers the rest at once —
every accepted request posted exactly once. Skipped unless SIGNOFF_TEST_POSTGRES_URL is set."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from conftest import PG_ENV
from e2e.harness import Serve, pem_key, request_of, serve_env, top_level_posts
from fakes.slack_api import FakeSlack
from support import ONE_WORKFLOW_YAML, submission, wait_until

pytestmark = pytest.mark.skipif(not os.environ.get(PG_ENV), reason=f"{PG_ENV} is not set: replica test skipped")

YAML = ONE_WORKFLOW_YAML
N = 80


def test_sigterm_under_load_loses_nothing_and_the_other_replica_takes_over(tmp_path, pg_url):
    config = tmp_path / "signoff.yaml"
    config.write_text(YAML)
    with FakeSlack() as slack:
        slack.delay = 0.15  # a slow Slack: the outbox holds a backlog when the signal comes
        env = serve_env(db_url=pg_url, slack_url=slack.url, config=config, SIGNOFF_SIGNING_KEY=pem_key())
        a, b = Serve(tmp_path, env, "a"), Serve(tmp_path, env, "b")
        try:
            a.launch()
            b.launch()
            a.wait_ready()
            b.wait_ready()
            accepted: list[str] = []

            def one(i: int) -> None:
                body = submission(title=f"graceful {i}")
                key = {"Idempotency-Key": f"graceful-{i}"}
                server, give_up = (a if i % 2 else b), time.monotonic() + 20
                while time.monotonic() < give_up:  # a well-behaved agent retries, elsewhere if need be
                    try:
                        r = server.agent("POST", "/v1/actions", "deploy-bot", body, headers=key)
                    except httpx.HTTPError:
                        server = b
                        continue
                    if r.status_code in (200, 201):
                        accepted.append(r.json()["id"])
                        return
                    server = b
                    time.sleep(0.1)

            with ThreadPoolExecutor(16) as pool:
                futures = [pool.submit(one, i) for i in range(N)]
                wait_until(lambda: len(accepted) >= N // 2, 20, "half the submissions accepted")
                wait_until(lambda: top_level_posts(slack), 10, "deliveries under way")
                a.proc.send_signal(signal.SIGTERM)
                stopped_at = time.monotonic()
                for f in futures:
                    f.result()
            a.proc.wait(timeout=25)
            took = time.monotonic() - stopped_at
            assert a.proc.returncode == 0, a.output()
            assert took < 20, f"SIGTERM took {took:.1f} s"
            assert "released" in a.output() or "handing the rest back" in a.output()

            ids = set(accepted)
            assert len(ids) == N, f"{len(ids)} of {N} accepted"

            def all_posted():
                return ids <= {request_of(c) for c in top_level_posts(slack)}

            # the lease is 10 s: well before that, the handed-back rows are delivered by b
            handover = time.monotonic()
            wait_until(all_posted, 30, "every accepted request posted")
            assert time.monotonic() - handover < 9, "the rows were not handed back (waited for the lease)"
            time.sleep(1.0)
            counts = Counter(request_of(c) for c in top_level_posts(slack))
            assert all(counts[i] == 1 for i in ids), {k: v for k, v in counts.items() if v != 1}
            assert "Traceback" not in a.output() + b.output()
        finally:
            a.stop()
            b.stop()
