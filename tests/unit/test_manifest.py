"""manifests/slack-app.yaml is a valid Slack app manifest for the contract's Slack surface.

The schema in tests/data is Slack's published app manifest JSON Schema (draft-07), version
1.0.0, copied unchanged from slackapi/manifest-schema (commit c50cfa8; MIT licence, see
tests/data/slack-manifest.LICENSE) so that the test runs offline. The schema knows neither
event nor scope names, hence the explicit checks below.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "manifests" / "slack-app.yaml"
SCHEMA = ROOT / "tests" / "data" / "slack-manifest.schema.1.0.0.json"
ENDPOINT_PATH = "/slack/events"


@pytest.fixture(scope="module")
def manifest() -> dict:
    return yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))


def test_manifest_validates_against_slack_schema(manifest):
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(manifest), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_slash_command(manifest):
    (command,) = [c for c in manifest["features"]["slash_commands"] if c["command"] == "/signoff"]
    assert command["url"].endswith(ENDPOINT_PATH)
    assert command["usage_hint"] == "pending | show ID | exceptions"
    assert command["description"]


def test_events_interactivity_and_home(manifest):
    settings = manifest["settings"]
    events = settings["event_subscriptions"]
    assert {"message.channels", "message.groups", "message.im", "app_home_opened"} <= set(events["bot_events"])
    assert events["request_url"].endswith(ENDPOINT_PATH)
    assert settings["interactivity"]["is_enabled"] is True
    assert settings["interactivity"]["request_url"].endswith(ENDPOINT_PATH)
    assert settings["socket_mode_enabled"] is False
    assert manifest["features"]["app_home"]["home_tab_enabled"] is True
    assert manifest["features"]["bot_user"]["display_name"]


def test_bot_scopes(manifest):
    needed = {
        "chat:write",
        "chat:write.public",
        "im:write",
        "im:history",
        "channels:history",
        "groups:history",
        "usergroups:read",
        "users:read",
        "users:read.email",
        "commands",
        "channels:read",
        "groups:read",
    }
    assert needed <= set(manifest["oauth_config"]["scopes"]["bot"])
