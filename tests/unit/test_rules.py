"""Rule matching order, globs, merging, and the rule keys of the workflow file."""

from datetime import timedelta

import pytest

from signoff.config import ConfigError, parse_config
from signoff.policy.evaluate import evaluate, facts_of
from signoff.policy.rules import (
    Facts,
    first_match,
    merge,
    mismatches,
    rollback_required,
)
from support import BASIC_YAML


class M:
    def __init__(self, action_type=None, target=None, environment=None, risk=None, rollback=None):
        self.action_type, self.target, self.environment = action_type, target, environment
        self.risk, self.rollback = risk, rollback


class R:
    def __init__(self, name, match=None):
        self.name, self.match = name, match


FACTS = Facts("db.migrate", "orders-db", "production", "high")


def test_first_matching_rule_wins():
    rules = [R("other", M(action_type="service.*")), R("db", M(action_type="db.*")), R("all")]
    assert first_match(rules, FACTS).name == "db"
    assert first_match(list(reversed(rules)), FACTS).name == "all"


def test_every_condition_must_hold_and_mismatches_are_named():
    m = M(action_type="db.*", target="payments-*", environment="production", risk=["high", "critical"])
    assert mismatches(m, FACTS) == ["target"]
    assert mismatches(M(environment=["staging"], risk=["low"]), FACTS) == ["environment", "risk"]
    assert mismatches(None, FACTS) == []


def test_globs_support_classes():
    assert not mismatches(M(target="orders-d?"), FACTS)
    assert not mismatches(M(target="[no]rders-*"), FACTS)
    assert mismatches(M(target="[a-m]rders-*"), FACTS) == ["target"]
    assert not mismatches(M(action_type=["svc.*", "db.migrate"]), FACTS)


def test_globs_and_values_compare_case_insensitively():
    assert not mismatches(M(target="ORDERS-*", action_type="DB.Migrate", environment="PRODUCTION"), FACTS)
    assert not mismatches(M(target="[N-O]rders-D?"), FACTS)
    shouting = Facts("DB.DROP", "Orders-DB", "Production", "high")
    assert not mismatches(M(action_type="db.drop*", target="orders-db", environment="production"), shouting)
    assert not mismatches(M(environment=["staging", "production"]), Facts("x", "y", "PRODuction", "low"))
    # caseless means casefold, and compatibility forms count as their plain letters
    assert not mismatches(M(target="straße-*"), Facts("x", "STRASSE-1", None, "low"))
    assert not mismatches(M(environment="production"), Facts("x", "y", "ｐｒｏｄｕｃｔｉｏｎ", "low"))
    # a look-alike letter of another script is a different value
    assert mismatches(M(environment="production"), Facts("x", "y", "prоduction", "low")) == ["environment"]


def test_missing_environment_never_matches_an_environment_condition():
    facts = Facts("db.migrate", "orders-db", None, "low")
    assert mismatches(M(environment="production"), facts) == ["environment"]


def test_rollback_condition():
    rb = Facts("db.migrate", "orders-db", None, "low", is_rollback=True)
    assert not mismatches(M(rollback=True), rb)
    assert mismatches(M(rollback=True), FACTS) == ["rollback"]
    assert mismatches(M(rollback=False), rb) == ["rollback"]


def test_merge_replaces_whole_values():
    assert merge({"approvers": ["U1", "U2"], "timeout": 1}, {"approvers": ["U3"]}) == {
        "approvers": ["U3"],
        "timeout": 1,
    }


def test_rollback_requirement_defaults():
    assert rollback_required("high", workflow=None, rule=None)
    assert rollback_required("critical", workflow=None, rule=None)
    assert not rollback_required("medium", workflow=None, rule=None)
    assert rollback_required("low", workflow=True, rule=None)
    assert not rollback_required("critical", workflow=True, rule=False)


RULES_YAML = (
    BASIC_YAML
    + """    rules:
      - name: no-prod-db-drops
        match: {action_type: "db.drop*", environment: production}
        deny: dropping production databases is never automated
      - name: restarts
        match: {action_type: service.restart, risk: [low, medium]}
        auto_approve: {limit: 5 per 1h, scope: target}
      - name: db
        match: {action_type: "db.*"}
        approvers: [U0DBA1, U0DBA2]
        required_approvals: 2
        timeout: 2h
        escalation: [{after: 1h, to: [U0PLAT]}]
        windows:
          - {days: [mon, tue, wed, thu], start: "09:00", end: "16:00", timezone: Europe/Paris}
        approval_ttl: 8h
      - name: rollbacks
        match: {rollback: true}
        require_rollback: false
"""
)


