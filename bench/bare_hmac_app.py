"""The ceiling for ``POST /v1/actions``: a bare Starlette endpoint on the same server stack
as ``signoff serve`` (uvicorn, one worker, the same loop and HTTP parser choice) that only
checks the agent HMAC of contract §3 (``v1:<timestamp>:<raw body>``, 300 s window) and
answers 201. No JSON parsing, no validation, no database.

    BENCH_AGENT_ID=bench-bot BENCH_AGENT_SECRET=... python bench/bare_hmac_app.py --port 8099
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

MAX_BODY = 256 * 1024
WINDOW = 300


def build_app(agent_id: str, secret: bytes) -> Starlette:
    async def post_action(request: Request) -> JSONResponse:
        body = await request.body()
        if len(body) > MAX_BODY:
            return JSONResponse({"error": {"code": "payload_too_large"}}, status_code=413)
        h = request.headers
        agent, ts, sig = h.get("x-signoff-agent"), h.get("x-signoff-timestamp"), h.get("x-signoff-signature")
        if agent != agent_id or not ts or not sig:
            return JSONResponse({"error": {"code": "unauthorized"}}, status_code=401)
        try:
            ts_int = int(ts)
        except ValueError:
            return JSONResponse({"error": {"code": "unauthorized"}}, status_code=401)
        if abs(time.time() - ts_int) > WINDOW:
            return JSONResponse({"error": {"code": "unauthorized"}}, status_code=401)
        expected = "v1=" + hmac.new(secret, b"v1:" + ts.encode() + b":" + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), sig.strip().encode()):
            return JSONResponse({"error": {"code": "unauthorized"}}, status_code=401)
        return JSONResponse({"status": "accepted"}, status_code=201)

    async def healthz(_request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[Route("/v1/actions", post_action, methods=["POST"]), Route("/healthz", healthz, methods=["GET"])]
    )


def main() -> None:
    import uvicorn

    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--workers", type=int, default=1)
    args = p.parse_args()
    if args.workers > 1:  # uvicorn's own worker processes, sharing the port like `serve --workers`
        uvicorn.run(
            "bare_hmac_app:from_env",
            factory=True,
            app_dir=os.path.dirname(os.path.abspath(__file__)),
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level="warning",
            access_log=False,
        )
        return
    # The same uvicorn call as signoff.server.serve: one worker, loop/http "auto".
    uvicorn.run(from_env(), host=args.host, port=args.port, log_level="warning", access_log=False)


def from_env():
    return build_app(os.environ["BENCH_AGENT_ID"], os.environ["BENCH_AGENT_SECRET"].encode())


if __name__ == "__main__":
    main()
