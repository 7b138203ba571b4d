"""The Slack side of the outbox (cards, thread replies, DMs, alerts, edits) and the Courier of
credentials, with the Web API: renders notices and cards; no mrkdwn is written elsewhere."""

from __future__ import annotations

import logging
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.models.blocks import SectionBlock
from sqlalchemy import update
from sqlmodel import select

from bot.chart import draw_events_chart
from bot.domain.durations import format_duration
from bot.domain.notices import Notice, NoticeKind
from bot.domain.redaction import describe
from bot.domain.workflow import Event
from bot.slack.approval import blocks as approval
from bot.slack.client import retry_after
from bot.slack.credential import blocks as credential
from bot.slack.digest import digest_text
from bot.slack.format import SECTION_LIMIT, escape, mention, slack_date
from bot.slack.review.blocks import review_button
from bot.store import AccessRequest, OutboxEntry, outbox
from bot.usecases.core import Core
from bot.usecases.digest import Digests
from bot.usecases.effects import Handler, Impossible, Later
from bot.usecases.ports import Card

log = logging.getLogger(__name__)

# Free-text fields, as a person knows them.
FIELD_LABELS = {
    "justification": "justification",
    "ticket": "ticket",
    "reason": "deny reason",
    "notes": "review notes",
}


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
        return (
            f"Your credential for access #{rid} to {resource} could not be shown to you, so it "
            "was revoked; a fresh one follows in a new message."
        )
    if kind == NoticeKind.CARD_NOT_POSTED:
        return (
            f"Your request #{rid} for {resource} could not be posted to the security channel "
            f"<#{f['channel']}>: the bot is not a member of it, so no approver has seen it yet. "
            "Ask someone in that channel to type `/invite @breakglass` there: your request is "
            "posted as soon as they do."
        )
    if kind == NoticeKind.SECRETS_MASKED:
        where = " and ".join(f"the {FIELD_LABELS.get(w, w)}" for w in f.get("where", []))
        return (
            f"Request #{rid}: what you typed in {where} looked like it held "
            f"{describe(f.get('kinds', []))}. It was masked before anything was kept or posted "
            "(the card, the thread and the audit trail show `[redacted …]` in its place). If it "
            "was real, rotate it now: it was typed into Slack."
        )
    if kind == NoticeKind.REVIEW_OVERDUE:
        due = datetime.fromisoformat(f["due_at"])
        return (
            f"Review overdue: access #{rid} to {resource} by {mention(f['requester'])} ended, and "
            f"its review was due {slack_date(due)}. You are one of its reviewers: click Review, "
            "or see `/breakglass reviews`."
        )
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
    if kind == NoticeKind.AUDIT_CHAIN_BROKEN:
        return (
            f"The audit trail failed its daily verification: {escape(str(f.get('reason', '')))}. "
            "Someone changed or removed recorded events; compare with the last anchors "
            "(`breakglass audit verify --anchors FILE`) and investigate now."
        )
    raise ValueError(f"no text for notice {kind}")


def anchor_text(payload: dict[str, Any]) -> str:
    """An anchor message: the line `breakglass audit verify --anchors` reads, and how."""
    key = payload.get("public_key")
    signed = f" Signed with Ed25519 public key `{key}`." if key else " Not signed (no key set)."
    return (
        ":anchor: Audit anchor: the chain's head, kept here outside the bot's database."
        f"{signed} Save this channel's anchors and check the chain with "
        "`breakglass audit verify --anchors FILE`: a rewritten or truncated trail fails.\n"
        f"```{payload['line']}```"
    )


# Slack errors after which trying again cannot help: the effect is given up, loudly.
# (`not_in_channel` is not one of them: once someone invites the bot, the card goes out.)
PERMANENT = frozenset(
    {
        "channel_not_found",
        "is_archived",
        "invalid_blocks",
        "invalid_blocks_format",
        "msg_too_long",
        "no_text",
        "message_not_found",
        "cant_update_message",
        "edit_window_closed",
        "user_not_found",
        "cannot_dm_bot",
        "account_inactive",
        "invalid_auth",
        "not_authed",
        "token_revoked",
        "missing_scope",
    }
)


