"""The pacer keeps Slack's limits: per channel for chat.postMessage, per tier for the rest; a
429 pauses only what it names; low-priority posts leave headroom for the people who decide."""

from __future__ import annotations

from signoff.slack.pacing import Pacer


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_one_post_a_second_per_channel_after_a_short_burst():
    clock = Clock()
    p = Pacer(clock=clock)
    assert p.take("chat.postMessage", "C1") == 0 and p.take("chat.postMessage", "C1") == 0
    wait = p.take("chat.postMessage", "C1")
    assert 0.9 < wait <= 1.0
    assert p.take("chat.postMessage", "C2") == 0, "another channel is not held up"
    clock.t += wait
    assert p.take("chat.postMessage", "C1") == 0
    assert p.take("chat.postMessage", "C1") > 0


def test_tier_methods_share_a_workspace_bucket():
    clock = Clock()
    p = Pacer(clock=clock)
    taken = sum(1 for _ in range(50) if p.take("usergroups.users.list") == 0)  # Tier 2: 20/min
    assert taken == 2  # a burst of a tenth of a minute's worth
    clock.t += 3.0
    assert p.take("usergroups.users.list") == 0
    assert sum(1 for _ in range(100) if p.take("chat.update") == 0) == 5  # Tier 3: 50/min


def test_a_429_pauses_only_what_it_names():
    clock = Clock()
    p = Pacer(clock=clock)
    p.pause("chat.postMessage", "C1", 30)
    assert 29.9 < p.take("chat.postMessage", "C1") <= 30
    assert p.take("chat.postMessage", "C2") == 0
    assert p.take("chat.update", "C1") == 0
    p.pause("chat.update", "C1", 5)  # a tier method: paused for every channel
    assert p.take("chat.update", "C9") > 4
    clock.t += 30
    assert p.take("chat.postMessage", "C1") == 0


def test_the_workspace_ceiling_keeps_headroom_for_approvers():
    clock = Clock()
    p = Pacer(clock=clock)
    # security-thread posts (priority 2) to many channels drain the workspace bucket only so far
    security = sum(1 for i in range(100) if p.take("chat.postMessage", f"CSEC{i}", priority=2) == 0)
    assert security < 20
    approvers = sum(1 for i in range(100) if p.take("chat.postMessage", f"U{i}", priority=0) == 0)
    assert approvers >= 6, "the people who can decide still get through"


def test_the_share_divides_the_limits():
    clock = Clock()
    p = Pacer(share=2, clock=clock)
    assert p.take("chat.postMessage", "C1") == 0
    assert 1.9 < p.take("chat.postMessage", "C1") <= 2.0  # half a post a second, burst 1


def test_calls_told_to_wait_take_turns_instead_of_all_coming_back_at_the_next_token():
    clock = Clock()
    p = Pacer(clock=clock)
    assert p.take("chat.postMessage", "C1") == 0 and p.take("chat.postMessage", "C1") == 0
    waits = [p.take("chat.postMessage", "C1") for _ in range(5)]
    assert [round(w, 6) for w in waits] == [1.0, 2.0, 3.0, 4.0, 5.0]
    # each comes back at its turn and goes; the one after it is still told to wait
    for w in waits:
        clock.t = 1000.0 + w
        assert p.take("chat.postMessage", "C1") == 0
        assert p.take("chat.postMessage", "C9") == 0  # other channels never queue behind C1
    # a call arriving meanwhile queues after the last turn given, not before it
    clock.t = 1000.0 + 5.5
    assert round(p.take("chat.postMessage", "C1"), 6) == 0.5
    assert round(p.take("chat.postMessage", "C1"), 6) == 1.5


def test_a_tier_method_s_calls_take_turns_too_and_a_pause_puts_them_after_it():
    clock = Clock()
    p = Pacer(clock=clock)
    while p.take("chat.update", "C1") == 0:
        pass
    first, second = p.take("chat.update", "C2"), p.take("chat.update", "C3")
    assert round(second - first, 6) == round(60 / 50, 6)  # Tier 3: one call per 1.2 s
    p.pause("chat.postMessage", "C4", 30)
    assert [round(p.take("chat.postMessage", "C4"), 6) for _ in range(2)] == [30.0, 31.0]


def test_approvers_posts_do_not_queue_behind_low_priority_ones_workspace_wide():
    clock = Clock()
    p = Pacer(clock=clock)
    told = [p.take("chat.postMessage", f"CSEC{i}", priority=2) for i in range(100)]
    assert any(w > 0 for w in told)
    # the workspace bucket keeps its headroom by priority: no turn taken there
    assert p.take("chat.postMessage", "U0OWNER", priority=0) == 0
