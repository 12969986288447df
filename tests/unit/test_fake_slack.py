"""The fake Slack Web API answers a real slack_sdk WebClient the way Slack does."""

from __future__ import annotations

import threading

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from fakes.fixtures import fake_slack  # noqa: F401 - fixture
from fakes.slack_api import FakeSlack


@pytest.fixture
def client(fake_slack):  # noqa: F811
    return WebClient(token="xoxb-test", base_url=fake_slack.url, retry_handlers=[])


def test_url_is_loopback_base_url(fake_slack):  # noqa: F811
    assert fake_slack.url.startswith("http://127.0.0.1:")
    assert fake_slack.url.endswith("/")


def test_auth_test_and_token_recorded(fake_slack, client):  # noqa: F811
    resp = client.auth_test()
    assert resp["ok"] and resp["user_id"]
    (call,) = fake_slack.calls_to("auth.test")
    assert call.token == "xoxb-test" and call.status == 200 and call.ok


def test_missing_token_is_not_authed(fake_slack):  # noqa: F811
    with pytest.raises(SlackApiError) as err:
        WebClient(base_url=fake_slack.url).chat_postMessage(channel="C1", text="hi")
    assert err.value.response["error"] == "not_authed"


def test_post_then_update(fake_slack, client):  # noqa: F811
    metadata = {"event_type": "signoff_request", "event_payload": {"request_id": "r1"}}
    blocks = [{"type": "section", "text": {"type": "plain_text", "text": "please approve"}}]
    first = client.chat_postMessage(channel="C0APPROVE", text="please approve", blocks=blocks, metadata=metadata)
    second = client.chat_postMessage(channel="C0APPROVE", text="another")
    assert first["channel"] == "C0APPROVE"
    assert float(second["ts"]) > float(first["ts"])
    stored = fake_slack.message("C0APPROVE", first["ts"])
    assert stored["metadata"] == metadata and stored["blocks"] == blocks

    updated = client.chat_update(channel="C0APPROVE", ts=first["ts"], text="approved by <@U1>", blocks=[])
    assert updated["ok"] and updated["ts"] == first["ts"]
    stored = fake_slack.message("C0APPROVE", first["ts"])
    assert stored["text"] == "approved by <@U1>" and stored["blocks"] == []

    with pytest.raises(SlackApiError) as err:
        client.chat_update(channel="C0APPROVE", ts="1.000000", text="x")
    assert err.value.response["error"] == "message_not_found"


def test_post_to_user_lands_in_dm_channel(fake_slack, client):  # noqa: F811
    resp = client.chat_postMessage(channel="U0OWNER", text="hi")
    assert resp["channel"] == "D0OWNER"
    assert client.conversations_open(users="U0OWNER")["channel"]["id"] == "D0OWNER"
    assert fake_slack.message("D0OWNER", resp["ts"])["text"] == "hi"


def test_history_finds_messages_by_metadata_newest_first(fake_slack, client):  # noqa: F811
    meta = {"event_type": "signoff_request", "event_payload": {"message_id": "7"}}
    old = client.chat_postMessage(channel="C1", text="old", metadata=meta)
    new = client.chat_postMessage(channel="C1", text="new")
    client.chat_postMessage(channel="C1", text="in thread", thread_ts=old["ts"])
    client.chat_postMessage(channel="C2", text="elsewhere")

    history = client.conversations_history(channel="C1", limit=100, include_all_metadata=True)
    assert [m["ts"] for m in history["messages"]] == [new["ts"], old["ts"]]
    assert history["messages"][1]["metadata"] == meta
    plain = client.conversations_history(channel="C1")
    assert all("metadata" not in m for m in plain["messages"])


def test_replies_include_posted_and_human_replies(fake_slack, client):  # noqa: F811
    root = client.chat_postMessage(channel="C1", text="request")
    client.chat_postMessage(channel="C1", text="escalated", thread_ts=root["ts"])
    human_ts = fake_slack.add_thread_reply("C1", root["ts"], "U9", "looks fine to me")
    replies = client.conversations_replies(channel="C1", ts=root["ts"])["messages"]
    assert [m["text"] for m in replies] == ["request", "escalated", "looks fine to me"]
    assert replies[2]["user"] == "U9" and replies[2]["ts"] == human_ts
    with pytest.raises(SlackApiError):
        client.conversations_replies(channel="C1", ts="1.000000")


