"""The bot's Slack Web API client: timeouts and retries inside one call, sized so that one
delivery always ends well inside the outbox's claim on it."""

from __future__ import annotations

from typing import Any

from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)

# Waits longer than this are the outbox's to take (it retries at Slack's Retry-After), not a
# thread's: a call that sleeps minutes would outlive its claim and post twice.
LONGEST_WAIT_IN_CALL = 10
TIMEOUT = 10


def retry_after(response: Any) -> int | None:
    """Slack's Retry-After, in seconds, from a response (slack_sdk's or its HTTP one)."""
    headers = getattr(response, "headers", None) or {}
    for key, value in dict(headers).items():
        if key.lower() == "retry-after":
            value = value[0] if isinstance(value, list | tuple) else value
            text = str(value).strip()
            return int(text) if text.isascii() and text.isdigit() else None
    return None


class ShortRateLimitRetryHandler(RateLimitErrorRetryHandler):
    """Honours a 429's Retry-After inside the call only when it is short."""

    def _can_retry(self, *, state: Any, request: Any, response: Any = None, error: Any = None):  # type: ignore[override]
        if not super()._can_retry(state=state, request=request, response=response, error=error):
            return False
        after = retry_after(response)
        return after is None or after <= LONGEST_WAIT_IN_CALL


def make_client(token: str | None, base_url: str | None) -> WebClient:
    return WebClient(
        token=token,
        base_url=base_url or WebClient.BASE_URL,
        timeout=TIMEOUT,
        # Inside one call: a short 429 (at its Retry-After), 5xx and connection errors.
        # Longer outages are the outbox's to ride out.
        retry_handlers=[
            ConnectionErrorRetryHandler(max_retry_count=2),
            ShortRateLimitRetryHandler(max_retry_count=2),
            ServerErrorRetryHandler(max_retry_count=2),
        ],
    )
