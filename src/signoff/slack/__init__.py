"""Slack adapter: Bolt listeners, the verified endpoint, rendering, the directory."""
