"""The real app's GET routes, as a fixture the deploy tests import (a conftest.py here
would shadow the top-level one that other tests import by name)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def get_routes(tmp_path_factory) -> set[str]:
    """The paths the real HTTP app answers GET on, built the way ``serve`` builds it."""
    from signoff.server import build_service
    from support import runtime

    db = tmp_path_factory.mktemp("routes") / "signoff.db"
    rt = runtime(f"sqlite:///{db}", SLACK_BOT_TOKEN="xoxb-test", SLACK_SIGNING_SECRET="secret")
    try:
        app = build_service(rt).app
        return {route.path for route in app.routes if "GET" in (getattr(route, "methods", None) or ())}
    finally:
        rt.context.store.dispose()
