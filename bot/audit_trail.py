"""`breakglass audit show`: one request's whole audit trail as text a person reads, with the
hashes that chain each event to the one before."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import Session

from bot.domain.durations import format_duration
from bot.store import AccessRequest, audit
from providers.transit import is_sealed

# Stored text is checked at input, but an edited row (or a table name a grant's database
# user chose, in an activity event) could hold anything: nothing printed may move the
# terminal's cursor, change its colours, or reorder the text around it (bidi controls).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
INDENT = "    "


def trail_text(
    session: Session,
    request_id: int,
    open_many: Callable[[list[str]], list[str]] | None = None,
) -> str | None:
    """The request's header and every event of its trail, oldest first; None if there is no
    such request. Texts sealed with Vault's transit key (audit.encrypt) are shown opened with
    `open_many`, or as "(sealed)" without it."""
    req = session.get(AccessRequest, request_id)
    if req is None:
        return None
    events = list(audit.export(session, request_id))
    sealed = [req.justification] if is_sealed(req.justification) else []
    for event in events:
        sealed += [v for v in (event.get("details") or {}).values() if is_sealed(v)]
    opened: dict[str, str] = {}
    if sealed:
        try:
            texts = open_many(sealed) if open_many else ["(sealed)"] * len(sealed)
        except Exception as exc:  # shown, not raised: the hashes are still worth reading
            texts = [f"(sealed; Vault could not open it: {exc})"] * len(sealed)
        opened = dict(zip(sealed, texts, strict=True))
    req.justification = opened.get(req.justification, req.justification)
    for event in events:
        details = event.get("details") or {}
        for key, value in details.items():
            if isinstance(value, str) and value in opened:
                details[key] = opened[value]
    lines = [
        f"Request #{req.id}: {_clean(req.resource)}, requested by {_clean(req.requester)}",
        f"State: {req.state}",
        f"Requested at: {_utc(req.created_at)}",
        "Duration: "
        + format_duration(timedelta(seconds=req.duration_seconds))
        + (" (emergency)" if req.emergency else ""),
        _field("Justification", req.justification, ""),
        _field("Ticket", req.ticket or "-", ""),
        f"Events: {len(events)}",
    ]
    for event in events:
        lines.append("")
        lines.append(
            f"[{event['seq']}] {_utc(event['at'])}  {_clean(event['action'])}  "
            f"by {_clean(event['actor'])}"
        )
        details = event.get("details")
        if details is None:
            lines.append(f"{INDENT}(details pruned)")
        else:
            lines.extend(_field(k, v, INDENT) for k, v in details.items())
        if event.get("details_hash"):
            lines.append(f"{INDENT}details hash: {event['details_hash']}")
        lines.append(f"{INDENT}prev hash: {event['prev_hash']}")
        lines.append(f"{INDENT}hash: {event['hash']}")
    return "\n".join(lines) + "\n"


def _field(key: str, value: Any, indent: str) -> str:
    """`key: value`; a value of several lines continues indented under its key."""
    text = _value(value).replace("\n", "\n" + indent + "  ")
    return f"{indent}{_clean(key)}: {text}"


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return _clean(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ", ".join(_clean(v) for v in value) or "-"
    return _clean(json.dumps(value, ensure_ascii=False, sort_keys=True))


def _clean(text: object) -> str:
    return _CONTROL.sub("?", str(text).replace("\r\n", "\n")).replace("\t", " ")


def _utc(at: datetime | str) -> str:
    when = datetime.fromisoformat(at) if isinstance(at, str) else at
    if when.tzinfo is None:  # SQLite gives back naive datetimes; the store writes UTC
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f UTC")
