"""The use cases' Notifier, implemented with the Slack Web API: renders notices and cards."""

from __future__ import annotations

from datetime import datetime, timedelta

from slack_sdk import WebClient

from bot.domain.durations import format_duration
from bot.domain.notices import Notice, NoticeKind
from bot.domain.workflow import Event
from bot.slack.approval import blocks as approval
from bot.slack.credential import blocks as credential
from bot.slack.format import escape, mention, slack_date
from bot.usecases.ports import Card


def notice_text(notice: Notice) -> str:
    """A private message or an alert, in Slack's words."""
    f, rid = notice.fields, notice.request_id
    resource = f"*{escape(str(f.get('resource', '')))}*"
    kind = notice.kind
    if kind == NoticeKind.REQUEST_PENDING:
        duration = format_duration(timedelta(seconds=int(f["duration_seconds"])))
        return f"Your request #{rid} for {resource} ({duration}) is waiting for approval."
    if kind == NoticeKind.REQUEST_DENIED:
        return f"Your request #{rid} for {resource} was denied by {mention(f['by'])}."
    if kind == NoticeKind.REQUEST_TIMED_OUT:
        return (
            f"Your request #{rid} for {resource} timed out without a decision. Ask again, or "
            "use emergency access if the resource allows it."
        )
    if kind == NoticeKind.ISSUE_FAILED:
        return (
            f"Request #{rid} was approved but the credential could not be issued: "
            f"{escape(f['reason'])}. Security has been told; ask again once it is fixed."
        )
    if kind == NoticeKind.ACCESS_ENDED:
        by = str(f.get("by") or "")
        how = (
            "expired and was revoked"
            if f.get("how") == Event.EXPIRED
            else f"was revoked by {mention(by)}"
            if by[:1] in ("U", "W")
            else "was revoked"
        )
        return f"Your access #{rid} to {resource} {how}; the credential no longer works."
    if kind == NoticeKind.NOT_RECORDED:
        return f"Your request was not recorded: {escape(f['reason'])}."
    if kind == NoticeKind.CREDENTIAL_REISSUED:
        return f"Your credential for access #{rid} to {resource} was issued again below."
    if kind == NoticeKind.EMERGENCY_ACCESS:
        return "Emergency access: granted without approval"
    if kind == NoticeKind.TAMPER:
        return (
            "Tamper alert: the credential's wrapping token was unwrapped before its owner "
            "revealed it. Revoking now."
        )
    if kind == NoticeKind.REVOCATION_STUCK:
        since = datetime.fromisoformat(f["since"])
        return (
            f"Revocation pending since {slack_date(since)}: Vault still refuses or cannot be "
            f"reached ({escape(f.get('error', ''))}). Vault ends the lease at its TTL regardless; "
            "check Vault now."
        )
    if kind == NoticeKind.VAULT_AUTH_FAILING:
        return (
            f"The bot's Vault token can be neither renewed nor replaced: {escape(f['reason'])}. "
            "New access cannot be issued and active grants end with the token; fix the bot's "
            "Vault auth now."
        )
    if kind == NoticeKind.VAULT_AUTH_RESTORED:
        return "The bot's Vault token works again."
    raise ValueError(f"no text for notice {kind}")


class SlackNotifier:
    def __init__(self, client: WebClient, security_channel: str, vault_addr: str | None):
        self.client = client
        self.security_channel = security_channel
        self.vault_addr = vault_addr

    def open_thread(self, card: Card) -> tuple[str, str] | None:
        text, body = approval.approval_message(card)
        resp = self.client.chat_postMessage(
            channel=self.security_channel, text=text, blocks=body, unfurl_links=False
        )
        channel, ts = resp["channel"], resp["ts"]
        self._reply(channel, ts, card, Event.REQUESTED, card.request.requester, "")
        return channel, ts

    def _reply(
        self, channel: str, ts: str, card: Card, event: Event, actor: str, note: str
    ) -> None:
        text, body = approval.thread_reply(card, event, actor, note)
        self.client.chat_postMessage(channel=channel, thread_ts=ts, text=text, blocks=body)

    def record(self, card: Card, event: Event, actor: str, note: str = "") -> None:
        req = card.request
        if not (req.channel and req.thread_ts):
            return
        self._reply(req.channel, req.thread_ts, card, event, actor, note)
        text, body = approval.approval_message(card)
        self.client.chat_update(channel=req.channel, ts=req.thread_ts, text=text, blocks=body)

    def tell(self, user: str, notice: Notice) -> None:
        self.client.chat_postMessage(channel=user, text=notice_text(notice))

    def deliver(self, card: Card, wrapping_token: str) -> tuple[str, str]:
        text, body = credential.credential_message(card, wrapping_token, self.vault_addr)
        resp = self.client.chat_postMessage(channel=card.request.requester, text=text, blocks=body)
        return resp["channel"], resp["ts"]

    def update_credential(self, card: Card) -> None:
        grant = card.grant
        assert grant is not None and grant.dm_channel and grant.dm_ts
        text, body = credential.credential_status(card)
        self.client.chat_update(channel=grant.dm_channel, ts=grant.dm_ts, text=text, blocks=body)

    def alert(self, card: Card | None, notice: Notice) -> None:
        text = notice_text(notice)
        if card is not None and card.request.channel and card.request.thread_ts:
            req = card.request
            self.client.chat_postMessage(
                channel=req.channel,
                thread_ts=req.thread_ts,
                reply_broadcast=True,
                text=f":rotating_light: <!here> {text} (request #{req.id}, "
                f"{mention(req.requester)}, `{escape(req.resource)}`)",
            )
        else:
            where = f" (request #{notice.request_id})" if notice.request_id else ""
            self.client.chat_postMessage(
                channel=self.security_channel, text=f":rotating_light: <!here> {text}{where}"
            )
