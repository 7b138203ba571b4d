"""Every callback_id, action_id and block_id the bot uses, in one place."""

from enum import StrEnum


class ViewId(StrEnum):
    REQUEST = "breakglass.request.submit"
    DENY = "breakglass.deny.submit"
    REVEAL = "breakglass.credential.view"
    REVIEW = "breakglass.review.submit"


class ActionId(StrEnum):
    APPROVE = "breakglass.grant.approve"
    DENY = "breakglass.grant.deny"
    REVEAL = "breakglass.credential.reveal"
    REVOKE = "breakglass.credential.revoke"
    # inputs of the request modal
    RESOURCE = "breakglass.request.resource.value"
    DURATION = "breakglass.request.duration.value"
    JUSTIFICATION = "breakglass.request.justification.value"
    TICKET = "breakglass.request.ticket.value"
    EMERGENCY = "breakglass.request.emergency.value"
    DENY_REASON = "breakglass.deny.reason.value"
    REVIEW = "breakglass.review.open"
    # inputs of the review modal
    REVIEW_OUTCOME = "breakglass.review.outcome.value"
    REVIEW_NOTES = "breakglass.review.notes.value"


class BlockId(StrEnum):
    RESOURCE = "breakglass.request.resource"
    DURATION = "breakglass.request.duration"
    JUSTIFICATION = "breakglass.request.justification"
    TICKET = "breakglass.request.ticket"
    EMERGENCY = "breakglass.request.emergency"
    DENY_REASON = "breakglass.deny.reason"
    DECISION = "breakglass.grant.decision"
    WRAPPED_TOKEN = "breakglass.credential.token"  # noqa: S105 (a block id, not a secret)
    CREDENTIAL_ACTIONS = "breakglass.credential.actions"
    REVIEW_ACTIONS = "breakglass.review.actions"
    REVIEW_OUTCOME = "breakglass.review.outcome"
    REVIEW_NOTES = "breakglass.review.notes"


# Form field name (service.check_form) -> the block that shows its error.
FIELD_BLOCKS = {
    "resource": BlockId.RESOURCE,
    "duration": BlockId.DURATION,
    "justification": BlockId.JUSTIFICATION,
    "ticket": BlockId.TICKET,
    "emergency": BlockId.EMERGENCY,
}

# Review form field name (bot.domain.reviews.check_review) -> the block that shows its error.
REVIEW_FIELD_BLOCKS = {
    "outcome": BlockId.REVIEW_OUTCOME,
    "notes": BlockId.REVIEW_NOTES,
}
