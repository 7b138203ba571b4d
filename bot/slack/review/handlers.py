"""Reviewing: the Review button (in the thread, a reviewer's DM or their review list) opens
the review modal; submitting it closes the review, once."""

from __future__ import annotations

from slack_bolt import Ack, App
from slack_sdk import WebClient

from bot.domain.forms import BadInput, parse_request_id
from bot.domain.reviews import check_review
from bot.domain.workflow import Refused
from bot.slack import errors
from bot.slack.approval.handlers import clicked_request
from bot.slack.ids import REVIEW_FIELD_BLOCKS, ActionId, BlockId, ViewId
from bot.slack.review import blocks
from bot.usecases import Breakglass


def register(app: App, service: Breakglass) -> None:
    @app.action(ActionId.REVIEW)
    def handle_review_action(ack: Ack, body: dict, client: WebClient) -> None:
        ack()
        request_id = clicked_request(body)
        # Refused before the modal opens (requester, stranger, closed): privately, by the
        # one error handler.
        service.reviews.check_can_review(request_id, body["user"]["id"])
        client.views_open(
            trigger_id=body["trigger_id"], view=blocks.review_modal(service.card(request_id))
        )

    @app.view(ViewId.REVIEW)
    def handle_review_submission(ack: Ack, body: dict, view: dict) -> None:
        form = blocks.read_review_form(view)
        try:
            request_id = parse_request_id(form["request_id"])
        except BadInput:
            ack(
                response_action="errors",
                errors={str(BlockId.REVIEW_OUTCOME): "This form is damaged; click Review again."},
            )
            return
        valid, problems = check_review(form["outcome"], form["notes"])
        if valid is None:
            ack(
                response_action="errors",
                errors={str(REVIEW_FIELD_BLOCKS[k]): v[:150] for k, v in problems.items()},
            )
            return
        # Closed before the ack (a conditional UPDATE: milliseconds), so that whoever comes
        # second reads why in the modal they are looking at, not in a message elsewhere.
        try:
            service.reviews.close(request_id, body["user"]["id"], valid)
        except Refused as exc:
            ack(
                response_action="errors",
                errors={str(BlockId.REVIEW_OUTCOME): errors.refusal_text(exc)[:150]},
            )
            return
        ack()
