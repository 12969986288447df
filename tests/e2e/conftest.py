"""Fixtures of the end-to-end tests."""

from __future__ import annotations

import pytest

from e2e.client_world import World, start_world
from fakes.slack_api import FakeSlack


@pytest.fixture(scope="session")
def agent_world(tmp_path_factory) -> World:
    """One ``signoff serve`` shared by the agent-side tests (each uses its own titles)."""
    with FakeSlack() as slack:
        world = start_world(tmp_path_factory.mktemp("agent-side"), slack)
        try:
            yield world
        finally:
            world.server.stop()
