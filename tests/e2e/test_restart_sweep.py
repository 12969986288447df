"""Kill ``signoff serve`` (SIGKILL) while escalation steps and expiries are due, start it
again, and see each owed step and each expiry happen exactly once, late but in order.
SQLite, real clock, second-scale timeouts.
"""

from __future__ import annotations

import time
from collections import Counter

from sqlalchemy import create_engine, func, select

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
from signoff.store.tables import EventRow, RequestRow
from support import wait_until

N_REQUESTS = 8

YAML = ladder_yaml("4s")


def test_owed_steps_and_expiries_happen_once_after_a_crash(tmp_path):
    config = tmp_path / "signoff.yaml"
    config.write_text(YAML)
    db_url = f"sqlite:///{tmp_path / 'signoff.db'}"
    engine = create_engine(db_url)
    with FakeSlack() as slack:
        env = serve_env(db_url=db_url, slack_url=slack.url, config=config, SIGNOFF_SIGNING_KEY=pem_key())
        first = Serve(tmp_path, env, "before-crash")
        second = Serve(tmp_path, env, "after-restart")
        try:
            first.start()
            ids = [submit(first, "ladder", n) for n in range(N_REQUESTS)]
            submitted = time.monotonic()

            # Step one reaches everyone; then the process dies with step two and the
            # expiry still to come.
            wait_until(
                lambda: (
                    sum(1 for c in top_level_posts(slack) if c.response["channel"] == dm_channel("U0ESCONE"))
                    >= N_REQUESTS
                ),
                15,
                "the first escalation step to be posted",
                0.1,
            )
            first.kill()
            with engine.connect() as conn:
                pending = conn.scalar(
                    select(func.count()).select_from(RequestRow).where(RequestRow.status == "pending")
                )
            assert pending == N_REQUESTS, "the crash came too late to leave work owed"

            # Down past every request's deadline.
            time.sleep(max(0.0, 4.3 - (time.monotonic() - submitted)))
            second.start()

            wait_until(
                lambda: all_expired_and_delivered(engine, ids), 60, "the owed steps and expiries after the restart", 0.2
            )
            time.sleep(0.5)

            posts = Counter((request_of(c), c.response["channel"]) for c in top_level_posts(slack))
            for rid in ids:
                for channel in ("C0APPROVALS", dm_channel("U0ESCONE"), dm_channel("U0ESCTWO"), "C0SEC"):
                    assert posts[(rid, channel)] == 1, (rid, channel, posts)

            with engine.connect() as conn:
                rows = conn.execute(
                    select(EventRow.request_id, EventRow.seq, EventRow.type, EventRow.data).order_by(
                        EventRow.request_id, EventRow.seq
                    )
                ).all()
            for rid in ids:
                mine = [r for r in rows if r.request_id == rid and r.type in ("escalation.fired", "request.expired")]
                assert [(r.type, r.data.get("step")) for r in mine] == [
                    ("escalation.fired", 0),
                    ("escalation.fired", 1),
                    ("request.expired", None),
                ], rid
                # what fell due while the process was down is recorded as late
                assert mine[1].data["late_seconds"] > 0
                assert mine[2].data["late_seconds"] > 0
        finally:
            first.stop()
            second.stop()
            engine.dispose()
