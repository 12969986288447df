"""The agent's view of a request's thread, folded from its events."""

from __future__ import annotations

from datetime import datetime, timezone

from signoff.domain.thread import fold, slack_ts


def test_replies_and_agent_comments_oldest_first():
    events = [
        (3, "thread.agent_reply", "deploy-bot", {"comment_id": "c1", "text": "on it", "ts": "1700000002.500000"}),
        (2, "thread.reply", "U0OWNER", {"user": "U0OWNER", "ts": "1700000001.000100", "text": "why?"}),
        (4, "thread.reply", "U0OWNER", {"user": "U0OWNER", "ts": "1700000003.000100", "text": "ok"}),
    ]
    assert fold(sorted(events)) == [
        {"user": "U0OWNER", "ts": "1700000001.000100", "text": "why?"},
        {"user": "deploy-bot", "ts": "1700000002.500000", "text": "on it", "id": "c1"},
        {"user": "U0OWNER", "ts": "1700000003.000100", "text": "ok"},
    ]


def test_an_edit_shows_the_current_text_and_a_deletion_removes_the_reply():
    events = [
        (2, "thread.reply", "U0OWNER", {"user": "U0OWNER", "ts": "1.000001", "text": "first"}),
        (3, "thread.reply", "U0SECOND", {"user": "U0SECOND", "ts": "2.000001", "text": "oops"}),
        (
            4,
            "thread.edited",
            "U0OWNER",
            {"user": "U0OWNER", "ts": "1.000001", "text": "second", "previous_text": "first"},
        ),
        (5, "thread.deleted", "U0SECOND", {"user": "U0SECOND", "ts": "2.000001"}),
        # an edit whose original never reached us stands for it
        (6, "thread.edited", "U0PLAT", {"user": "U0PLAT", "ts": "3.000001", "text": "late", "previous_text": "x"}),
    ]
    assert fold(events) == [
        {"user": "U0OWNER", "ts": "1.000001", "text": "second", "edited": True},
        {"user": "U0PLAT", "ts": "3.000001", "text": "late", "edited": True},
    ]


def test_slack_ts_of_a_moment():
    at = datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=timezone.utc)
    assert slack_ts(at) == "1700000000.123456"
