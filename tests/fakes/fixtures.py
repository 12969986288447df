"""Pytest fixtures for the fakes. Enable with ``pytest_plugins = ["fakes.fixtures"]``
in a conftest, or import the fixture into a test module."""

from __future__ import annotations

import pytest

from fakes.slack_api import FakeSlack


@pytest.fixture
def fake_slack():
    """A running fake Slack Web API; its ``url`` is the ``WebClient`` base_url."""
    with FakeSlack() as slack:
        yield slack
