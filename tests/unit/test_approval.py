from signoff.domain.approval import approving, may_decide, quorum_reachable, step_sponsors, tally
from signoff.domain.model import TERMINAL, Decision, Status, can_move


def test_sponsor_may_never_approve_their_agents_request():
    v = may_decide(clicker="U1", decision=Decision.APPROVE, eligible={"U1", "U2"}, sponsors={"U1"})
    assert not v.allowed and "sponsor" in v.reason


def test_sponsor_who_is_an_approver_may_reject():
    assert may_decide(clicker="U1", decision=Decision.REJECT, eligible={"U1"}, sponsors={"U1"}).allowed


def test_only_eligible_people_decide_and_only_once():
    assert not may_decide(clicker="U9", decision=Decision.APPROVE, eligible={"U1"}, sponsors={"U0"}).allowed
    assert not may_decide(
        clicker="U1", decision=Decision.APPROVE, eligible={"U1"}, sponsors={"U0"}, already_decided_by=["U1"]
    ).allowed
    assert may_decide(clicker="U1", decision=Decision.APPROVE, eligible={"U1"}, sponsors={"U0"}).allowed


def test_a_steps_sponsors_are_its_agents_and_its_chains():
    assert step_sponsors(submitter="U0B", executor="U0B") == {"U0B"}
    assert step_sponsors(submitter="U0B", executor="U0C", chain=["U0A", None, "U0A"]) == {"U0A", "U0B", "U0C"}
    assert step_sponsors(submitter=None, executor=None) == frozenset()


def test_no_sponsor_of_a_step_may_approve_it_however_they_are_eligible():
    # The chain's sponsor is U0A, but the step was submitted by an agent U0B sponsors:
    # U0B is an approver, U0A came in through an escalation step; neither may approve.
    sponsors = step_sponsors(submitter="U0B", executor="U0B", chain=["U0A"])
    eligible = {"U0B", "U0A", "U0OWNER"}
    for who in ("U0A", "U0B"):
        v = may_decide(clicker=who, decision=Decision.APPROVE, eligible=eligible, sponsors=sponsors)
        assert not v.allowed and "sponsor" in v.reason
        # a rejection only fails safe
        assert may_decide(clicker=who, decision=Decision.REJECT, eligible=eligible, sponsors=sponsors).allowed
    assert may_decide(clicker="U0OWNER", decision=Decision.APPROVE, eligible=eligible, sponsors=sponsors).allowed
    assert approving(eligible, sponsors) == {"U0OWNER"}


def test_quorum_reachability_once_sponsors_are_set_aside():
    def reach(people, sponsors, required=1, unresolved=False):
        return quorum_reachable(people=people, unresolved=unresolved, sponsors=sponsors, required=required)

    assert reach({"U0OWNER", "U0B"}, {"U0B"}).allowed
    v = reach({"U0B"}, {"U0B"})
    assert not v.allowed and "U0B" in v.reason and "only 0" in v.reason
    assert not reach({"U0OWNER", "U0B", "U0C"}, {"U0B", "U0C"}, required=2).allowed
    assert reach({"U0OWNER", "U0B", "U0C"}, {"U0B"}, required=2).allowed
    # members of groups are known only at click time: not refused in advance
    assert reach({"U0B"}, {"U0B"}, unresolved=True).allowed


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
