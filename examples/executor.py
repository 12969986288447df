"""An executor that runs an approved request only with a grant that holds (pull mode).

    python examples/executor.py REQUEST_ID

As the executor agent (SIGNOFF_URL, SIGNOFF_AGENT, SIGNOFF_AGENT_SECRET), it fetches the
request — for an approved one that is what hands over the grant — checks the grant with
``verify_grant`` against the server's published keys (signature, expiry, issuer, this
executor, this request, and the hash of the very action it is about to run), runs the
action and reports the outcome. Exit 0 when it ran, 1 when there was nothing to run,
2 when the grant did not hold.
"""

from __future__ import annotations

import json
import os
import sys

from signoff.client import Client, InvalidGrant, verify_grant


def run(action: dict) -> str:
    # The real work goes here.
    return f"ran {action['type']} on {action['target']}"


def main(argv: list[str]) -> int:
    request_id = argv[1]
    with Client() as signoff:
        request = signoff.get(request_id)
        if request["status"] not in ("approved", "executing") or not request.get("grant"):
            print(f"nothing to run: request {request_id} is {request['status']}", file=sys.stderr)
            return 1
        action = request["action"]  # in a real executor: the action it is about to run, from its own input
        try:
            claims = verify_grant(
                request["grant"],
                action,
                jwks_url=os.environ["SIGNOFF_URL"].rstrip("/") + "/.well-known/jwks.json",
                executor=signoff.agent,
                request_id=request_id,
            )
        except InvalidGrant as exc:
            signoff.outcome(request_id, "failed", f"not run: {exc}")
            print(f"refused: {exc}", file=sys.stderr)
            return 2
        try:
            detail = run(action)
        except Exception as exc:
            signoff.outcome(request_id, "failed", str(exc))
            raise
        done = signoff.outcome(request_id, "succeeded", detail)
        print(json.dumps({"claims": claims, "status": done["status"], "detail": detail}))
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