def test_rules_file_and_effective_policy():
    wf = parse_config(RULES_YAML).workflow("prod-restart")
    ev = evaluate(wf, facts_of({"type": "db.migrate", "target": "orders"}, "high"))
    assert ev.rule_name == "db"
    eff = ev.effective
    assert eff.approver_ids == ["U0DBA1", "U0DBA2"] and eff.required_approvals == 2
    assert eff.timeout == timedelta(hours=2) and eff.approval_ttl == timedelta(hours=8)
    assert eff.rules == [] and eff.owner == wf.owner and eff.channel == wf.channel
    assert eff.windows[0].timezone == "Europe/Paris"
    assert [r.name for r in ev.results if r.matched] == ["db"]
    assert ev.rollback_required and ev.auto_approve is None

    deny = evaluate(wf, facts_of({"type": "db.drop_table", "target": "x", "environment": "production"}, "low"))
    assert deny.deny == "dropping production databases is never automated"
    assert [r.name for r in deny.results if r.matched] == ["no-prod-db-drops", "db"]

    auto = evaluate(wf, facts_of({"type": "service.restart", "target": "api"}, "low"))
    assert auto.auto_approve is not None and str(auto.auto_approve.budget) == "5 per 1h"

    rb = evaluate(wf, facts_of({"type": "service.start", "target": "api"}, "critical", rollback_of="abc"))
    assert rb.rule_name == "rollbacks" and not rb.rollback_required


def test_auto_approve_never_applies_to_critical_requests():
    wf = parse_config(RULES_YAML.replace("risk: [low, medium]", "risk: [low, medium, high]")).workflow("prod-restart")
    ev = evaluate(wf, facts_of({"type": "service.restart", "target": "api"}, "critical"))
    assert ev.rule_name == "db" or ev.auto_approve is None
    everyone = parse_config(
        RULES_YAML.replace(
            "match: {action_type: service.restart, risk: [low, medium]}", "match: {action_type: service.restart}"
        )
    ).workflow("prod-restart")
    ev = evaluate(everyone, facts_of({"type": "service.restart", "target": "api"}, "critical"))
    assert ev.rule_name == "restarts" and ev.auto_approve is None


def _errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse_config(text)
    return exc.value.errors


def test_rule_errors_have_paths_and_lines():
    bad = RULES_YAML.replace("timeout: 2h", "timeout: 30m").replace("limit: 5 per 1h", "limit: lots")
    errors = _errors(bad)
    assert any("workflows[0].rules[1].auto_approve.limit" in e and "invalid budget" in e for e in errors), errors
    fixed_budget = bad.replace("limit: lots", "limit: 5 per 1h")
    errors = _errors(fixed_budget)
    assert len(errors) == 1 and errors[0].startswith("line ")
    assert "workflows[0].rules[2]" in errors[0] and "with rule 'db' applied" in errors[0]
    assert "not before the timeout" in errors[0]


@pytest.mark.parametrize(
    "snippet,needle",
    [
        ("      - {name: x, deny: never, auto_approve: {limit: 1 per 1h}}\n", "cannot both deny and auto_approve"),
        (
            "      - {name: x, match: {risk: [critical]}, auto_approve: {limit: 1 per 1h}}\n",
            "never applies to critical",
        ),
        ("      - {name: restarts}\n", "duplicate rule name"),
        ("      - {name: x, windows: [{start: '9:00', end: '17:00'}]}\n", "not a time of day"),
        ("      - {name: x, windows: [{start: '09:00', end: '09:00'}]}\n", "would be empty"),
        ("      - {name: x, windows: [{start: 10:00, end: '12:00'}]}\n", "write times of day in quotes"),
        ("      - {name: x, windows: [{start: '09:00', end: '17:00', timezone: Mars/Base}]}\n", "unknown timezone"),
        ("      - {name: x, windows: [{days: [funday], start: '09:00', end: '17:00'}]}\n", "windows[0].days[0]"),
        (
            "      - {name: x, freezes: [{start: 2026-12-20T00:00:00Z, end: 2026-12-19T00:00:00Z, reason: r}]}\n",
            "must end after it starts",
        ),
        (
            "      - {name: x, freezes: [{start: '2026-12-20 10:00', end: 2026-12-21T00:00:00Z, reason: r}]}\n",
            "UTC offset",
        ),
        ("      - {name: x, auto_approve: {limit: 0 per 1h}}\n", "at least 1"),
        ("      - {name: x, auto_approve: {limit: 3 per 1h, scope: team}}\n", "scope"),
        ("      - {name: x, match: {colour: red}}\n", "colour"),
        ("      - {name: x, required_approvals: 9}\n", "required_approvals is 9"),
    ],
)
def test_bad_rules(snippet, needle):
    errors = _errors(RULES_YAML + snippet)
    assert any(needle in e for e in errors), errors


