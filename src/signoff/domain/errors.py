"""Domain errors. Adapters translate them (HTTP status, Slack ephemeral text, CLI exit)."""

from __future__ import annotations


class DomainError(Exception):
    """Base: ``code`` is the machine-readable error code of the agent API (docs/api.md)."""

    code = "error"
    http_status = 400

    def __init__(self, message: str, *, fields: list[str] | None = None):
        super().__init__(message)
        self.message = message
        self.fields = fields


class NotFound(DomainError):
    code = "not_found"
    http_status = 404


class Forbidden(DomainError):
    code = "forbidden"
    http_status = 403


class Invalid(DomainError):
    code = "invalid_request"
    http_status = 422


class Conflict(DomainError):
    code = "conflict"
    http_status = 409


class Unauthorized(DomainError):
    code = "unauthorized"
    http_status = 401
