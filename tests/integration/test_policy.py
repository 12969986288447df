"""Runtime policy on SQLite and PostgreSQL: windows and freezes at grant time, approval
lapsing, rules (deny, overrides, rollback requirement), auto-approve budgets and revoke,
rollback requests, chains, policy versioning. Time is a fake clock; the sweep is driven
with ``sweep(ctx, now=…)``."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from signoff.bootstrap import ConfigHolder
from signoff.config import load_config, parse_config
from signoff.domain.errors import Conflict, Forbidden, Invalid, NotFound
from signoff.store.repo import Repo
from signoff.usecases import agent_ops
from signoff.usecases.decide import decide
from signoff.usecases.outcome import record_outcome
from signoff.usecases.revoke import revoke
from signoff.usecases.rollback import request_rollback
from signoff.usecases.slack_ops import render_data
from signoff.usecases.submit import submit
from signoff.usecases.sweep import sweep
from support import BASIC_YAML, FakeClock, runtime, submission

UTC = timezone.utc
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday

POLICY_YAML = (
    BASIC_YAML
    + """    rules:
      - name: no-drops
        match: {action_type: "db.drop*"}
        deny: dropping databases is never done by agents
      - name: restarts
        match: {action_type: service.restart, risk: [low, medium]}
        auto_approve: {limit: 2 per 1h, scope: target}
      - name: expedite-rollbacks
        match: {rollback: true}
        auto_approve: {limit: 10 per 1h}
        require_rollback: false
      - name: evening-deploys
        match: {action_type: deploy}
        approvers: [U0DEPLOYER]
        windows:
          - {days: [mon, tue, wed, thu, fri], start: "18:00", end: "20:00", timezone: UTC}
        approval_ttl: 12h
      - name: careful-deploys
        match: {action_type: "deploy.*"}
        windows:
          - {days: [mon, tue, wed, thu, fri], start: "18:00", end: "20:00", timezone: UTC}
        approval_ttl: 2h
      - name: low-risk-config
        match: {action_type: config.set, risk: [low]}
        require_rollback: true
