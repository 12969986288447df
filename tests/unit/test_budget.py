"""Auto-approval budgets: parsing, the sliding period on a fake clock, scope keys."""

from datetime import datetime, timedelta, timezone

import pytest

from signoff.domain.budget import Budget, parse_budget, scope_key
from support import FakeClock


@pytest.mark.parametrize(
    "text,limit,per",
    [("5 per 1h", 5, 3600), ("1 per 90s", 1, 90), (" 20  per  1d ", 20, 86400), ("3 per 1h30m", 3, 5400)],
)
def test_parse(text, limit, per):
    assert parse_budget(text) == Budget(limit, timedelta(seconds=per))


@pytest.mark.parametrize("bad", ["5/1h", "five per 1h", "0 per 1h", "5 per", "5 per forever", "-1 per 1h", 5, None])
def test_parse_refuses(bad):
    with pytest.raises(ValueError):
        parse_budget(bad)


def test_sliding_period_with_a_fake_clock():
    """Spend as use-cases do (count what was spent since ``since(now)``, then ``allows``)."""
    clock = FakeClock(datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc))
    budget = parse_budget("3 per 1h")
    spent: list[datetime] = []

    def try_spend() -> bool:
        now = clock()
        used = sum(1 for t in spent if t >= budget.since(now))
        if budget.allows(used):
            spent.append(now)
            return True
        return False

    assert [try_spend() for _ in range(3)] == [True, True, True]
    clock.advance(minutes=30)
    assert not try_spend()  # 3 in the last hour
    clock.advance(minutes=29, seconds=59)
    assert not try_spend()
    clock.advance(seconds=1)  # exactly an hour after the first three: still counted (>=)
    assert not try_spend()
    clock.advance(seconds=1)
    assert try_spend()  # the first three fell out of the period
    assert try_spend() and try_spend()
    assert not try_spend()


def test_scope_keys():
    assert scope_key("wf", "r", "workflow", "api") == "wf:wf:rule:r"
    assert scope_key("wf", "r", "target", "api") == "wf:wf:rule:r:target:api"
    long = scope_key("w" * 100, "r" * 100, "target", "t" * 200)
    assert len(long) <= 300 and "target-sha256" in long
    assert str(parse_budget("5 per 1h")) == "5 per 1h"


def test_a_target_budget_is_shared_by_every_spelling_rules_match():
    # rules match targets without regard to case, so the budget must count them as one
    key = scope_key("wf", "r", "target", "checkout-api")
    assert scope_key("wf", "r", "target", "Checkout-API") == key
    assert scope_key("wf", "r", "target", "ＣＨＥＣＫＯＵＴ-api") == key
    assert scope_key("wf", "r", "target", "checkоut-api") != key  # a Cyrillic о: another target
    assert scope_key("wf", "r", "target", "T" * 200) == scope_key("wf", "r", "target", "t" * 200)