def test_rate_limit_is_a_429_with_retry_after(fake_slack, client):  # noqa: F811
    fake_slack.rate_limit_next("chat.postMessage", 1, retry_after=7)
    with pytest.raises(SlackApiError) as err:
        client.chat_postMessage(channel="C1", text="hi")
    assert err.value.response.status_code == 429
    assert err.value.response.headers["Retry-After"] == "7"
    assert err.value.response["error"] == "ratelimited"
    assert client.chat_postMessage(channel="C1", text="hi")["ok"]
    calls = fake_slack.wait_for("chat.postMessage", count=2)
    assert [c.status for c in calls] == [429, 200]


def test_fail_next_and_down(fake_slack, client):  # noqa: F811
    fake_slack.fail_next("chat.update", 2, status=500)
    for _ in range(2):
        with pytest.raises(SlackApiError) as err:
            client.chat_update(channel="C1", ts="1.0", text="x")
        assert err.value.response.status_code == 500
    fake_slack.set_down(True)
    with pytest.raises(SlackApiError) as err:
        client.auth_test()
    assert err.value.response.status_code == 503
    fake_slack.set_down(False)
    assert client.auth_test()["ok"]


def test_ephemeral(fake_slack, client):  # noqa: F811
    resp = client.chat_postEphemeral(channel="C1", user="U2", text="you may not approve this")
    assert resp["ok"] and resp["message_ts"]
    assert fake_slack.ephemerals[0]["user"] == "U2"
    (call,) = fake_slack.calls_to("chat.postEphemeral")
    assert call.params["text"] == "you may not approve this"


def test_usergroups_and_channel_members(fake_slack, client):  # noqa: F811
    fake_slack.groups["S0ONCALL"] = ["U1", "U2"]
    assert client.usergroups_users_list(usergroup="S0ONCALL")["users"] == ["U1", "U2"]
    with pytest.raises(SlackApiError) as err:
        client.usergroups_users_list(usergroup="S0NOPE")
    assert err.value.response["error"] == "no_such_subteam"

    fake_slack.channel_members["C0TEAM"] = ["U1", "U2", "U3"]
    first = client.conversations_members(channel="C0TEAM", limit=2)
    cursor = first["response_metadata"]["next_cursor"]
    second = client.conversations_members(channel="C0TEAM", limit=2, cursor=cursor)
    assert first["members"] + second["members"] == ["U1", "U2", "U3"]
    assert second["response_metadata"]["next_cursor"] == ""


def test_users_info_views_and_unknown_method(fake_slack, client):  # noqa: F811
    user = client.users_info(user="U0ALICE")["user"]
    assert user["real_name"] and user["profile"]["email"].endswith("@example.com")
    view = {"type": "modal", "title": {"type": "plain_text", "text": "Review"}, "blocks": []}
    assert client.views_open(trigger_id="t1", view=view)["view"]["id"].startswith("V")
    assert client.views_publish(user_id="U0ALICE", view={"type": "home", "blocks": []})["ok"]
    with pytest.raises(SlackApiError) as err:
        client.api_call("no.such.method")
    assert err.value.response["error"] == "unknown_method"


def test_wait_for_times_out_with_what_it_saw(fake_slack, client):  # noqa: F811
    client.auth_test()
    with pytest.raises(AssertionError, match=r"auth.test"):
        fake_slack.wait_for("chat.postMessage", timeout=0.2)


def test_wait_for_sees_calls_from_other_threads_and_delay(fake_slack, client):  # noqa: F811
    fake_slack.delay = 0.1
    worker = threading.Thread(target=lambda: client.chat_postMessage(channel="C1", text="later"))
    worker.start()
    (call,) = fake_slack.wait_for("chat.postMessage", timeout=5)
    worker.join()
    assert call.params["channel"] == "C1"


def test_context_manager_and_stop():
    with FakeSlack() as slack:
        url = slack.url
        assert WebClient(token="xoxb-test", base_url=url).auth_test()["ok"]
    with pytest.raises(Exception):  # noqa: B017 - any failure to connect: the server is gone
        WebClient(token="xoxb-test", base_url=url, timeout=2, retry_handlers=[]).auth_test()
