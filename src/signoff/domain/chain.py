"""The evidence hash chain. Pure: hashing only.

``hash = sha256(prev_hash ‖ canonical JSON of the event)`` where the event is
``{request_id, seq, at, type, actor, data}`` and ``at`` is ISO-8601 UTC with microseconds.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from typing import Any

from signoff.domain.canonical import canonical_json

GENESIS = "0" * 64


def iso(at: datetime) -> str:
    """Stable ISO-8601 UTC text for a timestamp (``2026-11-26T07:13:17.123456Z``)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_body(request_id: str, seq: int, at: datetime | str, type_: str, actor: str, data: Any) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "seq": seq,
        "at": at if isinstance(at, str) else iso(at),
        "type": type_,
        "actor": actor,
        "data": data,
    }


def link(prev_hash: str, body: dict[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical_json(body)).hexdigest()
