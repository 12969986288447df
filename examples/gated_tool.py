"""A tool function that asks for approval before each call, with ``require_approval``.

Run it as the agent (SIGNOFF_URL, SIGNOFF_AGENT, SIGNOFF_AGENT_SECRET set):

    python examples/gated_tool.py checkout-api

It submits the restart to the workflow ``prod-restart``, waits for someone to approve it in
Slack, checks the grant, runs ``restart_service`` and reports the outcome. It prints what
happened and exits 0 when the function ran, 3 rejected, 4 expired, 5 cancelled.
"""

from __future__ import annotations

import sys

from signoff.client import Cancelled, Client, Expired, Rejected

signoff = Client()


@signoff.require_approval(
    "prod-restart",
    title=lambda service: f"Restart {service} in production",
    justification="p99 latency doubled after the last deploy",
    action=lambda service: {
        "type": "service.restart",
        "target": service,
        "environment": "production",
        "parameters": {"graceful": True},
    },
    rollback="A restart is idempotent; nothing to undo.",
    timeout=120,
)
def restart_service(service: str) -> str:
    # The real work goes here; it runs only with a valid grant for exactly this action.
    return f"{service} restarted"


def main(argv: list[str]) -> int:
    service = argv[1] if len(argv) > 1 else "checkout-api"
    try:
        print(restart_service(service))
        return 0
    except Rejected as exc:
        print(f"rejected: {exc}")
        return 3
    except Expired as exc:
        print(f"expired: {exc}")
        return 4
    except Cancelled as exc:
        print(f"cancelled: {exc}")
        return 5
    finally:
        signoff.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