"""
)


class P:
    """A runtime on one database with a fake clock and a workflow file we can swap."""

    def __init__(self, db_url: str, monkeypatch, yaml_text: str = POLICY_YAML):
        self.clock = FakeClock(T0)
        self.rt = runtime(db_url, yaml_text, clock=self.clock, monkeypatch=monkeypatch)
        self.ctx = self.rt.context
        self.config = parse_config(yaml_text)
        self.ctx.config = lambda: self.config

    def use(self, yaml_text: str) -> None:
        self.config = parse_config(yaml_text)

    def submit(self, agent: str = "deploy-bot", **over) -> dict:
        return submit(self.ctx, agent_id=agent, body=submission(**over)).request

    def view(self, rid: str, agent: str = "deploy-bot") -> dict:
        return agent_ops.get_request(self.ctx, agent_id=agent, request_id=rid)

    def approve(self, rid: str, user: str = "U0OWNER"):
        return decide(self.ctx, request_id=rid, user=user, decision="approve")

    def row(self, rid: str) -> SimpleNamespace:
        def read(s):
            r = Repo(s).get(rid)
            return SimpleNamespace(**{c.key: getattr(r, c.key) for c in r.__table__.columns})

        return self.rt.store.read(read)

    def events(self, rid: str, type_: str | None = None) -> list[tuple[str, str, dict]]:
        evs = self.rt.store.read(lambda s: [(e.type, e.actor, e.data) for e in Repo(s).events(rid)])
        return [e for e in evs if type_ is None or e[0] == type_]

    def render(self, rid: str) -> dict:
        return self.rt.store.read(lambda s: _render(self.ctx, Repo(s), rid))

    def sweep(self, **delta):
        now = T0 + timedelta(**delta)
        self.clock.now = now
        return sweep(self.ctx, now=now)

    def close(self):
        self.rt.store.dispose()


def _render(ctx, repo, rid):
    from signoff.usecases import slack_ops

    # The evidence link is someone else's concern here; keep the render self-contained.
    original = slack_ops.evidence_url
    slack_ops.evidence_url = lambda *_a, **_k: "http://evidence"
    try:
        return render_data(ctx, repo, repo.get(rid))
    finally:
        slack_ops.evidence_url = original


@pytest.fixture
def p(db_url, monkeypatch):
    env = P(db_url, monkeypatch)
    yield env
    env.close()


DEPLOY = {"type": "deploy", "target": "checkout-api", "environment": "production"}


# -- windows -------------------------------------------------------------------------------


def test_submission_says_when_it_could_execute(p):
    r = p.submit(action=DEPLOY)
    assert r["rule"] == "evening-deploys"
    assert r["executable_from"] == "2026-03-02T18:00:00Z" == r["not_before"]
    [(_, _, data)] = p.events(r["id"], "request.submitted")
    assert data["executable_from"] == "2026-03-02T18:00:00Z"
    assert data["rule"] == "evening-deploys" and "outside the change windows" in data["schedule"]
    # Without a window, nothing to wait for.
    assert p.submit()["executable_from"] is None


def test_approval_outside_a_window_gets_its_grant_when_the_window_opens(p):
    rid = p.submit(action=DEPLOY)["id"]
    p.clock.advance(minutes=5)
    assert p.approve(rid, "U0OWNER").outcome == "refused"  # the rule's approvers replace the owner
    assert p.approve(rid, "U0DEPLOYER").outcome == "approved"
    v = p.view(rid)
    assert v["status"] == "approved" and v["grant"] is None and v["not_before"] == "2026-03-02T18:00:00Z"
    row = p.row(rid)
    assert row.due_at == datetime(2026, 3, 2, 18, 0, tzinfo=UTC)
    assert row.approval_expires_at == T0 + timedelta(minutes=5, hours=12)
    [(_, _, checked)] = p.events(rid, "policy.checked")
    assert checked["allowed"] is False and checked["not_before"].startswith("2026-03-02T18:00:00")

    assert p.sweep(hours=8, minutes=59).granted == 0
    assert p.view(rid)["grant"] is None
    assert p.sweep(hours=9).granted == 1
    v = p.view(rid)  # the executor pulls it: executing
    assert v["grant"] and v["status"] == "executing" and v["not_before"] is None
    checks = [d for _, _, d in p.events(rid, "policy.checked")]
    assert [c["allowed"] for c in checks] == [False, True]
    assert p.sweep(hours=10).granted == 0  # nothing owed twice


def test_approval_lapses_before_the_window_opens(p):
    rid = p.submit(action={"type": "deploy.canary", "target": "checkout-api"})["id"]
    p.clock.advance(minutes=5)
    assert p.approve(rid).outcome == "approved"
    assert p.row(rid).approval_expires_at == T0 + timedelta(hours=2, minutes=5)
    assert p.sweep(hours=2).expired == 0
    report = p.sweep(hours=2, minutes=5)
    assert report.expired == 1 and report.granted == 0
    row = p.row(rid)
    assert row.status == "expired" and row.grant_token is None
    assert any(e["kind"] == "expired" for e in row.exceptions)
    assert p.sweep(hours=9).granted == 0


def test_a_freeze_declared_after_approval_holds_the_grant(p):
    rid = p.submit(action=DEPLOY)["id"]
    p.approve(rid, "U0DEPLOYER")
    frozen = POLICY_YAML.replace(
        "    rules:\n",
        """    freezes:
      - {start: 2026-03-02T17:00:00Z, end: 2026-03-02T19:00:00Z, reason: incident 4711}
    rules:
