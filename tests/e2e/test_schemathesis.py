"""schemathesis against a live `signoff serve`, every request signed (v2) like an agent's:
whatever the generated input, no 5xx, and every answer matches the OpenAPI document
(status codes, content types, bodies)."""

from __future__ import annotations

import json
import time

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from signoff.domain.agent_signature import sign_v2
from support import agent_secret, submission

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
AGENT = "deploy-bot"


def _signed_call(client: httpx.Client, case, base_url: str) -> httpx.Response:
    kwargs = case.as_transport_kwargs(base_url=base_url)
    raw = b""
    if "json" in kwargs:
        raw = json.dumps(kwargs.pop("json")).encode()
    elif kwargs.get("data") is not None or kwargs.get("content") is not None:
        data = kwargs.pop("data", None) or kwargs.pop("content", None)
        raw = data if isinstance(data, bytes) else str(data).encode()
    headers = {k: v for k, v in (kwargs.get("headers") or {}).items() if not k.lower().startswith("x-signoff")}
    headers["Content-Type"] = "application/json"
    request = client.build_request(
        kwargs["method"], kwargs["url"], params=kwargs.get("params"), content=raw, headers=headers
    )
    ts = str(int(time.time()))
    target = request.url.raw_path.decode("ascii")
    request.headers.update(
        {
            "X-Signoff-Agent": AGENT,
            "X-Signoff-Timestamp": ts,
            "X-Signoff-Signature": sign_v2(agent_secret(AGENT).encode(), ts, request.method, target, raw),
        }
    )
    return client.send(request)


@pytest.mark.timeout(300)
def test_the_live_api_keeps_its_openapi_promises(agent_world):
    base = agent_world.server.url
    schema = schemathesis.openapi.from_url(base + "/openapi.json")
    # a real request, so that generated ids sometimes name one that exists
    with httpx.Client(timeout=10) as client:
        body = json.dumps(submission(title="schemathesis target")).encode()
        ts = str(int(time.time()))
        created = client.post(
            base + "/v1/actions",
            content=body,
            headers={
                "X-Signoff-Agent": AGENT,
                "X-Signoff-Timestamp": ts,
                "Content-Type": "application/json",
                "X-Signoff-Signature": sign_v2(agent_secret(AGENT).encode(), ts, "POST", "/v1/actions", body),
            },
        )
        assert created.status_code == 201, created.text
        tested = 0
        for result in schema.get_all_operations():
            operation = result.ok()
            if not operation.path.startswith("/v1/"):
                continue

            @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy())
            def check(case):
                if "request_id" in (case.path_parameters or {}) and hash(str(case.path_parameters)) % 3 == 0:
                    case.path_parameters["request_id"] = created.json()["id"]
                if isinstance((case.query or {}).get("wait"), int):
                    case.query["wait"] = 1  # a long-poll on a pending request would hold each case for its whole wait
                response = _signed_call(client, case, base)
                case.validate_response(response, checks=CHECKS)

            check()
            tested += 1
        assert tested == 5
