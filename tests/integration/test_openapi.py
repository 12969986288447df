"""`/openapi.json` is a valid OpenAPI 3.1 document that tells the truth about the agent API:
request bodies from the models that validate them, the real status codes and error shape;
`/docs` renders it without fetching anything."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from openapi_spec_validator import validate

from signoff.api.app import create_app
from signoff.usecases.ports import system_clock
from support import runtime


@pytest.fixture
def client(sqlite_url, monkeypatch):
    rt = runtime(sqlite_url, clock=system_clock, monkeypatch=monkeypatch)
    c = TestClient(create_app(rt.context), raise_server_exceptions=False)
    yield c
    c.close()
    rt.store.dispose()


def test_the_document_is_valid_openapi_3_1(client):
    doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    validate(doc)


def test_operations_carry_the_real_bodies_statuses_and_error_shape(client):
    doc = client.get("/openapi.json").json()
    submit = doc["paths"]["/v1/actions"]["post"]
    assert submit["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/Submission")
    assert {"201", "200", "401", "403", "404", "413", "422", "503"} <= set(submit["responses"])
    assert "200" in submit["responses"] and submit["responses"]["201"]["content"]
    schemas = doc["components"]["schemas"]
    sub = schemas["Submission"]
    assert set(sub["required"]) >= {"workflow", "title", "action", "justification"}
    assert sub["properties"]["title"]["maxLength"] == 200 and sub.get("additionalProperties") is False
    err = schemas["Error"]["properties"]["error"]
    assert err["$ref"].endswith("/ErrorDetail")
    assert set(schemas["ErrorDetail"]["required"]) == {"code", "message"}
    for path in (
        "/v1/actions/{request_id}/cancel",
        "/v1/actions/{request_id}/outcome",
        "/v1/actions/{request_id}/comments",
    ):
        (op,) = doc["paths"][path].values()
        assert "409" in op["responses"] and op["security"]
    wait = {p["name"]: p for p in doc["paths"]["/v1/actions/{request_id}"]["get"]["parameters"]}
    assert wait["wait"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 60}
    assert doc["paths"]["/healthz"]["get"]["security"] == []
    assert set(doc["components"]["securitySchemes"]) == {"agentName", "agentTimestamp", "agentSignature"}


def test_the_schema_of_a_submission_is_the_one_that_validates_it(client):
    """What the document says is required is what the API refuses without."""
    from signoff.schemas import Submission

    doc = client.get("/openapi.json").json()
    assert doc["components"]["schemas"]["Submission"]["required"] == Submission.model_json_schema()["required"]


def test_docs_page_is_self_contained(client):
    r = client.get("/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "/v1/actions/{request_id}/comments" in r.text and "Submission" in r.text
    assert "<script" not in r.text and "http://" not in r.text.replace("http://127.0.0.1", "")
