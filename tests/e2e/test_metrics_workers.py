"""`/metrics` with `serve --workers 2`: whichever worker answers a scrape, the counters are
the service's (summed over the workers), and the latency histograms are there."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import httpx

from e2e.harness import Serve, serve_env, submit
from fakes.slack_api import FakeSlack
from support import ONE_WORKFLOW_YAML, wait_until

CONFIG = ONE_WORKFLOW_YAML


def _sample(text: str, name: str, labels: str = "") -> float | None:
    pattern = re.escape(name) + (r"\{" + labels + r"\}" if labels else r"(\{[^}]*\})?") + r" ([0-9.e+-]+)$"
    values = [float(m.group(m.lastindex)) for m in re.finditer(pattern, text, re.M)]
    return sum(values) if values else None


def test_counters_are_summed_over_workers_and_histograms_exist(tmp_path):
    (tmp_path / "signoff.yaml").write_text(CONFIG)
    n = 24
    with FakeSlack() as slack:
        env = serve_env(
            db_url=f"sqlite:///{tmp_path / 'signoff.db'}", slack_url=slack.url, config=tmp_path / "signoff.yaml"
        )
        server = Serve(tmp_path, env, "metrics", ("--workers", "2"))
        try:
            server.start()
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda i: submit(server, "prod-restart", i), range(n)))
            wait_until(
                lambda: len([c for c in slack.calls_to("chat.postMessage") if c.ok]) >= n, 20, "every request posted"
            )
            unsigned = httpx.post(server.url + "/v1/actions", content=b"{}", timeout=5)
            assert unsigned.status_code == 401
            for _ in range(12):  # new connections: the kernel spreads them over both workers
                r = httpx.get(server.url + "/metrics", timeout=5, headers={"Connection": "close"})
                assert r.status_code == 200
                text = r.text
                assert _sample(text, "signoff_requests_submitted_total", 'workflow="prod-restart"') == n, text
                assert _sample(text, "signoff_auth_refused_total") == 1
                assert _sample(text, "signoff_pending_requests", 'workflow="prod-restart"') == n
                assert _sample(text, "signoff_slack_call_seconds_count", 'method="chat.postMessage",outcome="ok"') >= n
                assert _sample(text, "signoff_outbox_delivery_lag_seconds_count", 'kind="slack.post"') >= n
                assert "signoff_sweep_seconds_bucket" in text
        finally:
            server.stop()
