"""The agent signature scheme (contract §3): ``v1=<hex HMAC-SHA256(secret, "v1:" + ts + ":" + body)>``.

Used both ways: to check an agent's request and to sign the executor webhook.
"""

from __future__ import annotations

import hashlib
import hmac


def agent_signature(secret: bytes, timestamp: str, body: bytes) -> str:
    return "v1=" + hmac.new(secret, b"v1:" + timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()
