"""The outbox's Web API client keeps its connections open and fails as slack_sdk's does."""

from __future__ import annotations

import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from slack_sdk.errors import SlackApiError

from fakes.slack_api import FakeSlack
from signoff.outbox.dispatcher import GiveUp, Retry
from signoff.slack.app import web_client
from signoff.slack.client import KeepAliveWebClient
from signoff.slack.delivery import RateLimited, call_slack


class Counting:
    """Counts the TCP connections the fake accepts."""

    def __init__(self, fake: FakeSlack):
        self.count = 0
        self.sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        server = fake._server
        original = server.process_request

        def process_request(request, client_address):
            with self._lock:
                self.count += 1
                self.sockets.append(request)
            return original(request, client_address)

        server.process_request = process_request


@pytest.fixture
def client(fake_slack):
    c = web_client("xoxb-test", fake_slack.url)
    yield c
    c.close()


def test_the_server_builds_a_keep_alive_client(client):
    assert isinstance(client, KeepAliveWebClient)
    assert client.retry_handlers == [] and client.timeout == 10


def test_many_calls_share_one_connection(fake_slack, client):
    conns = Counting(fake_slack)
    for i in range(20):
        resp = client.chat_postMessage(
            channel="C1",
            text=f"n{i}",
            blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}],
            metadata={"event_type": "t", "event_payload": {"i": str(i)}},
        )
        assert resp["ok"] and resp["channel"] == "C1"
    assert len(fake_slack.calls_to("chat.postMessage")) == 20
    assert conns.count == 1
    # parameters arrive as slack_sdk sends them (JSON body, bearer token)
    last = fake_slack.calls_to("chat.postMessage")[-1]
    assert last.token == "xoxb-test"
    assert last.params["metadata"]["event_payload"] == {"i": "19"}
    assert last.params["blocks"][0]["type"] == "section"


def test_form_encoded_calls_and_pagination_args(fake_slack, client):
    fake_slack.channel_members["C9"] = ["U1", "U2", "U3"]
    resp = client.conversations_members(channel="C9", limit=2)
    assert resp["members"] == ["U1", "U2"]
    assert resp["response_metadata"]["next_cursor"] == "2"


def test_each_thread_keeps_its_connection(fake_slack):
    conns = Counting(fake_slack)
    fake_slack.delay = 0.02
    c = KeepAliveWebClient(token="xoxb-test", base_url=fake_slack.url, retry_handlers=[])
    try:
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda i: c.chat_postMessage(channel="C1", text=str(i))["ok"], range(64)))
    finally:
        c.close()
    assert all(results) and len(fake_slack.calls_to("chat.postMessage")) == 64
    assert conns.count <= 4


def test_rate_limit_keeps_retry_after(fake_slack, client):
    fake_slack.rate_limit_next("chat.postMessage", retry_after=7)
    with pytest.raises(SlackApiError) as err:
        client.chat_postMessage(channel="C1", text="x")
    assert err.value.response.status_code == 429
    assert err.value.response.headers["Retry-After"] == "7"
    assert err.value.response["error"] == "ratelimited"
    fake_slack.rate_limit_next("chat.postMessage", retry_after=3)
    with pytest.raises(RateLimited) as r:  # waited out (a deferral), not counted as a failure
        call_slack(client.chat_postMessage, channel="C1", text="x")
    assert r.value.after == 3.0
    # the connection is still good afterwards
    assert client.chat_postMessage(channel="C1", text="y")["ok"]


def test_http_errors_and_refusals(fake_slack, client):
    fake_slack.fail_next("chat.postMessage", status=500)
    with pytest.raises(Retry, match="500"):
        call_slack(client.chat_postMessage, channel="C1", text="x")
    with pytest.raises(GiveUp, match="no_text"):
        call_slack(client.chat_postMessage, channel="C1", text="")
    fake_slack.set_down()
    with pytest.raises(Retry, match="503"):
        call_slack(client.chat_postMessage, channel="C1", text="x")


def test_unreachable_and_timeout_become_retry(fake_slack):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens here once closed
    dead = KeepAliveWebClient(token="xoxb-test", base_url=f"http://127.0.0.1:{port}/", retry_handlers=[])
    with pytest.raises(OSError):
        dead.auth_test()
    with pytest.raises(Retry, match="unreachable"):
        call_slack(dead.auth_test)
    dead.close()

    fake_slack.delay = 1.0
    slow = KeepAliveWebClient(token="xoxb-test", base_url=fake_slack.url, timeout=0.2, retry_handlers=[])
    with pytest.raises(Retry, match="unreachable"):
        call_slack(slow.auth_test)
    slow.close()


