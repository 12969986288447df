"""The policy package is pure: importing it loads no database, Slack, HTTP or web module,
and none of the layers above it (use-cases, store, adapters)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import signoff

HEAVY = ["fastapi", "starlette", "sqlalchemy", "slack_bolt", "slack_sdk", "httpx", "jwt", "alembic", "uvicorn"]
ABOVE = (
    "signoff.usecases",
    "signoff.store",
    "signoff.api",
    "signoff.slack",
    "signoff.outbox",
    "signoff.cli",
    "signoff.server",
    "signoff.bootstrap",
    "signoff.settings",
)


def test_importing_the_policy_package_imports_nothing_with_io():
    code = (
        "import sys, json; "
        "import signoff.policy.rules, signoff.policy.windows, signoff.policy.evaluate, "
        "signoff.policy.execute, signoff.policy.explain; "
        "print(json.dumps(sorted(sys.modules)))"
    )
    src = str(Path(signoff.__file__).resolve().parents[1])  # this checkout's package, installed or not
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    modules = json.loads(out)
    assert [m for m in modules if m.split(".")[0] in HEAVY] == []
    assert [m for m in modules if m.startswith(ABOVE)] == []
