from signoff.domain.approval import may_decide, tally
from signoff.domain.model import TERMINAL, Decision, Status, can_move


def test_sponsor_may_never_approve_their_agents_request():
    v = may_decide(clicker="U1", decision=Decision.APPROVE, eligible={"U1", "U2"}, sponsor="U1")
    assert not v.allowed and "sponsor" in v.reason


def test_sponsor_who_is_an_approver_may_reject():
    assert may_decide(clicker="U1", decision=Decision.REJECT, eligible={"U1"}, sponsor="U1").allowed


def test_only_eligible_people_decide_and_only_once():
    assert not may_decide(clicker="U9", decision=Decision.APPROVE, eligible={"U1"}, sponsor="U0").allowed
    assert not may_decide(clicker="U1", decision=Decision.APPROVE, eligible={"U1"}, sponsor="U0",
                          already_decided_by=["U1"]).allowed
    assert may_decide(clicker="U1", decision=Decision.APPROVE, eligible={"U1"}, sponsor="U0").allowed


def test_quorum_counts_distinct_people_and_one_rejection_rejects():
    assert tally([("U1", "approve")], 2) is None
    assert tally([("U1", "approve"), ("U1", "approve")], 2) is None
    assert tally([("U1", "approve"), ("U2", "approve")], 2) == "approved"
    assert tally([("U1", "approve"), ("U2", "reject")], 1) == "rejected"
    assert tally([("U2", "reject")], 3) == "rejected"


def test_status_never_moves_backwards():
    for s in TERMINAL:
        assert not any(can_move(s, t) for t in Status)
    assert can_move("pending", "approved") and can_move("approved", "executing")
    assert not can_move("executing", "approved") and not can_move("approved", "pending")
