"""compose.yaml: what `docker compose config` would check (services, images and builds,
ports, healthchecks, start order), that signoff reads every variable it is given, and,
with no Docker here, the same stack run as processes: the Slack stand-in, `signoff serve`
on PostgreSQL with compose's environment, an agent's request posted and approved."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from deploy.routes import get_routes  # noqa: F401  (a fixture)
from e2e.harness import SIGNOFF, Serve, base_env
from support import block_actions, free_port, signed_headers, slack_form, submission, wait_until

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
KEYS = {
    "image",
    "build",
    "command",
    "ports",
    "environment",
    "depends_on",
    "healthcheck",
    "volumes",
    "configs",
    "stop_grace_period",
}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def workflow_text(compose) -> str:
    (config,) = compose["services"]["signoff"]["configs"]
    return compose["configs"][config["source"]]["content"]


def healthcheck_url(service: dict) -> str:
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD"
    (url,) = re.findall(r"http://[^'\"]+", " ".join(test))
    return url


def test_services_and_their_images(compose):
    services = compose["services"]
    assert set(services) == {"postgres", "slack", "signoff"}
    for name, service in services.items():
        assert set(service) <= KEYS, (name, set(service) - KEYS)
        assert "image" in service or "build" in service, name
    assert re.fullmatch(r"postgres:\d+\.\d+-\w+", services["postgres"]["image"])  # a pinned release
    for name in ("slack", "signoff"):
        assert services[name]["build"] == "."  # the Dockerfile at the root
        assert services[name]["command"][0] == "signoff"
    assert (ROOT / "Dockerfile").is_file()


def test_every_service_has_a_healthcheck_and_signoff_waits_for_them(compose):
    services = compose["services"]
    for name, service in services.items():
        check = service["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        for key in ("interval", "timeout"):
            assert re.fullmatch(r"\d+s", check[key]), (name, key)
    assert services["signoff"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "slack": {"condition": "service_healthy"},
    }


def test_healthchecks_ask_the_real_routes(compose, get_routes):  # noqa: F811 - the fixture imported above
    signoff = compose["services"]["signoff"]
    url = httpx.URL(healthcheck_url(signoff))
    assert url.path in get_routes
    assert url.port == int(signoff["command"][signoff["command"].index("--port") + 1])
    slack = compose["services"]["slack"]
    url = httpx.URL(healthcheck_url(slack))
    assert url.port == int(slack["command"][slack["command"].index("--port") + 1])
    assert url.path == "/api/auth.test"


def test_ports_are_published_on_loopback_only(compose):
    for name in ("slack", "signoff"):
        service = compose["services"][name]
        (port,) = service["ports"]
        host, _published, target = port.split(":")
        assert host == "127.0.0.1"
        assert target == service["command"][service["command"].index("--port") + 1]


def test_signoff_reads_every_variable_it_is_given(compose):
    from signoff.config import parse_config
    from signoff.settings import Settings

    env = compose["services"]["signoff"]["environment"]
    known = {f.validation_alias for f in Settings.model_fields.values()} | {"SIGNOFF_WORKERS", "SIGNOFF_LOG_FORMAT"}
    agent_keys = {a.secret_env for a in parse_config(workflow_text(compose)).agents}
    assert set(env) - agent_keys <= known, set(env) - agent_keys - known
    assert agent_keys <= set(env)
    assert Settings(**env).config_path == compose["services"]["signoff"]["configs"][0]["target"]


def test_signoff_points_at_the_stand_in_and_postgres(compose):
    env = compose["services"]["signoff"]["environment"]
    slack = compose["services"]["slack"]
    url = httpx.URL(env["SIGNOFF_SLACK_API_URL"])
    assert url.host == "slack" and str(url.port) == slack["command"][slack["command"].index("--port") + 1]
    pg = compose["services"]["postgres"]["environment"]
    assert env["SIGNOFF_DATABASE_URL"] == (
        f"postgresql+psycopg://{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@postgres:5432/{pg['POSTGRES_DB']}"
    )


def test_the_workflow_file_passes_check_config(compose, tmp_path):
    path = tmp_path / "signoff.yaml"
    path.write_text(workflow_text(compose), encoding="utf-8")
    run = subprocess.run([*SIGNOFF, "check-config", str(path)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_stack_as_processes_takes_a_request_to_approval(compose, pg_url, tmp_path):
    """What `docker compose up` runs, without Docker: the services' commands with their
    environment, host names replaced by loopback and the database by a fresh one."""
    slack_port = free_port()
    standin_log = tmp_path / "standin.log"
    with open(standin_log, "wb") as out:
        standin = subprocess.Popen(
            [*SIGNOFF, "standin", "--port", str(slack_port)], env=base_env(), stdout=out, stderr=subprocess.STDOUT
        )
    server = None
    try:
        config = tmp_path / "signoff.yaml"
        config.write_text(workflow_text(compose), encoding="utf-8")
        env = {
            **base_env(),
            **compose["services"]["signoff"]["environment"],
            "SIGNOFF_DATABASE_URL": pg_url,
            "SIGNOFF_SLACK_API_URL": f"http://127.0.0.1:{slack_port}/api/",
            "SIGNOFF_CONFIG": str(config),
        }
        server = Serve(tmp_path, env, "compose").start()
        body = json.dumps(submission(workflow="prod-restart")).encode()
        headers = signed_headers("deploy-bot", env["DEPLOY_BOT_SECRET"], body)
        r = httpx.post(server.url + "/v1/actions", content=body, headers=headers, timeout=10)
        assert r.status_code == 201, r.text
        rid = r.json()["id"]
        posted = wait_until(
            lambda: [
                line
                for line in standin_log.read_text().splitlines()
                if line.startswith("chat.postMessage 200 ok channel=C0APPROVALS")
            ],
            timeout=20,
            what="the request posted to the stand-in",
        )
        ts = re.search(r" ts=(\S+)", posted[0])[1]
        form, slack_headers = slack_form(
            {"payload": json.dumps(block_actions(rid, "U0OWNER", ts=ts))}, env["SLACK_SIGNING_SECRET"]
        )
        assert (
            httpx.post(server.url + "/slack/events", content=form, headers=slack_headers, timeout=10).status_code == 200
        )

        def status():
            raw = b""
            got = httpx.get(
                f"{server.url}/v1/actions/{rid}",
                headers=signed_headers("deploy-bot", env["DEPLOY_BOT_SECRET"], raw),
                timeout=10,
            ).json()
            return got["status"] if got["status"] != "pending" else None

        assert wait_until(status, timeout=20, what="the decision") in ("approved", "executing")
        wait_until(
            lambda: f"chat.update 200 ok channel=C0APPROVALS ts={ts}" in standin_log.read_text(),
            timeout=20,
            what="the request's message updated with the decision",
        )
    finally:
        if server is not None:
            server.stop()
        standin.terminate()
        standin.wait(timeout=10)


def test_signoff_gets_time_to_stop_cleanly(compose):
    from signoff.server import GRACEFUL_SECONDS

    grace = compose["services"]["signoff"]["stop_grace_period"]
    assert re.fullmatch(r"\d+s", grace) and int(grace[:-1]) >= GRACEFUL_SECONDS + 10
