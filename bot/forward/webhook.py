"""The webhook sink: each batch of events POSTed as a JSON array, signed with HMAC-SHA256.

Headers: `X-Breakglass-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes with the
shared secret>`, `X-Breakglass-Seq: <first>-<last>` (the events' sequence numbers, for the
receiver to drop what it already has; each event also carries its `seq`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from email.utils import parsedate_to_datetime
from typing import Any

import requests

from bot.policy import WebhookSink
from bot.usecases.forwarding import SinkDown, SinkRefused

SIGNATURE_HEADER = "X-Breakglass-Signature"
SEQ_HEADER = "X-Breakglass-Seq"


def body_of(events: list[dict[str, Any]]) -> bytes:
    """The bytes POSTed (and signed): the events as one compact JSON array, UTF-8."""
    return json.dumps(events, ensure_ascii=False, separators=(",", ":")).encode()


def signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def seq_range(events: list[dict[str, Any]]) -> str:
    first, last = events[0]["seq"], events[-1]["seq"]
    return str(first) if first == last else f"{first}-{last}"


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (a number of seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value[:7])
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, OverflowError):
        return None


class WebhookSender:
    """POSTs batches to one URL with one keep-alive session. Never logs or raises the URL
    (it may carry a token in its query) or the body."""

    def __init__(self, config: WebhookSink, secret: bytes):
        self.url = config.url
        self.secret = secret
        self.timeout = config.timeout.total_seconds()
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "breakglass-audit-forwarder"

    def send(self, events: list[dict[str, Any]]) -> None:
        body = body_of(events)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature(self.secret, body),
            SEQ_HEADER: seq_range(events),
        }
        try:
            r = self.session.post(
                self.url,
                data=body,
                headers=headers,
                timeout=(min(5.0, self.timeout), self.timeout),
                allow_redirects=False,
            )
        except requests.Timeout:
            raise SinkDown(f"no answer within {self.timeout:g} s") from None
        except requests.RequestException as exc:
            raise SinkDown(f"unreachable ({type(exc).__name__})") from None
        status = r.status_code
        r.close()
        if 200 <= status < 300:
            return
        if status in (408, 429) or status >= 500:
            raise SinkDown(f"HTTP {status}", after=retry_after(r.headers.get("Retry-After")))
        raise SinkRefused(f"HTTP {status}")

    def close(self) -> None:
        self.session.close()
