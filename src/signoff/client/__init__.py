"""The agent's side of signoff: a client for the agent API, and grant verification.

    from signoff.client import Client

    with Client() as signoff:                    # SIGNOFF_URL, SIGNOFF_AGENT, SIGNOFF_AGENT_SECRET
        req = signoff.submit("prod-restart", "Restart checkout-api",
                             {"type": "service.restart", "target": "checkout-api"},
                             "p99 latency doubled after the deploy")
        req = signoff.wait(req["id"])            # until someone decides in Slack

This package imports no part of the server (no web framework, database or Slack library).
"""

from signoff.client.aio import AsyncClient
from signoff.client.errors import Cancelled, Expired, InvalidGrant, Rejected, SignoffError, Unanswered, WaitTimeout
from signoff.client.grants import action_sha256, verify_grant
from signoff.client.sync import Client

__all__ = [
    "AsyncClient",
    "Cancelled",
    "Client",
    "Expired",
    "InvalidGrant",
    "Rejected",
    "SignoffError",
    "Unanswered",
    "WaitTimeout",
    "action_sha256",
    "verify_grant",
]
