"""Adapters that carry audit events to other systems: a signed webhook and syslog (RFC 5424).
Each implements `EventSink` (bot.usecases.ports); `sink_for` builds one from the policy."""

from __future__ import annotations

import os
from collections.abc import Mapping

from bot.policy import ForwardSink
from bot.usecases.ports import EventSink


class SinkConfigError(Exception):
    """A sink cannot be built from this configuration (`check-config` says so first)."""


def sink_for(sink: ForwardSink, environ: Mapping[str, str] = os.environ) -> EventSink:
    if sink.webhook is not None:
        from bot.forward.webhook import WebhookSender

        secret = environ.get(sink.webhook.secret_env)
        if not secret:
            raise SinkConfigError(
                f"audit.forward {sink.name}: the environment variable "
                f"{sink.webhook.secret_env} is not set (the webhook's shared secret)"
            )
        return WebhookSender(sink.webhook, secret.encode())
    from bot.forward.syslog import SyslogSender

    assert sink.syslog is not None
    return SyslogSender(sink.syslog)
