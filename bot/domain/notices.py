"""What the bot tells people, as data: a kind and its fields. The Slack adapter renders
them; no mrkdwn and no mention syntax is written outside `bot/slack/`."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class NoticeKind(StrEnum):
    # to the requester, privately
    REQUEST_PENDING = "request_pending"  # resource, duration_seconds
    REQUEST_DENIED = "request_denied"  # resource, by
    REQUEST_TIMED_OUT = "request_timed_out"  # resource
    ISSUE_FAILED = "issue_failed"  # reason
    ACCESS_ENDED = "access_ended"  # resource, how (expired | revoked), by
    NOT_RECORDED = "not_recorded"  # reason
    CREDENTIAL_REISSUED = "credential_reissued"  # resource
    CARD_NOT_POSTED = "card_not_posted"  # resource, channel (the bot is not in it)
    # to whoever typed it, privately: what looked like a secret was masked before it was kept
    SECRETS_MASKED = "secrets_masked"  # where (field names), kinds
    # to each reviewer, privately
    REVIEW_OVERDUE = "review_overdue"  # resource, requester, due_at
    # to the security channel, loudly
    EMERGENCY_ACCESS = "emergency_access"
    TAMPER = "tamper"
    REVOCATION_STUCK = "revocation_stuck"  # since, error
    VAULT_AUTH_FAILING = "vault_auth_failing"  # reason
    VAULT_AUTH_RESTORED = "vault_auth_restored"
    AUDIT_CHAIN_BROKEN = "audit_chain_broken"  # seq, reason


@dataclass(frozen=True)
class Notice:
    kind: NoticeKind
    request_id: int | None = None
    fields: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"kind": str(self.kind), "request_id": self.request_id, "fields": self.fields}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Notice:
        return cls(NoticeKind(data["kind"]), data.get("request_id"), dict(data.get("fields") or {}))