def test_a_connection_the_server_closed_is_replaced(fake_slack, client):
    conns = Counting(fake_slack)
    assert client.auth_test()["ok"]
    # the server drops the idle kept-alive connection: the next call opens a new one
    for sock in conns.sockets:
        sock.shutdown(socket.SHUT_RDWR)
    assert client.auth_test()["ok"]
    assert client.auth_test()["ok"]
    assert conns.count == 2


def test_through_a_proxy_calls_go_through_urllib_unless_bypassed(fake_slack, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    proxied = KeepAliveWebClient(
        token="xoxb-test", base_url=fake_slack.url, retry_handlers=[], proxy=f"http://127.0.0.1:{port}"
    )
    with pytest.raises(Retry, match="unreachable"):  # the (absent) proxy was asked
        call_slack(proxied.auth_test)
    assert not fake_slack.calls
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    assert proxied.auth_test()["ok"]
    proxied.close()


# --------------------------------------------------------------------------- post_json
def _post(client):
    """chat.postMessage as the outbox makes it (post_json), with call_slack's signature."""
    return lambda **body: client.post_json("chat.postMessage", body)


def test_post_json_sends_what_the_sdk_method_sends(fake_slack, client):
    args = {
        "channel": "C1",
        "text": "n",
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "é"}}],
        "metadata": {"event_type": "t", "event_payload": {"i": "1"}},
        "unfurl_links": False,
        "thread_ts": None,
    }
    by_sdk = client.chat_postMessage(**args)
    by_us = client.post_json("chat.postMessage", dict(args))
    assert by_us["ok"] and by_us["channel"] == by_sdk["channel"] == "C1" and by_us["ts"] != by_sdk["ts"]
    assert by_us.status_code == 200 and by_us.api_url == by_sdk.api_url
    sdk_call, our_call = fake_slack.calls_to("chat.postMessage")
    assert our_call.params == sdk_call.params  # the same JSON body (a None left out, as the SDK does)
    assert "thread_ts" not in our_call.params
    assert our_call.token == sdk_call.token == "xoxb-test"
    update = client.post_json("chat.update", {"channel": "C1", "ts": by_us["ts"], "text": "edited"})
    assert update["ok"] and fake_slack.calls_to("chat.update")[0].params["text"] == "edited"


def test_post_json_fails_as_the_sdk_method_fails(fake_slack, client):
    fake_slack.rate_limit_next("chat.postMessage", retry_after=7)
    with pytest.raises(SlackApiError) as err:
        client.post_json("chat.postMessage", {"channel": "C1", "text": "x"})
    assert err.value.response.status_code == 429
    assert err.value.response.headers["Retry-After"] == err.value.response.headers["retry-after"] == "7"
    assert err.value.response["error"] == "ratelimited"
    fake_slack.rate_limit_next("chat.postMessage", retry_after=3)
    with pytest.raises(RateLimited) as r:
        call_slack(_post(client), channel="C1", text="x")
    assert r.value.after == 3.0
    fake_slack.fail_next("chat.postMessage", status=500)
    with pytest.raises(Retry, match="500"):
        call_slack(_post(client), channel="C1", text="x")
    with pytest.raises(GiveUp, match="no_text"):
        call_slack(_post(client), channel="C1", text="")
    fake_slack.set_down()
    with pytest.raises(Retry, match="503"):
        call_slack(_post(client), channel="C1", text="x")
    fake_slack.set_down(False)
    assert client.post_json("chat.postMessage", {"channel": "C1", "text": "y"})["ok"]


def test_post_json_reports_to_observe_and_reuses_the_connection(fake_slack, client):
    conns = Counting(fake_slack)
    seen = []
    client.observe = lambda method, outcome, seconds: seen.append((method, outcome))
    for i in range(5):
        client.post_json("chat.postMessage", {"channel": "C1", "text": str(i)})
    fake_slack.rate_limit_next("chat.postMessage", retry_after=1)
    with pytest.raises(SlackApiError):
        client.post_json("chat.postMessage", {"channel": "C1", "text": "x"})
    assert seen == [("chat.postMessage", "ok")] * 5 + [("chat.postMessage", "ratelimited")]
    assert conns.count == 1
