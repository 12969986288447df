"""``GET /openapi.json``: the agent API as it really is.

The routes read and verify their raw bodies themselves (the signature covers the exact
bytes), so FastAPI cannot see their bodies or answers. This module describes them: the
request bodies from the same pydantic models that validate them, every status each route
answers, the error shape, and the signature headers.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field

from signoff import __version__
from signoff.schemas import Submission

REF = "#/components/schemas/{model}"


class ErrorDetail(BaseModel):
    code: str = Field(description="a stable, machine-readable code, e.g. `invalid`, `unauthorized`, `not_found`")
    message: str = Field(description="what went wrong, for a person")
    fields: list[str] | None = Field(None, description="the body fields (dotted paths) or parameters at fault")


class Error(BaseModel):
    """Every error answer has this shape."""

    error: ErrorDetail


class DecisionView(BaseModel):
    by: str = Field(description="the Slack user id, or `policy:<reason>` for a decision of the runtime policy")
    decision: Literal["approve", "reject"]
    at: str = Field(description="RFC 3339, UTC")
    reason: str | None = Field(None, description="a rejection's stated reason, when one was given")


class ThreadEntry(BaseModel):
    user: str = Field(description="the Slack user id of a person, or the agent id for the agent's own comments")
    ts: str
    text: str


class RequestObject(BaseModel):
    """A request as its submitter or executor sees it."""

    model_config = ConfigDict(extra="allow")

    id: str
    status: Literal["pending", "approved", "rejected", "expired", "cancelled", "executing", "succeeded", "failed"]
    version: int | None = Field(
        None, description="grows with every visible change (status, decisions, grant, outcome, thread)"
    )
    workflow: str
    title: str
    action: dict[str, Any]
    action_sha256: str = Field(description="hex SHA-256 of the RFC 8785 canonical JSON of `action`")
    risk: Literal["low", "medium", "high", "critical"]
    justification: str | None = None
    rollback: dict[str, Any] | None = None
    parent_id: str | None = None
    rollback_of: str | None = None
    submitted_by: str
    executor: str
    sponsor: str | None = None
    created_at: str | None = None
    deadline: str | None = None
    not_before: str | None = None
    executable_from: str | None = None
    rule: str | None = None
    policy_sha256: str | None = None
    decisions: list[DecisionView]
    grant: str | None = Field(
        None, description="the EdDSA JWT, in the executor's view only, while approved or executing"
    )
    grant_expires_at: str | None = None
    outcome: dict[str, Any] | None = None
    thread: list[ThreadEntry] | None = None


class OutcomeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["succeeded", "failed"]
    detail: str | None = Field(None, max_length=4000)


class CommentBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=4000)


class CommentCreated(BaseModel):
    id: str
    request: RequestObject


MODELS: tuple[type[BaseModel], ...] = (Submission, Error, RequestObject, OutcomeBody, CommentBody, CommentCreated)

ERRORS = {
    400: "the body is not UTF-8 JSON",
    408: "the client took longer than the read deadline (10 s by default) to send the request",
    401: "missing or wrong signature, unknown agent, or a timestamp more than 300 s off",
    403: "the agent (or the executor it names) may not do this",
    404: "no such workflow or request (or not one this agent may see)",
    409: "the request is not in a status that allows this",
    413: "the body is over 256 KiB",
    422: "the body or a parameter is invalid; `fields` names them",
    503: "the database is busy or unavailable; nothing was changed; retry after `Retry-After` seconds",
}


def _error(code: int) -> dict[str, Any]:
    schema = {"$ref": REF.format(model="Error")}
    return {"description": ERRORS[code], "content": {"application/json": {"schema": schema}}}


def _json(model: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": REF.format(model=model)}}}}


def _body(model: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": {"$ref": REF.format(model=model)}}}}


SIGNED = [{"agentName": [], "agentTimestamp": [], "agentSignature": []}]
REQUEST_ID = {"name": "request_id", "in": "path", "required": True, "schema": {"type": "string"}}

# path -> method -> what the operation takes and answers
OPERATIONS: dict[str, dict[str, dict[str, Any]]] = {
    "/v1/actions": {
        "post": {
            "summary": "Propose an action",
            "requestBody": _body("Submission"),
            "parameters": [
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "description": "1–200 printable characters, kept 24 h per agent: a retry returns the "
                    "first answer (200) instead of making a second request",
                    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
                }
            ],
            "responses": {
                "201": _json("RequestObject", "the request, created"),
                "200": _json("RequestObject", "an idempotent retry (or a byte-for-byte replay): the first request"),
                **{str(c): _error(c) for c in (400, 401, 403, 404, 408, 413, 422, 503)},
            },
        }
    },
    "/v1/actions/{request_id}": {
        "get": {
            "summary": "Read a request (optionally waiting for a change)",
            "parameters": [
                REQUEST_ID,
                {
                    "name": "wait",
                    "in": "query",
                    "required": False,
                    "description": "hold the answer up to this many seconds until the request is no longer "
                    "pending (or, with `version`, until its version exceeds it)",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 60},
                },
                {"name": "version", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0}},
            ],
            "responses": {
                "200": _json("RequestObject", "the request"),
                **{str(c): _error(c) for c in (401, 404, 422, 503)},
            },
        }
    },
    "/v1/actions/{request_id}/cancel": {
        "post": {
            "summary": "Cancel a pending request (its submitter)",
            "parameters": [REQUEST_ID],
            "responses": {
                "200": _json("RequestObject", "the request, cancelled"),
                **{str(c): _error(c) for c in (401, 403, 404, 408, 409, 413, 503)},
            },
        }
    },
    "/v1/actions/{request_id}/outcome": {
        "post": {
            "summary": "Report the outcome (its executor)",
            "parameters": [REQUEST_ID],
            "requestBody": _body("OutcomeBody"),
            "responses": {
                "200": _json("RequestObject", "the request, succeeded or failed"),
                **{str(c): _error(c) for c in (400, 401, 403, 404, 408, 409, 413, 422, 503)},
            },
        }
    },
    "/v1/actions/{request_id}/comments": {
        "post": {
            "summary": "Answer in the request's Slack thread, as the agent",
            "parameters": [REQUEST_ID],
            "requestBody": _body("CommentBody"),
            "responses": {
                "201": _json("CommentCreated", "posted (through the outbox) and recorded"),
                **{str(c): _error(c) for c in (400, 401, 404, 408, 409, 413, 422, 503)},
            },
        }
    },
}


def _text(media: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": {"type": "string"}}}}


# Routes people and machines other than agents call: no agent signature.
OPEN: dict[str, dict[str, dict[str, Any]]] = {
    "/healthz": {
        "get": {
            "summary": "Liveness: the process answers",
            "responses": {
                "200": {
                    "description": '`{"status": "ok"}`',
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        }
    },
    "/readyz": {
        "get": {
            "summary": "Readiness: the database answers and Slack takes the bot token",
            "responses": {
                "200": {"description": "ready", "content": {"application/json": {"schema": {"type": "object"}}}},
                "503": {
                    "description": "not ready; `reason` says why",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
            },
        }
    },
    "/metrics": {
        "get": {"summary": "Prometheus metrics", "responses": {"200": _text("text/plain", "Prometheus text format")}}
    },
    "/.well-known/jwks.json": {
        "get": {
            "summary": "The public keys that verify grants and evidence",
            "responses": {
                "200": {"description": "a JWKS", "content": {"application/json": {"schema": {"type": "object"}}}}
            },
        }
    },
    "/evidence/{request_id}": {
        "get": {
            "summary": "A request's evidence page, through a signed link from Slack",
            "parameters": [
                REQUEST_ID,
                {"name": "exp", "in": "query", "required": True, "schema": {"type": "string"}},
                {"name": "sig", "in": "query", "required": True, "schema": {"type": "string"}},
            ],
            "responses": {
                "200": _text("text/html", "the evidence page"),
                "403": _error(403) | {"description": "a missing, altered or expired link"},
                "404": _error(404),
            },
        }
    },
    "/slack/events": {
        "post": {
            "summary": "Slack's events, interactivity and slash commands (signed by Slack)",
            "responses": {
                "200": {"description": "acknowledged"},
                "400": {"description": "not a Slack payload"},
                "401": {"description": "missing, wrong or stale Slack signature"},
                "404": _error(404) | {"description": "Slack is not configured on this process"},
            },
        }
    },
}


def _components(doc: dict[str, Any]) -> None:
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for model in MODELS:
        schema = model.model_json_schema(ref_template=REF, mode="validation")
        for name, sub in (schema.pop("$defs", None) or {}).items():
            schemas.setdefault(name, sub)
        schemas[model.__name__] = schema
    doc["components"]["securitySchemes"] = {
        "agentName": {
            "type": "apiKey",
            "in": "header",
            "name": "X-Signoff-Agent",
            "description": "the agent id of the workflow file",
        },
        "agentTimestamp": {
            "type": "apiKey",
            "in": "header",
            "name": "X-Signoff-Timestamp",
            "description": "unix seconds, within 300 s of the server's clock",
        },
        "agentSignature": {
            "type": "apiKey",
            "in": "header",
            "name": "X-Signoff-Signature",
            "description": '`v2=<hex HMAC-SHA256(secret, "v2:" + timestamp + ":" + METHOD + ":" '
            '+ path + ":" + body)>` (or the older `v1=` form); see docs/api.md',
        },
    }


def openapi_document(app: FastAPI) -> dict[str, Any]:
    doc = get_openapi(
        title="signoff agent API",
        version=__version__,
        openapi_version="3.1.0",
        description="Agents propose actions; people approve them in Slack; executors receive "
        "short-lived grants. Every agent request is signed: see the security schemes.",
        routes=app.routes,
    )
    _components(doc)
    for table, security in ((OPERATIONS, SIGNED), (OPEN, [])):
        for path, methods in table.items():
            if path not in doc.get("paths", {}):
                continue  # a route this process does not serve
            for method, spec in methods.items():
                op = doc["paths"][path].setdefault(method, {})
                op.pop("requestBody", None)
                op["responses"] = {}
                op.update(spec)
                op["security"] = security
            name = path.strip("/").replace("/", "_").replace("{", "").replace("}", "")
            op.setdefault("operationId", f"{method}_{name}")
    return doc


def reference_page(doc: dict[str, Any]) -> str:
    """``GET /docs``: the OpenAPI document as one self-contained HTML page (no scripts, nothing
    fetched from elsewhere, so it works on an installation without internet access)."""
    from html import escape as e

    out = [
        "<!doctype html><html><head><meta charset='utf-8'><title>signoff agent API</title>",
        (
            "<style>body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
            "code,pre{background:#f4f4f4;padding:0 .2em}table{border-collapse:collapse;margin:.5rem 0}"
            "td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left;vertical-align:top}"
            "h3{margin-top:2rem}.m{font-weight:bold;text-transform:uppercase}</style></head><body>"
        ),
        f"<h1>{e(doc['info']['title'])} {e(doc['info']['version'])}</h1>",
        f"<p>{e(doc['info'].get('description', ''))}</p>",
        (
            "<p>Machine-readable: <a href='/openapi.json'>/openapi.json</a> (OpenAPI 3.1). "
            "Signing, waiting, comments and the input rules are described in the project's docs/api.md.</p>"
        ),
    ]
    for path, methods in doc.get("paths", {}).items():
        for method, op in methods.items():
            out.append(f"<h3><span class='m'>{e(method)}</span> <code>{e(path)}</code></h3>")
            out.append(f"<p>{e(op.get('summary', ''))}</p>")
            params = op.get("parameters") or []
            if params:
                out.append("<table><tr><th>parameter</th><th>in</th><th>schema</th><th>about</th></tr>")
                for prm in params:
                    out.append(
                        f"<tr><td><code>{e(prm['name'])}</code></td><td>{e(prm['in'])}</td>"
                        f"<td><code>{e(_brief(prm.get('schema', {})))}</code></td>"
                        f"<td>{e(prm.get('description', ''))}</td></tr>"
                    )
                out.append("</table>")
            body = ((op.get("requestBody") or {}).get("content") or {}).get("application/json")
            if body:
                out.append(f"<p>Body: <code>{e(_brief(body['schema']))}</code></p>")
            out.append("<table><tr><th>status</th><th>answer</th></tr>")
            for code, resp in (op.get("responses") or {}).items():
                schema = ((resp.get("content") or {}).get("application/json") or {}).get("schema")
                kind = f" <code>{e(_brief(schema))}</code>" if schema else ""
                out.append(f"<tr><td>{e(code)}</td><td>{e(resp.get('description', ''))}{kind}</td></tr>")
            out.append("</table>")
    out.append("<h2>Schemas</h2>")
    for name, schema in (doc.get("components", {}).get("schemas") or {}).items():
        out.append(f"<h3 id='{e(name)}'>{e(name)}</h3><p>{e(schema.get('description', ''))}</p>")
        props = schema.get("properties") or {}
        if props:
            required = set(schema.get("required") or [])
            out.append("<table><tr><th>field</th><th>schema</th><th>required</th><th>about</th></tr>")
            for field, sub in props.items():
                out.append(
                    f"<tr><td><code>{e(field)}</code></td><td><code>{e(_brief(sub))}</code></td>"
                    f"<td>{'yes' if field in required else ''}</td>"
                    f"<td>{e(sub.get('description', ''))}</td></tr>"
                )
            out.append("</table>")
    out.append("</body></html>")
    return "".join(out)


def _brief(schema: dict[str, Any]) -> str:
    """A one-line description of a JSON schema: its type, reference and limits."""
    if not isinstance(schema, dict):
        return ""
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " | ".join(_brief(s) for s in schema[key])
    if "enum" in schema:
        return " | ".join(repr(v) for v in schema["enum"])
    if "const" in schema:
        return repr(schema["const"])
    kind = str(schema.get("type", "any"))
    if kind == "array":
        kind = f"array of {_brief(schema.get('items', {}))}"
    limits = [f"{k} {schema[k]}" for k in ("minLength", "maxLength", "minimum", "maximum") if k in schema]
    return kind + (f" ({', '.join(limits)})" if limits else "")
