"""The demo's sample workflow file and submission, in one place: ``signoff demo`` runs
them, and the tests and benches build their own files and bodies from the same pieces.

The people and channels are made-up Slack ids: ``U0SPONSOR`` sponsors the agent
``deploy-bot``, ``U0OWNER`` owns the workflow ``prod-restart``, whose requests are posted
to ``C0APPROVALS``.
"""

from __future__ import annotations

import copy

AGENT = "deploy-bot"
WORKFLOW = "prod-restart"
CHANNEL = "C0APPROVALS"
SPONSOR = "U0SPONSOR"
OWNER = "U0OWNER"

# The demo agent's secret, and the variable its workflow file names for it.
AGENT_SECRET = "demo-agent-secret"
AGENT_SECRET_ENV = "SIGNOFF_DEMO_AGENT_SECRET"
# The demo's Slack app signing secret (its clicks are signed with it).
SIGNING_SECRET = "demo-slack-signing-secret"

# the owners of a workflow and where its requests are posted (a workflow entry's lines)
ROUTING = f"""\
    owner: {OWNER}
    platform_owner: U0PLAT
    security_owner: U0SEC
    security_channel: C0SEC
    channel: {CHANNEL}
"""


def agent_entry(secret_env: str, *, signature: str | None = None) -> str:
    """The ``agents:`` entry of ``deploy-bot`` (sponsor ``U0SPONSOR``), its secret read
    from ``secret_env``; ``signature`` ("v2") pins the signature version it must use."""
    lines = f"  - id: {AGENT}\n    sponsor: {SPONSOR}\n    secret_env: {secret_env}\n"
    if signature is not None:
        lines += f"    signature: {signature}                # v1 signatures from this agent are refused\n"
    return lines


def workflow_yaml(webhook: str) -> str:
    """The demo's workflow file: ``prod-restart``, approved by one of the owner and the
    sponsor (the sponsor is always refused: separation of duties), escalated after 10
    minutes, executed by the webhook at ``webhook``."""
    return f"""\
agents:
{agent_entry(AGENT_SECRET_ENV, signature="v2")}\
workflows:
  - id: {WORKFLOW}
    description: Restart production services
{ROUTING}\
    approvers: [{OWNER}, {SPONSOR}]
    required_approvals: 1
    agents: [{AGENT}]
    timeout: 30m
    escalation:
      - after: 10m
        to: [U0PLAT]
    execution:
      webhook: {webhook}
      grant_ttl: 10m
"""


_ASK = {
    "workflow": WORKFLOW,
    "title": "Restart checkout-api in prod-eu",
    "action": {
        "type": "service.restart",
        "target": "checkout-api",
        "environment": "production",
        "parameters": {"graceful": True},
    },
    "justification": "p99 latency doubled after the 14:02 deploy",
}


def submission(**fields) -> dict:
    """What the sample agent asks (restart checkout-api in production, in ``prod-restart``):
    workflow, title, action and justification, then ``fields`` added or replacing them. A
    fresh copy each call."""
    return {**copy.deepcopy(_ASK), **fields}


def demo_submission() -> dict:
    """The demo's submission: the sample, high risk, with the agent's prompt and a rollback plan."""
    return submission(
        prompt="Checkout is slow since the last deploy. Find out why and fix it. <!channel>",
        risk="high",
        rollback={"description": "no rollback needed: restart is idempotent"},
    )
