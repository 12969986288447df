"""Bolt listeners: ack first, then one use-case. No SQL, no policy here."""

from __future__ import annotations

import logging
import re
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from functools import partial
from typing import Any

from slack_bolt import App

from signoff.domain.identifiers import REQUEST_ID_RE
from signoff.policy.rules import confirmation_text
from signoff.slack import blocks
from signoff.slack.card import RequestCard, cards
from signoff.slack.ids import (
    COMMENT_INPUT,
    CONFIRM_INPUT,
    CONFIRM_MODAL,
    REASON_INPUT,
    REJECT_REASON_MODAL,
    REVIEW_MODAL,
    ActionId,
)
from signoff.usecases import queries
from signoff.usecases.decide import decide
from signoff.usecases.ports import Context
from signoff.usecases.reply import record_thread_message
from signoff.usecases.review import review
from signoff.usecases.revoke import revoke
from signoff.usecases.rollback import request_rollback

log = logging.getLogger(__name__)
# Seconds a /signoff command may take to answer in its own HTTP response (Slack waits 3).
COMMAND_BUDGET = 2.0
_command_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="slash-command")


_SLACK_ID = re.compile(r"^[A-Z0-9]{2,40}$")


def _str_id(value: Any, pattern: re.Pattern) -> str | None:
    return value if isinstance(value, str) and pattern.match(value) else None


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _click(body: dict) -> tuple[str, str | None, str | None]:
    """(request id, user id, channel id) of a button click; junk fields become empty."""
    actions = body.get("actions")
    action = _dict(actions[0]) if isinstance(actions, list) and actions else {}
    user = _str_id(_dict(body.get("user")).get("id"), _SLACK_ID)
    channel = _str_id(_dict(body.get("channel")).get("id"), _SLACK_ID) or _str_id(
        _dict(body.get("container")).get("channel_id"), _SLACK_ID
    )
    return _str_id(action.get("value"), REQUEST_ID_RE) or "", user, channel


def _submitted(body: dict, input_id: str) -> tuple[str, str | None, str | None]:
    """(request id, user id, text of the ``input_id`` field) of a modal submission."""
    view = _dict(body.get("view"))
    request_id = _str_id(view.get("private_metadata"), REQUEST_ID_RE) or ""
    user = _str_id(_dict(body.get("user")).get("id"), _SLACK_ID)
    values = _dict(_dict(view.get("state")).get("values"))
    text = _dict(_dict(values.get(input_id)).get(input_id)).get("value")
    return request_id, user, text if isinstance(text, str) else None


def _plain_event(event: Any) -> bool:
    """A message event whose fields have the types Slack sends (junk is ignored, not stored)."""
    if not isinstance(event, dict):
        return False
    for part in (event, event.get("message"), event.get("previous_message")):
        if part is None:
            continue
        if not isinstance(part, dict):
            return False
        for key in ("channel", "user", "ts", "thread_ts", "text", "subtype", "deleted_ts", "bot_id"):
            if part.get(key) is not None and not isinstance(part[key], str):
                return False
    return True


def _ack(ack) -> None:
    ack()


# Buttons whose click is acknowledged with a plain, empty ack (every one of ours: their
# work runs after it, as a lazy listener). ``SlackEndpoint`` answers these itself at once.
PLAIN_ACK_ACTIONS = frozenset(a.value for a in ActionId)


