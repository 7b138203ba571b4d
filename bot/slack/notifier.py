"""The service's Notifier, implemented with the Slack Web API."""

from __future__ import annotations

from slack_sdk import WebClient

from bot.service import Card
from bot.slack import blocks
from bot.workflow import Event


class SlackNotifier:
    def __init__(self, client: WebClient, security_channel: str, vault_addr: str | None):
        self.client = client
        self.security_channel = security_channel
        self.vault_addr = vault_addr

    def open_thread(self, card: Card) -> tuple[str, str] | None:
        text, body = blocks.approval_message(card)
        resp = self.client.chat_postMessage(
            channel=self.security_channel, text=text, blocks=body, unfurl_links=False
        )
        channel, ts = resp["channel"], resp["ts"]
        self._reply(channel, ts, card, Event.REQUESTED, card.request.requester, "")
        return channel, ts

    def _reply(
        self, channel: str, ts: str, card: Card, event: Event, actor: str, note: str
    ) -> None:
        text, body = blocks.thread_reply(card, event, actor, note)
        self.client.chat_postMessage(channel=channel, thread_ts=ts, text=text, blocks=body)

    def record(self, card: Card, event: Event, actor: str, note: str = "") -> None:
        req = card.request
        if not (req.channel and req.thread_ts):
            return
        self._reply(req.channel, req.thread_ts, card, event, actor, note)
        text, body = blocks.approval_message(card)
        self.client.chat_update(channel=req.channel, ts=req.thread_ts, text=text, blocks=body)

    def tell(self, user: str, text: str) -> None:
        self.client.chat_postMessage(channel=user, text=text)

    def deliver(self, card: Card, wrapping_token: str) -> tuple[str, str]:
        text, body = blocks.credential_message(card, wrapping_token, self.vault_addr)
        resp = self.client.chat_postMessage(channel=card.request.requester, text=text, blocks=body)
        return resp["channel"], resp["ts"]

    def update_credential(self, card: Card) -> None:
        grant = card.grant
        assert grant is not None and grant.dm_channel and grant.dm_ts
        text, body = blocks.credential_status(card)
        self.client.chat_update(channel=grant.dm_channel, ts=grant.dm_ts, text=text, blocks=body)

    def alert(self, card: Card, text: str) -> None:
        req = card.request
        if req.channel and req.thread_ts:
            self.client.chat_postMessage(
                channel=req.channel,
                thread_ts=req.thread_ts,
                reply_broadcast=True,
                text=f":rotating_light: <!here> {text} (request #{req.id}, "
                f"{blocks.mention(req.requester)}, `{blocks.escape(req.resource)}`)",
            )
        else:
            self.client.chat_postMessage(
                channel=self.security_channel,
                text=f":rotating_light: <!here> {text} (request #{req.id})",
            )
