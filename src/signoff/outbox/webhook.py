"""Executor webhook delivery: a POST signed v1 and v2 (``v1=…,v2=…``, v2 over the
webhook URL's path and query), retried until 2xx or grant expiry."""

from __future__ import annotations

import json
import time

import httpx

from signoff.domain.agent_signature import sign_both
from signoff.outbox.dispatcher import GiveUp, Job, Retry
from signoff.store.repo import Repo
from signoff.usecases.deliver import mark_delivered, record_delivery_failure
from signoff.usecases.ports import Context


class WebhookDelivery:
    def __init__(self, ctx: Context, http: httpx.Client | None = None):
        self.ctx = ctx
        self.http = http or httpx.Client(timeout=5.0)

    def handlers(self) -> dict:
        return {"webhook.execute": self.execute}

    def execute(self, job: Job) -> None:
        rid = job.payload["request_id"]

        def read(session):
            req = Repo(session).get(rid)
            if req is None:
                return None
            return {
                "id": req.id,
                "action": req.action,
                "action_sha256": req.action_sha256,
                "grant": req.grant_token,
                "executor": req.executor,
                "status": req.status,
                "expires": req.grant_expires_at,
                "delivered": req.grant_delivered_at,
            }

        r = self.ctx.store.read(read)
        if r is None or not r["grant"]:
            raise GiveUp("request or grant gone")
        if r["delivered"] is not None:
            return
        now = self.ctx.clock()
        if r["expires"] and now >= r["expires"]:
            record_delivery_failure(self.ctx, request_id=rid, reason="grant expired before the executor answered 2xx")
            raise GiveUp("grant expired before delivery")
        body = json.dumps(
            {"id": r["id"], "action": r["action"], "action_sha256": r["action_sha256"], "grant": r["grant"]},
            separators=(",", ":"),
        ).encode()
        secret = self.ctx.config().agent_secret(r["executor"]) or b""
        ts = str(int(time.time()))
        try:
            url = httpx.URL(job.payload["url"])
        except httpx.InvalidURL as exc:
            raise GiveUp(f"invalid webhook URL: {exc}") from None
        # url.raw_path is the path and ?query exactly as httpx puts them on the wire.
        headers = {
            "Content-Type": "application/json",
            "X-Signoff-Agent": "signoff",
            "X-Signoff-Timestamp": ts,
            "X-Signoff-Signature": sign_both(secret, ts, "POST", url.raw_path, body),
            "Idempotency-Key": r["id"],
        }
        try:
            resp = self.http.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise Retry(f"executor unreachable: {exc}") from None
        if 200 <= resp.status_code < 300:
            mark_delivered(
                self.ctx, request_id=rid, detail={"http_status": resp.status_code, "attempts": job.attempts + 1}
            )
            return
        after = None
        if resp.status_code == 429 and resp.headers.get("Retry-After", "").isdigit():
            after = float(resp.headers["Retry-After"])
        raise Retry(f"executor answered {resp.status_code}", after=after)
