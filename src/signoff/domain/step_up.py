"""Whether a verified ID token proves what a step-up asks for. Pure.

The token's signature, issuer, audience, expiry and nonce are checked where it is decoded
(``signoff.stepup.oidc``); what is left is policy: a sign-in recent enough, with every
required authentication method, for a verified email address.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

# Seconds of clock skew tolerated between the provider and us on auth_time.
SKEW = 30

# Why a step-up is refused: code -> what the approver is told (and evidence records).
REASONS = {
    "no_mfa": "your sign-in did not use every required authentication method",
    "too_old": "your sign-in is not recent enough: sign in again",
    "email_unverified": "the identity provider does not say your email address is verified",
    "unknown_email": "no Slack user of this workspace has your email address",
    "not_approver": "you are not an approver of this request",
    "sponsor": "you sponsor an agent of this request, so you cannot approve it",
    "already_decided": "you have already decided on this request",
    "bad_state": "this sign-in link is not valid (it was altered, or started in another browser)",
    "replayed": "this sign-in was already used",
    "expired_flow": "this sign-in took too long: start again from the Approve button",
    "not_pending": "this request is no longer pending",
    "token_invalid": "the identity provider's answer did not verify",
    "provider_error": "the identity provider did not complete the sign-in",
    "not_step_up": "this request does not use sign-in at the identity provider: use the buttons in Slack",
}


@dataclass(frozen=True)
class Proof:
    """What a verified step-up proves (recorded as ``step_up`` in the decision's evidence)."""

    issuer: str
    sub: str
    amr: tuple[str, ...]
    auth_time: int
    email: str

    def evidence(self) -> dict[str, Any]:
        return {"issuer": self.issuer, "sub": self.sub, "amr": list(self.amr), "auth_time": self.auth_time}


class Refusal(Exception):
    """A step-up that records nothing but its refusal; ``code`` is a key of REASONS."""

    def __init__(self, code: str, detail: str = "", *, recorded_for: str | None = None):
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail
        # A confirmation posted again by the browser that signed in (a double click): the
        # approver whose approval the first post recorded, so the page can say so.
        self.recorded_for = recorded_for

    @property
    def reason(self) -> str:
        return REASONS.get(self.code, self.code)


def check_claims(
    claims: Mapping[str, Any], *, issuer: str, require_amr: Iterable[str], max_age: timedelta, now: float
) -> Proof:
    """The proof in verified ID-token ``claims``; Refusal when it falls short."""
    amr = claims.get("amr")
    amr_list = tuple(a for a in amr if isinstance(a, str)) if isinstance(amr, list) else ()
    missing = [a for a in require_amr if a not in amr_list]
    if missing:
        raise Refusal("no_mfa", f"amr {list(amr_list)} lacks {missing}")
    auth_time = claims.get("auth_time")
    if isinstance(auth_time, bool) or not isinstance(auth_time, (int, float)):
        raise Refusal("too_old", "the ID token has no auth_time")
    age = now - float(auth_time)
    if age > max_age.total_seconds() + SKEW:
        raise Refusal("too_old", f"signed in {int(age)} s ago, more than max_age {int(max_age.total_seconds())} s")
    if age < -SKEW:
        raise Refusal("token_invalid", "auth_time is in the future")
    if claims.get("email_verified") is not True:
        raise Refusal("email_unverified", "email_verified is not true")
    email = claims.get("email")
    if not isinstance(email, str) or "@" not in email:
        raise Refusal("unknown_email", "the ID token has no email")
    sub = claims.get("sub")
    return Proof(issuer=issuer, sub=str(sub), amr=amr_list, auth_time=int(auth_time), email=email)
