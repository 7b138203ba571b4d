"""The syslog sink: RFC 5424 messages, over TCP with octet-counting framing (RFC 6587) or
over UDP, one datagram per event (RFC 5426).

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [meta sequenceId="SEQ"] MSG

PRI is facility * 8 + severity (notice; warning for the events that alert people), TIMESTAMP
the event's own time in UTC, MSGID its action, MSG the event as compact ASCII JSON (no BOM:
escaped JSON is plain ASCII). `meta`/`sequenceId` is the SD-ID that RFC 5424 (7.3.1) registers
for a sequence number: the event's seq, for receivers to drop what they already have.

TCP: one connection per batch, closed by us with a half-close; the batch counts as received
once the server closed its side (a syslog server reads until the end of the stream, then
closes), so a server that went down mid-batch gets it again. UDP has no acknowledgement:
a datagram sent while the receiver is down is lost (a refused port is noticed where the
network reports it). Use TCP or the webhook where nothing may be lost.
"""

from __future__ import annotations

import json
import os
import re
import socket
from datetime import UTC, datetime
from typing import Any

from bot.policy import SyslogSink
from bot.usecases.forwarding import SinkDown, SinkRefused

NOTICE, WARNING = 5, 4
ALERTING = frozenset(
    {
        "emergency_access",
        "reveal_tamper",
        "revoke_failed",
        "revocation_stuck",
        "issue_failed",
        "delivery_failed",
    }
)
_NOT_PRINTABLE = re.compile(r"[^!-~]")
NIL = "-"
MAX_DATAGRAM = 65507  # the most a UDP datagram over IPv4 carries


def _field(value: str, longest: int) -> str:
    """A header field: printable US-ASCII without spaces, at most `longest`; NILVALUE if empty."""
    cleaned = _NOT_PRINTABLE.sub("_", value)[:longest]
    return cleaned or NIL


def timestamp(at: str) -> str:
    """An event's ISO 8601 time as RFC 5424 wants it: UTC, microseconds, `Z`."""
    when = datetime.fromisoformat(at).astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def format_5424(
    event: dict[str, Any], *, facility: int, hostname: str, app_name: str, procid: str
) -> bytes:
    """One event as an RFC 5424 message (bytes, ASCII)."""
    severity = WARNING if event["action"] in ALERTING else NOTICE
    seq = event["seq"]
    sd = f'[meta sequenceId="{seq}"]' if 1 <= seq <= 2147483647 else NIL
    msg = json.dumps(event, ensure_ascii=True, separators=(",", ":"))
    header = " ".join(
        (
            f"<{facility * 8 + severity}>1",
            timestamp(event["at"]),
            _field(hostname, 255),
            _field(app_name, 48),
            _field(procid, 128),
            _field(str(event["action"]), 32),
            sd,
        )
    )
    return f"{header} {msg}".encode("ascii")


def octet_counted(message: bytes) -> bytes:
    """RFC 6587, 3.4.1: MSG-LEN SP SYSLOG-MSG."""
    return b"%d %s" % (len(message), message)


class SyslogSender:
    def __init__(self, config: SyslogSink, hostname: str | None = None):
        self.host, self.port = config.host, config.port
        self.protocol = config.protocol
        self.facility = config.facility_code
        self.app_name = config.app_name
        self.timeout = config.timeout.total_seconds()
        self.hostname = hostname or socket.gethostname()
        self.procid = str(os.getpid())

    def messages(self, events: list[dict[str, Any]]) -> list[bytes]:
        return [
            format_5424(
                e,
                facility=self.facility,
                hostname=self.hostname,
                app_name=self.app_name,
                procid=self.procid,
            )
            for e in events
        ]

    def send(self, events: list[dict[str, Any]]) -> None:
        messages = self.messages(events)
        try:
            if self.protocol == "tcp":
                self._tcp(messages)
            else:
                self._udp(messages, events)
        except TimeoutError:
            raise SinkDown(f"no answer within {self.timeout:g} s") from None
        except socket.gaierror:
            raise SinkDown(f"cannot resolve {self.host}") from None
        except OSError as exc:
            raise SinkDown(exc.strerror or type(exc).__name__) from None

    def _tcp(self, messages: list[bytes]) -> None:
        with socket.create_connection((self.host, self.port), timeout=self.timeout) as sock:
            sock.sendall(b"".join(octet_counted(m) for m in messages))
            sock.shutdown(socket.SHUT_WR)
            # The server closes its side once it has read everything we sent.
            while sock.recv(4096):
                pass

    def _udp(self, messages: list[bytes], events: list[dict[str, Any]]) -> None:
        for m, e in zip(messages, events, strict=True):
            if len(m) > MAX_DATAGRAM:
                raise SinkRefused(
                    f"event {e['seq']} is {len(m)} bytes, more than a UDP datagram carries; "
                    "use protocol: tcp"
                )
        family, kind, proto, _, address = socket.getaddrinfo(
            self.host, self.port, type=socket.SOCK_DGRAM
        )[0]
        with socket.socket(family, kind, proto) as sock:
            sock.settimeout(self.timeout)
            sock.connect(address)  # connected: a refused port is reported to us
            for m in messages:
                sock.send(m)
            pending = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if pending:
                raise OSError(pending, os.strerror(pending))

    def close(self) -> None:
        pass


__all__ = ["SyslogSender", "format_5424", "octet_counted"]
