"""Test doubles for the services signoff talks to (a fake Slack Web API, ...)."""
