"""Identifiers shared by the Block Kit renderer and the Bolt listeners."""

from __future__ import annotations

from enum import StrEnum


class ActionId(StrEnum):
    APPROVE = "signoff.approve"
    REJECT = "signoff.reject"
    REVIEW = "signoff.review"
    REVOKE = "signoff.revoke"
    ROLLBACK = "signoff.rollback"
    REJECT_REASON = "signoff.reject_reason"
    STEP_UP = "signoff.step_up"  # Approve as a link to the identity provider's sign-in


# callback_id of the typed-confirmation modal opened by Approve on a request that asks for one
CONFIRM_MODAL = "signoff.confirm"
# callback_id of the modal opened by "Reject with reason"
REJECT_REASON_MODAL = "signoff.reject_reason"
# block_id / action_id of the inputs in those modals
CONFIRM_INPUT = "confirm"
REASON_INPUT = "reason"
# callback_id of the optional comment modal opened after "Mark reviewed"
REVIEW_MODAL = "signoff.review_modal"
# block_id of the actions block carrying Approve / Reject
DECISION_BLOCK = "signoff.decision"
# block_id of the actions block carrying "Mark reviewed"
REVIEW_BLOCK = "signoff.review"
# block_id / action_id of the comment input in the review modal
COMMENT_INPUT = "comment"
