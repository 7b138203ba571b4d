"""The request form and every value a person types: checked here, in one place, with the
message the person reads (an inline field error or an ephemeral reply)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta

from bot.domain.durations import DurationError, parse_duration
from bot.domain.redaction import Redacted, scan
from bot.domain.workflow import Refused, check_duration
from bot.policy import Policy

MIN_JUSTIFICATION = 15
MAX_JUSTIFICATION = 2000
MAX_TICKET = 200
MAX_REASON = 1000
# Request ids are PostgreSQL integers; anything larger is a typo or a probe, never a request.
MAX_ID = 2**31 - 1
# NUL cannot be stored in PostgreSQL text, and other control characters only hide things.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Bidirectional embeddings, overrides and isolates: they make text display as other text
# ("legit\u202eesusim" shows as "legitmisuse") in Slack and in an exported audit trail.
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")
_ID = re.compile(r"#?([0-9]{1,10})", re.ASCII)


class BadInput(Refused):
    """A value a person typed that cannot be used; the message says what to type instead."""


@dataclass(frozen=True)
class RequestForm:
    """A request as typed into the modal, before checks."""

    resource: str | None
    duration: str | None
    justification: str | None
    ticket: str | None = None
    emergency: bool = False


@dataclass(frozen=True)
class ValidRequest:
    resource: str
    duration: timedelta
    justification: str  # secrets pasted into it masked, as every free text the bot keeps
    ticket: str | None
    emergency: bool
    # What was masked, by field name: the kinds of secret ("vault-token", ...).
    masked: dict[str, tuple[str, ...]] = field(default_factory=dict)


def parse_request_id(text: object) -> int:
    """A request id as typed (`12`, `#12`) or carried by a button; BadInput otherwise."""
    match = _ID.fullmatch(str(text).strip()) if isinstance(text, str | int) else None
    if match is None or not 0 < int(match.group(1)) <= MAX_ID:
        raise BadInput(f"{str(text)[:20]!r} is not a request id; write it like 12")
    return int(match.group(1))


def text_problem(value: str, limit: int) -> str | None:
    """Why free text cannot be recorded as typed, or None."""
    if _CONTROL.search(value):
        return "Remove the control characters (such as NUL) from this field."
    if _BIDI.search(value):
        return "Remove the text-direction control characters (such as U+202E) from this field."
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: no database can store it
        return "Remove the characters that cannot be stored (broken Unicode) from this field."
    if len(value) > limit:
        return f"At most {limit} characters, please ({len(value)} given)."
    return None


def masked_text(text: str, limit: int) -> Redacted:
    """Free text as the bot keeps it: secrets masked, and no longer than `limit` (a marker
    can be longer than the secret it replaces)."""
    result = scan(text)
    if len(result.text) > limit:
        return Redacted(result.text[: limit - 1] + "\u2026", result.kinds)
    return result


def check_reason(reason: object) -> Redacted:
    """A deny reason as typed: stripped, not empty, storable; secrets in it masked."""
    text = reason.strip() if isinstance(reason, str) else ""
    if not text:
        raise BadInput("say why you deny it")
    problem = text_problem(text, MAX_REASON)
    if problem:
        raise BadInput(problem.rstrip("."))
    return masked_text(text, MAX_REASON)


def check_form(policy: Policy, form: RequestForm) -> tuple[ValidRequest | None, dict[str, str]]:
    """Check a request form; return the valid request, or errors keyed by field name."""
    errors: dict[str, str] = {}
    name = form.resource if isinstance(form.resource, str) else None
    res = policy.resources.get(name or "")
    if not name:
        errors["resource"] = "Choose a resource."
    elif res is None:
        errors["resource"] = f"Unknown resource {name[:40]!r}."
    duration = None
    try:
        duration = parse_duration(form.duration if isinstance(form.duration, str) else "")
        if res is not None:
            check_duration(duration, res.max_duration)
    except DurationError as exc:
        errors["duration"] = str(exc)[0].upper() + str(exc)[1:] + "."
    except Refused as exc:
        errors["duration"] = f"Too long: {exc}."
    justification = form.justification.strip() if isinstance(form.justification, str) else ""
    problem = text_problem(justification, MAX_JUSTIFICATION)
    if problem:
        errors["justification"] = problem
    elif len(justification) < MIN_JUSTIFICATION:
        errors["justification"] = (
            f"Say why you need it (at least {MIN_JUSTIFICATION} characters): "
            "what is broken, and what you will do."
        )
    ticket = (form.ticket.strip() if isinstance(form.ticket, str) else "") or None
    problem = text_problem(ticket or "", MAX_TICKET)
    if problem:
        errors["ticket"] = problem
    if form.emergency and res is not None and not res.emergency:
        errors["emergency"] = "Emergency access is not allowed for this resource; ask for approval."
    if errors:
        return None, errors
    assert res is not None and duration is not None and name
    kept = masked_text(justification, MAX_JUSTIFICATION)
    kept_ticket = masked_text(ticket, MAX_TICKET) if ticket else None
    masked = {
        where: result.kinds
        for where, result in (("justification", kept), ("ticket", kept_ticket))
        if result is not None and result.kinds
    }
    return ValidRequest(
        name,
        duration,
        kept.text,
        kept_ticket.text if kept_ticket else None,
        bool(form.emergency),
        masked,
    ), {}
