"""``signoff serve`` logs a WARNING at start, and again on SIGHUP, for an agent whose
``secret_env`` is unset: naming the agent and the variable, never a value."""

from __future__ import annotations

import signal

from e2e.harness import Serve, serve_env
from support import BASIC_YAML, wait_until


def test_serve_warns_of_an_unset_agent_secret_at_start_and_on_reload(tmp_path, fake_slack):
    (tmp_path / "signoff.yaml").write_text(BASIC_YAML)
    env = serve_env(
        db_url=f"sqlite:///{tmp_path / 'signoff.db'}", slack_url=fake_slack.url, config=tmp_path / "signoff.yaml"
    )
    del env["OUTSIDER_SECRET"]
    server = Serve(tmp_path, env, "warn")
    try:
        server.start()

        def warnings() -> list[str]:
            return [line for line in server.output().splitlines() if " WARNING " in line and "OUTSIDER_SECRET" in line]

        assert len(wait_until(warnings, 10, "the warning at start")) == 1
        line = warnings()[0]
        assert "'outsider'" in line and "agents[2].secret_env" in line
        assert not any(secret in server.output() for secret in ("deploy-secret", "other-secret"))
        server.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: len(warnings()) == 2, 10, "the warning after SIGHUP")
        assert "DEPLOY_BOT_SECRET" not in server.output()  # set: no warning
    finally:
        server.stop()
