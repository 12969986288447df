"""What the client raises."""

from __future__ import annotations

from typing import Any


class SignoffError(Exception):
    """The server refused a call, or could not be reached.

    ``status`` is the HTTP status (``None`` when no answer came back at all), ``code`` and
    ``message`` come from the server's ``{"error": {"code", "message", "fields"}}`` body
    (or describe a body that was not of that shape), ``fields`` names the offending input
    fields of a validation error (an empty list otherwise).
    """

    def __init__(self, status: int | None, code: str, message: str, fields: list[str] | None = None):
        self.status = status
        self.code = code
        self.message = message
        self.fields = list(fields or [])
        where = f"HTTP {status}" if status is not None else "no answer"
        super().__init__(f"{where} {code}: {message}" + (f" (fields: {', '.join(self.fields)})" if self.fields else ""))


class Unanswered(Exception):
    """Base of the ways a request ends without being approved; ``request`` is its last state."""

    def __init__(self, request: dict[str, Any]):
        self.request = request
        super().__init__(f"request {request.get('id')} {request.get('status')}" + _reason(request))


class Rejected(Unanswered):
    """The request was rejected (by an approver, or by policy at grant time)."""


class Expired(Unanswered):
    """Nobody decided in time: the request expired, which is a denial."""


class Cancelled(Unanswered):
    """The request was cancelled by its submitter."""


class InvalidGrant(Exception):
    """A grant that does not hold: bad signature, expired, wrong issuer, another action,
    another executor, or another request."""


def _reason(request: dict[str, Any]) -> str:
    for d in reversed(request.get("decisions") or []):
        if d.get("decision") == "reject":
            return f" by {d.get('by')}"
    return ""


class WaitTimeout(TimeoutError):
    """The wait ended before the request got where it was waited for; ``request`` is its
    state at the last read."""

    def __init__(self, request: dict[str, Any], timeout: float):
        self.request = request
        super().__init__(f"request {request.get('id')} still {request.get('status')} after waiting {timeout:g} s")