def register(app: App, ctx: Context) -> None:
    """Clicks, modal submissions and events are acknowledged at once, in the request's own
    thread; the work runs afterwards as a Bolt lazy listener. The ack never waits for a free
    worker, so a burst of clicks while Slack's API (or the database) is slow is still
    answered within Slack's 3 seconds. (The App runs with process_before_response=True.)"""

    def clicked(use_case):
        def work(body):
            request_id, user, channel = _click(body)
            if request_id and user:
                use_case(request_id=request_id, user=user, channel=channel)

        return work

    def on_approve(body, client):
        """Approve: at once, or — on a request that asks for it — through the modal where the
        approver types the target (nothing is decided until that submission matches)."""
        request_id, user, channel = _click(body)
        if not (request_id and user):
            return
        confirm = queries.typed_confirmation_for(ctx, request_id)
        trigger = body.get("trigger_id")
        if confirm is None:
            decide(ctx, request_id=request_id, user=user, decision="approve", channel=channel)
        elif isinstance(trigger, str) and trigger:
            client.views_open(trigger_id=trigger, view=blocks.confirm_modal(RequestCard.from_view(confirm)))
        else:  # no way to ask: a refusal is recorded, nothing approved
            decide(ctx, request_id=request_id, user=user, decision="approve", channel=channel)

    def on_reject_reason(body, client):
        request_id, user, _channel = _click(body)
        trigger = body.get("trigger_id")
        if request_id and user and isinstance(trigger, str) and trigger:
            client.views_open(trigger_id=trigger, view=blocks.reject_reason_modal(request_id))

    app.action(ActionId.APPROVE.value)(ack=_ack, lazy=[on_approve])
    app.action(ActionId.REJECT.value)(ack=_ack, lazy=[clicked(partial(decide, ctx, decision="reject"))])
    app.action(ActionId.REJECT_REASON.value)(ack=_ack, lazy=[on_reject_reason])

    def ack_confirmation(ack, body):
        """Answered in the submission's own response: a mismatch keeps the modal open with
        the field marked (the refusal is recorded afterwards); a match closes it."""
        request_id, _user, typed = _submitted(body, CONFIRM_INPUT)
        confirm = queries.typed_confirmation_for(ctx, request_id) if request_id else None
        if confirm is not None and typed != confirmation_text(confirm["action"]):
            ack(
                response_action="errors",
                errors={CONFIRM_INPUT: "That is not the target. Type it exactly as shown, or cancel."},
            )
        else:
            ack()

    def on_confirmation(body):
        request_id, user, typed = _submitted(body, CONFIRM_INPUT)
        if request_id and user:
            decide(ctx, request_id=request_id, user=user, decision="approve", confirmed_target=typed or "")

    app.view(CONFIRM_MODAL)(ack=ack_confirmation, lazy=[on_confirmation])

    def on_reject_with_reason(body):
        request_id, user, reason = _submitted(body, REASON_INPUT)
        if request_id and user:
            decide(ctx, request_id=request_id, user=user, decision="reject", reason=reason)

    app.view(REJECT_REASON_MODAL)(ack=_ack, lazy=[on_reject_with_reason])
    app.action(ActionId.REVOKE.value)(ack=_ack, lazy=[clicked(partial(revoke, ctx))])
    app.action(ActionId.ROLLBACK.value)(ack=_ack, lazy=[clicked(partial(request_rollback, ctx))])
    # Slack also reports a click on a link button; the approval happens at the link.
    app.action(ActionId.STEP_UP.value)(_ack)

    def on_review(body, client):
        request_id, user, channel = _click(body)
        if not (request_id and user):
            return
        result = review(ctx, request_id=request_id, user=user, channel=channel)
        trigger = body.get("trigger_id")
        if result.ok and isinstance(trigger, str) and trigger:
            try:
                client.views_open(trigger_id=trigger, view=blocks.review_modal(request_id))
            except Exception:  # the review is recorded; the optional comment modal is a nicety
                log.info("could not open the review modal", exc_info=True)

    app.action(ActionId.REVIEW.value)(ack=_ack, lazy=[on_review])

    def on_review_comment(body):
        view = _dict(body.get("view"))
        request_id = _str_id(view.get("private_metadata"), REQUEST_ID_RE)
        user = _str_id(_dict(body.get("user")).get("id"), _SLACK_ID)
        values = _dict(_dict(view.get("state")).get("values"))
        comment = _dict(_dict(values.get(COMMENT_INPUT)).get(COMMENT_INPUT)).get("value")
        if request_id and user and isinstance(comment, str) and comment.strip():
            review(ctx, request_id=request_id, user=user, comment=comment)

    app.view(REVIEW_MODAL)(ack=_ack, lazy=[on_review_comment])

    def on_message(body):
        event = body.get("event")
        if _plain_event(event):
            event_id = body.get("event_id")
            record_thread_message(ctx, event=event, event_id=event_id if isinstance(event_id, str) else None)

    app.event("message")(ack=_ack, lazy=[on_message])

    def on_home(body, client):
        event = _dict(body.get("event"))
        user = _str_id(event.get("user"), _SLACK_ID)
        if not user or event.get("tab", "home") != "home":
            return
        pending = cards(queries.pending_for(ctx, user))
        exceptions = queries.exceptions_for(ctx, user)
        view = blocks.home_view(pending, None if exceptions is None else cards(exceptions))
        client.views_publish(user_id=user, view=view)

    app.event("app_home_opened")(ack=_ack, lazy=[on_home])

    def answer(user: str | None, words: list[str]) -> str:
        verb = words[0].lower() if words else "help"
        if verb == "pending":
            return (
                blocks.request_summary_lines(cards(queries.pending_for(ctx, user)))
                or "Nothing is waiting for your decision."
            )
        if verb == "show" and len(words) > 1:
            # Someone outside the request's workflow gets the answer for an unknown id.
            r = queries.show(ctx, words[1], user) if REQUEST_ID_RE.match(words[1]) else None
            return blocks.request_detail_text(RequestCard.from_view(r)) if r else f"No request {words[1][:60]}."
        if verb == "exceptions":
            items = queries.exceptions_for(ctx, user)
            if items is None:
                return "Only a workflow's security owner can list its exceptions."
            return blocks.request_summary_lines(cards(items)) or "No unreviewed exceptions."
        return "Usage: `/signoff pending` · `/signoff show ID` · `/signoff exceptions`"

    @app.command("/signoff")
    def on_command(ack, command, respond):
        """Answered in the HTTP response when the lists are ready within COMMAND_BUDGET
        seconds (the usual case); otherwise acknowledged at once, well inside Slack's 3 s,
        and the answer follows through the command's response_url."""
        user = _str_id(command.get("user_id"), _SLACK_ID)
        words = (command.get("text") or "").split()
        pending = _command_pool.submit(answer, user, words)
        try:
            text = pending.result(timeout=COMMAND_BUDGET)
        except FutureTimeout:
            ack(response_type="ephemeral", text="Looking that up…")

            def follow_up(done) -> None:
                try:
                    respond(
                        response_type="ephemeral",
                        replace_original=True,
                        text=done.result()
                        if done.exception() is None
                        else "Sorry, that could not be looked up; try again.",
                    )
                except Exception:
                    log.exception("could not answer /signoff through its response_url")

            pending.add_done_callback(follow_up)
            return
        except Exception:
            log.exception("/signoff %s failed", " ".join(words)[:60])
            text = "Sorry, that could not be looked up; try again."
        ack(response_type="ephemeral", text=text)

    @app.error
    def on_error(error, body):
        log.error("Slack listener failed: %s", error, exc_info=error)
