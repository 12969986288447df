"""`signoff serve --log-format json`: every line is one JSON object; start-up names the
workflow file, the database (no password) and the schema; libraries stay quiet at INFO;
a line about a request carries its id."""

from __future__ import annotations

import json

from e2e.harness import Serve, serve_env
from fakes.slack_api import FakeSlack
from support import ONE_WORKFLOW_YAML, submission, wait_until

CONFIG = ONE_WORKFLOW_YAML

NOISE = (
    "alembic.runtime.plugins",
    "Adding job tentatively",
    "will be ignored",
    "will be unused",
    "Context impl",
    "Will assume non-transactional DDL",
)


def _lines(server: Serve) -> list[dict]:
    out = []
    for line in server.output().splitlines():
        assert line.strip(), "no blank lines"
        out.append(json.loads(line))  # every line parses, or this fails naming it
    return out


def test_json_logs_startup_line_quiet_libraries_and_request_ids(tmp_path):
    (tmp_path / "signoff.yaml").write_text(CONFIG)
    with FakeSlack() as slack:
        env = serve_env(
            db_url=f"sqlite:///{tmp_path / 'signoff.db'}", slack_url=slack.url, config=tmp_path / "signoff.yaml"
        )
        server = Serve(tmp_path, env, "json", ("--log-format", "json"))
        try:
            slack.fail_next("chat.postMessage", times=1, status=500)
            server.start()
            r = server.agent("POST", "/v1/actions", "deploy-bot", submission())
            assert r.status_code == 201, r.text
            rid = r.json()["id"]
            wait_until(lambda: any(c.ok for c in slack.calls_to("chat.postMessage")), 10, "the post after a retry")
        finally:
            server.stop()
        lines = _lines(server)
    assert lines and all({"ts", "level", "logger", "message"} <= set(x) for x in lines)
    text = "\n".join(x["message"] for x in lines)
    for noise in NOISE:
        assert noise not in text, f"noisy library line at INFO: {noise!r}"
    (start,) = [x for x in lines if "workflow file" in x["message"] and "serving" in x["message"]]
    assert str(tmp_path / "signoff.yaml") in start["message"]
    assert "1 agent(s), 1 workflow(s)" in start["message"] and "schema revision" in start["message"]
    about = [x for x in lines if x.get("request_id") == rid]
    assert about, "the failed Slack call is logged with the request's id"
    assert all(x["level"] in ("debug", "info", "warning", "error", "critical") for x in lines)
    assert "xoxb" not in server.output() and "deploy-secret" not in server.output()


def test_the_startup_line_hides_the_database_password():
    from types import SimpleNamespace

    from signoff.config import parse_config
    from signoff.server import startup_line

    class Holder:
        path = "/etc/signoff/signoff.yaml"

        def __call__(self):
            return parse_config(CONFIG)

    class Engine:
        pass

    rt = SimpleNamespace(
        config=Holder(),
        settings=SimpleNamespace(database_url="postgresql+psycopg://signoff:hunter2@db:5432/signoff"),
        store=SimpleNamespace(engine=Engine()),
    )
    line = startup_line(rt, "http://0.0.0.0:8080")
    assert "hunter2" not in line and "signoff:***@db:5432/signoff" in line
    assert "/etc/signoff/signoff.yaml (1 agent(s), 1 workflow(s))" in line
