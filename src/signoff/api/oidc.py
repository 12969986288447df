"""Workload identity: short-lived OIDC/JWT tokens instead of an HMAC secret."""

from __future__ import annotations

from signoff.domain.errors import Unauthorized
from signoff.usecases.ports import Context


def verify_bearer(ctx: Context, agent_hint: str | None, token: str) -> str:
    raise Unauthorized("bearer tokens are not accepted for this agent")