class NotInChannel(Later):
    """Slack answered `not_in_channel`: retried, since it goes out once the bot is invited."""


class SlackNotifier:
    """Carries out the Slack effects the use cases owe (outbox handlers), and delivers the
    credential message (the one Slack call that carries a secret, so it is never queued)."""

    def __init__(
        self,
        client: WebClient,
        core: Core,
        vault_addr: str | None,
        digests: Digests | None = None,
    ):
        self.digests = digests
        self.client = client
        self.core = core
        self.vault_addr = vault_addr

    @property
    def security_channel(self) -> str:
        """The policy's, as it is now: a reload may move it (cards already posted stay)."""
        return self.core.policy.security_channel

    def handlers(self) -> dict[str, Handler]:
        return {
            "card": self.card,
            "thread": self.thread,
            "dm": self.dm,
            "alert": self.alert,
            "credential": self.credential,
            "digest": self.digest,
            "anchor": self.anchor,
        }

    def _call(self, method: str, **kwargs: Any) -> Any:
        """One Web API call; Slack's permanent refusals become Impossible, the rest Later."""
        try:
            return getattr(self.client, method)(**kwargs)
        except SlackApiError as exc:
            code = str(exc.response.get("error"))
            if code in PERMANENT:
                raise Impossible(f"Slack answered {code} to {method}") from None
            if code == "not_in_channel":
                log.warning(
                    "the bot is not in the security channel %s: type /invite @breakglass in "
                    "that channel; what the bot owes there is posted once it is invited",
                    kwargs.get("channel"),
                )
                raise NotInChannel(f"Slack answered {code} to {method}") from None
            raise Later(
                f"Slack answered {code} to {method}", after=retry_after(exc.response)
            ) from None

    # ---- the security channel ---------------------------------------------------------

    def card(self, entry: OutboxEntry, payload: dict[str, Any]) -> None:
        assert entry.request_id is not None
        card = self.core.card(entry.request_id)
        text, body = approval.approval_message(card)
        req = card.request
        if req.channel and req.thread_ts:
            self._call("chat_update", channel=req.channel, ts=req.thread_ts, text=text, blocks=body)
            return
        try:
            resp = self._call(
                "chat_postMessage",
                channel=self.security_channel,
                text=text,
                blocks=body,
                unfurl_links=False,
            )
        except NotInChannel:
            self._tell_requester_not_posted(card)
            raise
        with self.core.store.transaction() as s:
            s.execute(
                update(AccessRequest)
                .where(AccessRequest.id == req.id, AccessRequest.channel.is_(None))  # type: ignore[union-attr]
                .values(channel=resp["channel"], thread_ts=resp["ts"])
            )

    def _tell_requester_not_posted(self, card: Card) -> None:
        """Owe the requester, once, a DM saying no approver can see the request yet. Looked
        up by its payload in the transaction that adds it; the card's entry is claimed by
        this worker alone meanwhile, so two cannot add it."""
        req = card.request
        assert req.id is not None
        notice = Notice(
            NoticeKind.CARD_NOT_POSTED,
            req.id,
            {"resource": req.resource, "channel": self.security_channel},
        )
        with self.core.store.transaction() as s:
            told = s.exec(
                select(OutboxEntry.id).where(
                    OutboxEntry.request_id == req.id,
                    OutboxEntry.kind == "dm",
                    OutboxEntry.payload
                    == outbox.encode({"user": req.requester, "notice": notice.to_json()}),
                )
            ).first()
            if told is None:
                self.core.effects.dm(s, req.id, req.requester, notice)

    def thread(self, entry: OutboxEntry, payload: dict[str, Any]) -> None:
        assert entry.request_id is not None
        card = self.core.card(entry.request_id, seq=int(payload["seq"]))
        req = card.request
        if not (req.channel and req.thread_ts):
            raise Later("the status card is not posted yet")
        if card.event is None:
            raise Impossible(f"audit event {payload['seq']} is gone")
        event = Event(card.event.action)
        note = self.core.sealer.open(payload.get("note", "")) or ""
        text, body = approval.thread_reply(card, event, payload["actor"], note)
        self._call(
            "chat_postMessage", channel=req.channel, thread_ts=req.thread_ts, text=text, blocks=body
        )

    def alert(self, entry: OutboxEntry, payload: dict[str, Any]) -> None:
        notice = Notice.from_json(payload["notice"])
        text = notice_text(notice)
        card = self.core.card(entry.request_id) if entry.request_id else None
        if card is not None and card.request.channel and card.request.thread_ts:
            req = card.request
            self._call(
                "chat_postMessage",
                channel=req.channel,
                thread_ts=req.thread_ts,
                reply_broadcast=True,
                text=f":rotating_light: <!here> {text} (request #{req.id}, "
                f"{mention(req.requester)}, `{escape(req.resource)}`)",
            )
        else:
            where = f" (request #{notice.request_id})" if notice.request_id else ""
            self._call(
                "chat_postMessage",
                channel=self.security_channel,
                text=f":rotating_light: <!here> {text}{where}",
            )

    def digest(self, entry: OutboxEntry, payload: dict[str, Any]) -> None:
        """The weekly digest: its text, with the chart of events per day attached."""
        if self.digests is None:
            raise Impossible("this process makes no digests")
        end = datetime.fromisoformat(payload["end"])
        digest = self.digests.build(end)
        text = digest_text(digest)
        name = f"breakglass-digest-{end.date().isoformat()}.png"
        with tempfile.TemporaryDirectory(prefix="breakglass-digest-") as tmp:
            try:
                chart = draw_events_chart(
                    digest.days, digest.events_by_resource, digest.outside_by_day, Path(tmp) / name
                )
            except Exception:  # the figures still go out, without their picture
                log.exception("the digest's chart could not be drawn; posting the text alone")
                self._call("chat_postMessage", channel=self.security_channel, text=text)
                return
            self._call(
                "files_upload_v2",
                channel=self.security_channel,
                file=str(chart),
                filename=name,
                title="Break-glass events per day",
                initial_comment=text,
            )

    def anchor(self, entry: OutboxEntry, payload: dict[str, Any]) -> None:
        """The audit chain's head, kept in the channel's history, outside the database."""
        self._call("chat_postMessage", channel=self.security_channel, text=anchor_text(payload))

    # ---- the requester ------------------------------------------------------------------

    def dm(self, entry: OutboxEntry, payload: dict[str, Any]) -> None:
        notice = Notice.from_json(payload["notice"])
        text = notice_text(notice)
        extra: dict[str, Any] = {}
        if notice.kind == NoticeKind.REVIEW_OVERDUE and notice.request_id:
            # The reminder carries the button: a reviewer acts from where they read it.
            extra["blocks"] = [
                SectionBlock(text=text[:SECTION_LIMIT]).to_dict(),
                review_button(notice.request_id).to_dict(),
            ]
        self._call("chat_postMessage", channel=payload["user"], text=text, **extra)

    def credential(self, entry: OutboxEntry, payload: dict[str, Any]) -> None:
        assert entry.request_id is not None
        card = self.core.card(entry.request_id)
        grant = card.grant
        if grant is None or not (grant.dm_channel and grant.dm_ts):
            return  # never delivered: nothing to edit
        text, body = credential.credential_status(card)
        self._call("chat_update", channel=grant.dm_channel, ts=grant.dm_ts, text=text, blocks=body)

    def deliver(self, card: Card, wrapping_token: str) -> tuple[str, str]:
        text, body = credential.credential_message(card, wrapping_token, self.vault_addr)
        resp = self.client.chat_postMessage(channel=card.request.requester, text=text, blocks=body)
        return resp["channel"], resp["ts"]
