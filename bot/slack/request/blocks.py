"""Block Kit for asking: the request modal and the help text."""

from __future__ import annotations

from typing import Any

from slack_sdk.models.blocks import (
    CheckboxesElement,
    ConfirmObject,
    InputBlock,
    Option,
    PlainTextInputElement,
    StaticSelectElement,
)
from slack_sdk.models.views import View

from bot.domain.durations import format_duration
from bot.domain.forms import MIN_JUSTIFICATION
from bot.policy import Policy
from bot.slack.format import escape
from bot.slack.ids import ActionId, BlockId, ViewId


def request_modal(
    policy: Policy, user: str | None = None, *, resources: tuple[str, ...] | None = None
) -> View:
    """The request form; with `user` (or the names in `resources`), only the resources that
    person may ask for."""
    if resources is not None:
        allowed = set(resources)
    else:
        allowed = set(policy.requestable(user)) if user else set(policy.resources)
    resources = sorted(
        ((n, r) for n, r in policy.resources.items() if n in allowed), key=lambda item: item[0]
    )
    options = [
        Option(
            value=name,
            text=name[:75],
            description=(res.description or f"max {format_duration(res.max_duration)}")[:75],
        )
        for name, res in resources
    ]
    maxima = ", ".join(f"{n}: {format_duration(r.max_duration)}" for n, r in resources)
    emergency_ok = [n for n, r in resources if r.emergency]
    blocks: list[Any] = [
        InputBlock(
            block_id=BlockId.RESOURCE,
            label="Resource",
            element=StaticSelectElement(
                action_id=ActionId.RESOURCE, placeholder="What do you need?", options=options
            ),
        ),
        InputBlock(
            block_id=BlockId.DURATION,
            label="For how long",
            hint=f"e.g. 30m or 1h. Longest: {maxima}"[:2000],
            element=PlainTextInputElement(
                action_id=ActionId.DURATION, placeholder="30m", initial_value="30m", max_length=20
            ),
        ),
        InputBlock(
            block_id=BlockId.JUSTIFICATION,
            label="Why",
            hint="What is broken, and what will you do? Recorded in the audit log.",
            element=PlainTextInputElement(
                action_id=ActionId.JUSTIFICATION,
                multiline=True,
                min_length=1,
                max_length=2000,
                placeholder=f"At least {MIN_JUSTIFICATION} characters",
            ),
        ),
        InputBlock(
            block_id=BlockId.TICKET,
            label="Ticket or incident",
            optional=True,
            element=PlainTextInputElement(
                action_id=ActionId.TICKET, placeholder="INC-1234", max_length=200
            ),
        ),
    ]
    if emergency_ok:
        blocks.append(
            InputBlock(
                block_id=BlockId.EMERGENCY,
                label="Emergency",
                optional=True,
                hint=f"Only for: {', '.join(emergency_ok)}"[:2000],
                element=CheckboxesElement(
                    action_id=ActionId.EMERGENCY,
                    confirm=ConfirmObject(
                        title="Break the glass?",
                        text="Access is granted at once, without approval. The security "
                        "channel is alerted and a review of this access is mandatory.",
                        confirm="Break the glass",
                        deny="Back",
                    ),
                    options=[
                        Option(
                            value="emergency",
                            text="Break the glass: grant now, without approval",
                            description="Security is alerted; a review is mandatory afterwards",
                        )
                    ],
                ),
            )
        )
    return View(
        type="modal",
        callback_id=ViewId.REQUEST,
        title="Break-glass access",
        submit="Request",
        close="Cancel",
        blocks=blocks,
    )


def read_request_form(view: object) -> dict[str, Any]:
    """The submitted modal's state.values as form fields; odd shapes read as empty fields."""

    def get(block: BlockId, action: ActionId) -> dict[str, Any]:
        state = view.get("state") if isinstance(view, dict) else None
        values = state.get("values") if isinstance(state, dict) else None
        found = values.get(block) if isinstance(values, dict) else None
        found = found.get(action) if isinstance(found, dict) else None
        return found if isinstance(found, dict) else {}

    def text(block: BlockId, action: ActionId) -> str | None:
        value = get(block, action).get("value")
        return value if isinstance(value, str) else None

    selected = get(BlockId.RESOURCE, ActionId.RESOURCE).get("selected_option")
    resource = selected.get("value") if isinstance(selected, dict) else None
    checks = get(BlockId.EMERGENCY, ActionId.EMERGENCY).get("selected_options")
    checks = checks if isinstance(checks, list) else []
    return {
        "resource": resource if isinstance(resource, str) else None,
        "duration": text(BlockId.DURATION, ActionId.DURATION),
        "justification": text(BlockId.JUSTIFICATION, ActionId.JUSTIFICATION),
        "ticket": text(BlockId.TICKET, ActionId.TICKET),
        "emergency": any(isinstance(o, dict) and o.get("value") == "emergency" for o in checks),
    }


def help_text(policy: Policy) -> str:
    resources = "\n".join(
        f"• `{n}`: {escape(r.description)} (up to {format_duration(r.max_duration)}"
        f"{', emergency allowed' if r.emergency else ''})"
        for n, r in sorted(policy.resources.items())
    )
    return (
        "*Break-glass access*\n"
        "`/breakglass`: ask for emergency access (opens a form)\n"
        "`/breakglass revoke <id>`: end an active access now\n"
        "`/breakglass cancel <id>`: withdraw your request while it waits for approval\n"
        "`/breakglass reviews`: the post-incident reviews you can do, overdue ones first\n"
        "`/breakglass stats [period]`: break-glass metrics, e.g. `/breakglass stats 7d` "
        "(approvers and reviewers)\n"
        "`/breakglass help`: this message\n\n"
        f"Resources:\n{resources}\n\n"
        "Approvers decide in the security channel; the credential comes to you privately "
        "and is revoked on time. Every step is recorded; emergency access is reviewed "
        "afterwards."
    )