""",
    )
    p.use(frozen)
    assert p.sweep(hours=9).granted == 0  # 18:00: the window is open, the freeze is not over
    # The rule sets windows but no freezes: the workflow's freeze applies to it too; it
    # ends inside the window.
    assert p.row(rid).not_before == datetime(2026, 3, 2, 19, 0, tzinfo=UTC)
    checks = [d for _, _, d in p.events(rid, "policy.checked")]
    assert "incident 4711" in checks[-1]["reason"]
    assert p.sweep(hours=10).granted == 1


def test_a_deny_rule_added_after_approval_refuses_the_grant(p):
    rid = p.submit(action=DEPLOY)["id"]
    p.approve(rid, "U0DEPLOYER")
    p.use(POLICY_YAML.replace('match: {action_type: "db.drop*"}', 'match: {action_type: "deploy"}'))
    p.sweep(hours=9)
    v = p.view(rid)
    assert v["status"] == "rejected" and v["grant"] is None
    assert v["decisions"][-1]["by"] == "policy:denied_by_rule:no-drops"


# -- rules at submission -------------------------------------------------------------------


def test_deny_rule_refuses_with_its_reason_before_the_rollback_check(p):
    with pytest.raises(Forbidden) as exc:
        p.submit(action={"type": "db.drop_table", "target": "orders"}, risk="high")
    assert "dropping databases is never done by agents" in exc.value.message
    with pytest.raises(NotFound):
        p.submit(workflow="nope", action={"type": "db.drop_table", "target": "orders"})
    with pytest.raises(Forbidden) as exc:
        p.submit(agent="outsider", action={"type": "db.drop_table", "target": "orders"})
    assert "may not submit" in exc.value.message


def test_rollback_requirement_by_rule_and_by_risk(p):
    with pytest.raises(Invalid) as exc:
        p.submit(action={"type": "config.set", "target": "flags"}, risk="low")
    assert exc.value.fields == ["rollback"] and "low-risk-config" in exc.value.message
    assert (
        p.submit(action={"type": "config.set", "target": "flags"}, risk="low", rollback={"description": "set it back"})[
            "status"
        ]
        == "pending"
    )
    with pytest.raises(Invalid) as exc:
        p.submit(risk="high")
    assert exc.value.fields == ["rollback"]


def test_the_request_keeps_the_effective_policy_it_started_with(p):
    rid = p.submit(action=DEPLOY)["id"]
    row = p.row(rid)
    assert row.rule == "evening-deploys"
    assert row.policy["approvers"] == ["U0DEPLOYER"] and row.policy["rules"] == []
    from signoff.config import Workflow

    assert Workflow.model_validate(row.policy).policy_hash() == row.policy_hash
    [(_, _, data)] = p.events(rid, "request.submitted")
    assert data["workflow_sha256"] == p.config.workflow("prod-restart").policy_hash()
    assert data["rules_matched"] == ["evening-deploys"]
    # A new file changes nothing for it: the owner still cannot approve, the deployer can.
    p.use(POLICY_YAML.replace("approvers: [U0DEPLOYER]", "approvers: [U0OWNER]"))
    assert p.approve(rid, "U0OWNER").outcome == "refused"
    assert p.approve(rid, "U0DEPLOYER").outcome == "approved"


# -- auto-approve, budgets, revoke ---------------------------------------------------------


def test_auto_approve_within_budget_then_people(p):
    first = p.submit(risk="low")
    assert first["status"] == "approved"
    assert first["decisions"] == [{"by": "policy:rule:restarts", "decision": "approve", "at": "2026-03-02T09:00:00Z"}]
    assert p.row(first["id"]).grant_token  # issued at once
    assert p.submit()["status"] == "approved"
    third = p.submit()
    assert third["status"] == "pending" and third["decisions"] == []
    [(_, _, skipped)] = p.events(third["id"], "policy.auto_approve_skipped")
    assert skipped["used"] == 2 and skipped["budget"] == "2 per 1h"
    # Per target: another target has its own budget.
    other = p.submit(action={"type": "service.restart", "target": "search-api"})
    assert other["status"] == "approved"
    # An hour later the first two have left the sliding period.
    p.clock.advance(hours=1, seconds=1)
    assert p.submit()["status"] == "approved"
    # Never for critical, whatever the budget.
    crit = p.submit(
        risk="critical",
        action={"type": "service.restart", "target": "idle-api"},
        rollback={"description": "restart again"},
    )
    assert crit["status"] == "pending" and crit["rule"] is None


def test_auto_approved_request_is_posted_with_revoke_and_the_owner_revokes_it(p):
    rid = p.submit()["id"]
    data = p.render(rid)
    assert data["auto_approved_by"] == "restarts" and data["revocable"] is True
    assert p.rt.store.read(lambda s: [(m.role, m.target) for m in Repo(s).messages(rid)]) == [
        ("request", "C0APPROVALS")
    ]

    refused = revoke(p.ctx, request_id=rid, user="U0NOBODY", channel="C0APPROVALS")
    assert refused.outcome == "refused"
    assert p.row(rid).status == "approved"
    assert any(e["kind"] == "refused_click" for e in p.row(rid).exceptions)

    done = revoke(p.ctx, request_id=rid, user="U0OWNER", channel="C0APPROVALS")
    assert done.outcome == "revoked"
    v = p.view(rid)
    assert v["status"] == "rejected" and v["grant"] is None
    assert [d["by"] for d in v["decisions"]] == ["policy:rule:restarts", "U0OWNER"]
    assert p.events(rid, "grant.revoked")[0][1] == "U0OWNER"
    assert p.render(rid)["revocable"] is False
    with pytest.raises(Conflict):
        record_outcome(p.ctx, agent_id="deploy-bot", request_id=rid, body={"status": "succeeded"})
    assert revoke(p.ctx, request_id=rid, user="U0OWNER").outcome == "already"


def test_revoke_is_too_late_once_executing_and_only_for_automatic_approvals(p):
    rid = p.submit()["id"]
    assert p.view(rid)["status"] == "executing"  # pulled with its grant
    assert revoke(p.ctx, request_id=rid, user="U0OWNER").outcome == "already"
    human = p.submit(risk="high", rollback={"description": "undo"})["id"]
    p.approve(human)
    assert revoke(p.ctx, request_id=human, user="U0OWNER").outcome == "refused"


def test_auto_approve_budget_is_shared_safely_between_concurrent_submissions(p):
    import threading

    results, lock = [], threading.Lock()

    def go():
        r = p.submit(action={"type": "service.restart", "target": "race-api"})
        with lock:
            results.append(r["status"])

    threads = [threading.Thread(target=go) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["approved"] * 2 + ["pending"] * 4


# -- rollback ------------------------------------------------------------------------------

ROLLBACK_PLAN = {
    "description": "start the old version again",
    "action": {"type": "service.start", "target": "checkout-api", "parameters": {"version": "41"}},
}


def _executed(p: P, outcome: str = "succeeded", **over) -> str:
    rid = p.submit(risk="high", rollback=ROLLBACK_PLAN, **over)["id"]
    assert p.approve(rid).outcome == "approved"
    assert p.view(rid)["status"] == "executing"
    record_outcome(p.ctx, agent_id="deploy-bot", request_id=rid, body={"status": outcome})
    return rid


def test_the_owner_rolls_back_from_slack(p):
    rid = _executed(p, "failed")
    assert p.render(rid)["can_roll_back"] is True
    refused = request_rollback(p.ctx, request_id=rid, user="U0NOBODY")
    assert refused.outcome == "refused"
    made = request_rollback(p.ctx, request_id=rid, user="U0OWNER", channel="C0APPROVALS")
    assert made.outcome == "created"
    # Through policy like any request: the rollback rule expedites it.
    assert p.row(made.request_id).status == "approved"
    rb = p.view(made.request_id)
    assert rb["rollback_of"] == rid and rb["action"] == ROLLBACK_PLAN["action"]
    assert rb["submitted_by"] == "deploy-bot" and rb["executor"] == "deploy-bot"
    assert rb["rule"] == "expedite-rollbacks" and rb["grant"]
    assert rb["title"].startswith("Roll back: ")
    [(_, _, sub)] = p.events(made.request_id, "request.submitted")
    assert sub["requested_by"] == "U0OWNER" and sub["via"] == "slack"
    assert p.events(rid, "rollback.linked")[0][2]["rollback_request"] == made.request_id
    assert p.render(rid)["can_roll_back"] is False
    again = request_rollback(p.ctx, request_id=rid, user="U0OWNER")
    assert again.outcome == "already" and made.request_id in again.message


def test_rollback_is_offered_only_after_the_outcome_and_with_an_action(p):
    rid = p.submit(risk="high", rollback=ROLLBACK_PLAN)["id"]
    assert p.render(rid)["can_roll_back"] is False
    assert request_rollback(p.ctx, request_id=rid, user="U0OWNER").outcome == "refused"
    plain = p.submit(risk="high", rollback={"description": "by hand"})["id"]
    p.approve(plain)
    p.view(plain)
    record_outcome(p.ctx, agent_id="deploy-bot", request_id=plain, body={"status": "succeeded"})
    assert p.render(plain)["can_roll_back"] is False
    assert "no rollback action" in request_rollback(p.ctx, request_id=plain, user="U0OWNER").message


def test_an_agent_submits_a_rollback_itself(p):
    rid = _executed(p)
    rb = p.submit(rollback_of=rid, action=ROLLBACK_PLAN["action"], risk="high")
    assert rb["rollback_of"] == rid and rb["status"] == "approved"  # expedited, no plan required
    # A critical rollback matches the same rule, but automation never applies to critical.
    crit = p.submit(rollback_of=rid, action=ROLLBACK_PLAN["action"], risk="critical")
    assert crit["rule"] == "expedite-rollbacks" and crit["status"] == "pending"
    # Someone else's request does not exist for this agent.
    with pytest.raises(NotFound):
        p.submit(agent="other-bot", rollback_of=rid, action=ROLLBACK_PLAN["action"])
    with pytest.raises(NotFound):
        p.submit(rollback_of="00000000-0000-0000-0000-000000000000", action=ROLLBACK_PLAN["action"])
    pending = p.submit(risk="high", rollback=ROLLBACK_PLAN)["id"]
    with pytest.raises(Conflict):
        p.submit(rollback_of=pending, action=ROLLBACK_PLAN["action"])


# -- chains --------------------------------------------------------------------------------


def test_chains_keep_their_sponsor_and_refuse_outsiders(p):
    root = p.submit(risk="high", rollback={"description": "undo"}, executor="deploy-bot")
    # other-bot neither submitted nor executes the root: it may not continue from it.
    with pytest.raises(Forbidden) as refused:
        p.submit(agent="other-bot", parent_id=root["id"])
    assert refused.value.fields == ["parent_id"]
    # deploy-bot continues the chain, executed by other-bot: other-bot joins it.
    step = p.submit(parent_id=root["id"], executor="other-bot", risk="high", rollback={"description": "undo"})
    assert step["sponsor"] == "U0SPONSOR"
    # Now other-bot may continue through the step it executes (only), under the chain's sponsor.
    with pytest.raises(Forbidden):
        p.submit(agent="other-bot", parent_id=root["id"], risk="high", rollback={"description": "undo"})
    nxt = p.submit(agent="other-bot", parent_id=step["id"], risk="high", rollback={"description": "undo"})
    assert nxt["sponsor"] == "U0SPONSOR" and nxt["submitted_by"] == "other-bot"
    [(_, actor, data)] = p.events(nxt["id"], "request.submitted")
    assert (actor, data["submitted_by"], data["executor"], data["sponsor"], data["parent_id"], data["sponsors"]) == (
        "other-bot",
        "other-bot",
        "other-bot",
        "U0SPONSOR",
        step["id"],
        ["U0OTHERSP", "U0SPONSOR"],
    )
    # The chain's sponsor may not approve any step of it.
    assert p.approve(nxt["id"], "U0SPONSOR").outcome == "refused"
    assert p.approve(nxt["id"], "U0OTHERSP").outcome == "refused"  # not an approver
    assert p.approve(nxt["id"], "U0SECOND").outcome == "approved"


def test_a_chain_is_not_continued_through_a_dead_request(p):
    from signoff.usecases.cancel import cancel

    parent = p.submit(risk="high", rollback={"description": "undo"})["id"]
    cancel(p.ctx, agent_id="deploy-bot", request_id=parent)
    with pytest.raises(Forbidden) as refused:
        p.submit(parent_id=parent, risk="high", rollback={"description": "undo"})
    assert refused.value.fields == ["parent_id"] and "cancelled" in refused.value.message
    with pytest.raises(NotFound):
        p.submit(parent_id="00000000-0000-0000-0000-000000000000")


# -- policy versioning ---------------------------------------------------------------------


def test_reload_keeps_the_old_file_when_the_new_one_is_invalid(tmp_path, p):
    path = tmp_path / "signoff.yaml"
    path.write_text(POLICY_YAML)
    holder = ConfigHolder(load_config(path), str(path))
    before = holder()
    path.write_text(POLICY_YAML.replace("limit: 2 per 1h", "limit: plenty"))
    ok, why = holder.reload()
    assert not ok and "invalid budget" in why
    assert holder() is before
    path.write_text(POLICY_YAML.replace("timeout: 30m", "timeout: 45m"))
    assert holder.reload() == (True, "reloaded")
    assert holder().workflow("prod-restart").timeout == timedelta(minutes=45)
    # In-flight requests keep the policy they started under.
    rid = p.submit(risk="high", rollback={"description": "undo"})["id"]
    p.ctx.config = holder
    assert p.row(rid).deadline == T0 + timedelta(minutes=30)
    assert p.submit(risk="high", rollback={"description": "undo"})["deadline"] == "2026-03-02T09:45:00Z"


# -- over HTTP -----------------------------------------------------------------------------


def test_policy_answers_over_the_agent_api(p):
    from fastapi.testclient import TestClient

    from signoff.api.app import create_app
    from support import SECRETS, dumps, signed_headers

    client = TestClient(create_app(p.ctx), raise_server_exceptions=False)

    def post(body, agent="deploy-bot", secret=SECRETS["DEPLOY_BOT_SECRET"]):
        data = dumps(body)
        return client.post(
            "/v1/actions", content=data, headers=signed_headers(agent, secret, data, ts=int(p.clock().timestamp()))
        )

    r = post(submission(action=DEPLOY))
    assert r.status_code == 201
    assert r.json()["executable_from"] == "2026-03-02T18:00:00Z" and r.json()["rule"] == "evening-deploys"
    r = post(submission(action={"type": "db.drop_table", "target": "orders"}, risk="critical"))
    assert r.status_code == 403
    assert "dropping databases is never done by agents" in r.json()["error"]["message"]
    r = post(submission(action={"type": "config.set", "target": "flags"}, risk="low"))
    assert r.status_code == 422 and r.json()["error"]["fields"] == ["rollback"]
    r = post(submission(parent_id="00000000-0000-0000-0000-000000000000"))
    assert r.status_code == 404
    auto = post(submission(risk="low"))
    assert auto.status_code == 201 and auto.json()["status"] == "approved"
    assert auto.json()["decisions"][0]["by"] == "policy:rule:restarts"
    client.close()