def test_workflow_level_windows_freezes_and_ttl():
    text = (
        BASIC_YAML
        + """    windows:
      - {days: [sat, sun], start: "22:00", end: "24:00"}
    freezes:
      - {start: 2026-12-20T00:00:00+01:00, end: 2027-01-04T00:00:00+01:00, reason: year-end freeze}
    approval_ttl: 12h
    require_rollback: true
"""
    )
    wf = parse_config(text).workflow("prod-restart")
    assert wf.windows[0].to_domain().end is None
    assert wf.freezes[0].to_domain().start.isoformat() == "2026-12-19T23:00:00+00:00"
    assert wf.approval_ttl == timedelta(hours=12) and wf.require_rollback is True
    # The snapshot a request stores loads back to the same definition.
    from signoff.config import Workflow

    assert Workflow.model_validate(wf.model_dump(mode="json")).policy_hash() == wf.policy_hash()


@pytest.mark.parametrize(
    "value, path",
    [
        ('"production "', "match.environment[0]"),
        ('["staging", "production\\u200b"]', "match.environment[1]"),
        ('"db.drop*\\t"', "match.action_type[0]"),
        ('" orders-*"', "match.target[0]"),
    ],
)
def test_match_values_no_identifier_could_ever_equal_are_errors(value, path):
    key = path.split(".")[1].split("[")[0]
    bad = RULES_YAML.replace('match: {action_type: "db.drop*", environment: production}', f"match: {{{key}: {value}}}")
    errors = _errors(bad)
    assert any(f"workflows[0].rules[0].{path}" in e and "never" in e for e in errors), errors


def test_compiled_rules_answer_exactly_as_mismatches():
    """``compile_rules`` (what ``policy.evaluate`` uses, once per workflow) gives every rule
    the same failed conditions, in the same order, as matching it afresh."""
    from signoff.policy.rules import compile_rules
    from signoff.policy.rules import evaluate as evaluate_rules

    matches = [
        None,
        M(),
        M(action_type="db.*"),
        M(action_type=["svc.*", "DB.Migrate"]),
        M(action_type=[]),
        M(target="[a-m]rders-*"),
        M(target=["ORDERS-D?", "x*"]),
        M(target="straße-*"),
        M(environment="production"),
        M(environment=["Staging", "ｐｒｏｄｕｃｔｉｏｎ"]),
        M(environment=[]),
        M(risk=["high", "critical"]),
        M(risk=[]),
        M(rollback=True),
        M(rollback=False),
        M(action_type="db.*", target="payments-*", environment="production", risk=["low"], rollback=True),
        M(target="*[*"),
        M(target="a**b?c*"),
    ]
    facts = [
        FACTS,
        Facts("DB.DROP", "Orders-DB", "Production", "high"),
        Facts("x", "STRASSE-1", None, "low"),
        Facts("svc.restart", "payments-1", "prоduction", "low", is_rollback=True),
        Facts("db.migrate", "a*[*", "staging", "critical"),
        Facts("", "", "", "medium"),
    ]
    rules = [R(f"r{i}", m) for i, m in enumerate(matches)]
    compiled = compile_rules(rules)
    for f in facts:
        for _ in range(2):  # the second time through the shared results
            got = evaluate_rules(rules, f, compiled)
            assert [(r.index, r.name, list(r.mismatched)) for r in got] == [
                (i, r.name, mismatches(r.match, f)) for i, r in enumerate(rules)
            ]
        assert evaluate_rules(rules, f) == got
