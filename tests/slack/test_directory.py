"""The Slack directory (user group and channel members) against the fake Web API."""

from __future__ import annotations

import threading

from slack_sdk import WebClient

from signoff.slack.directory import SlackDirectory


def test_a_burst_on_a_cold_cache_makes_one_call(fake_slack):
    fake_slack.groups["S0ONCALL"] = ["U0A", "U0B"]
    fake_slack.delay = 0.3  # a slow Slack: the burst arrives while the first look-up runs
    directory = SlackDirectory(WebClient(token="xoxb-test", base_url=fake_slack.url))
    barrier = threading.Barrier(12)
    seen: list[set[str]] = []

    def click():
        barrier.wait()
        seen.append(directory.members("S0ONCALL"))

    threads = [threading.Thread(target=click) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [{"U0A", "U0B"}] * 12
    assert len(fake_slack.calls_to("usergroups.users.list")) == 1
    # and from the cache afterwards
    assert directory.members("S0ONCALL") == {"U0A", "U0B"}
    assert len(fake_slack.calls_to("usergroups.users.list")) == 1


def test_an_unresolvable_group_fails_closed_for_everyone_waiting(fake_slack):
    fake_slack.fail_next("usergroups.users.list", times=1, status=500)
    fake_slack.delay = 0.2
    directory = SlackDirectory(WebClient(token="xoxb-test", base_url=fake_slack.url))
    out: list[set[str]] = []
    threads = [threading.Thread(target=lambda: out.append(directory.members("S0GONE"))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out == [set()] * 4
