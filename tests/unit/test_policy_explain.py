"""``signoff policy explain``: what it prints and its exit codes (0 accepted, 1 refused,
2 unreadable or invalid input)."""

from __future__ import annotations

import json

import pytest

from signoff.cli import main
from support import BASIC_YAML

YAML = (
    BASIC_YAML
    + """    windows:
      - {days: [mon, tue, wed, thu, fri], start: "09:00", end: "17:00", timezone: Europe/Paris}
    freezes:
      - {start: 2026-03-04T00:00:00Z, end: 2026-03-05T00:00:00Z, reason: quarterly close}
    approval_ttl: 8h
    rules:
      - name: no-drops
        match: {action_type: "db.drop*"}
        deny: dropping databases is never done by agents
      - name: restarts
        match: {action_type: service.restart, risk: [low]}
        auto_approve: {limit: 5 per 1h}
      - name: db
        match: {action_type: "db.*"}
        approvers: [U0DBA1, U0DBA2, U0DBA3]
        required_approvals: 2
      - name: any-db
        match: {target: "*-db"}
        approvers: [U0NEVER]
"""
)

BODY = {
    "workflow": "prod-restart",
    "title": "Migrate orders",
    "action": {"type": "db.migrate", "target": "orders-db", "environment": "production"},
    "justification": "schema change for release 42",
    "risk": "high",
    "rollback": {"description": "run the down migration"},
}


@pytest.fixture
def files(tmp_path):
    cfg = tmp_path / "signoff.yaml"
    cfg.write_text(YAML)

    def write(body, name="req.json") -> str:
        path = tmp_path / name
        path.write_text(body if isinstance(body, str) else json.dumps(body))
        return str(path)

    return str(cfg), write


def run(capsys, cfg: str, req: str, *extra: str) -> tuple[int, str, str]:
    code = main(["policy", "explain", req, "--config", cfg, *extra])
    out, err = capsys.readouterr()
    return code, out, err


def test_accepted_with_rule_approvers_ladder_and_window(files, capsys):
    cfg, write = files
    code, out, _ = run(capsys, cfg, write(BODY), "--at", "2026-03-02T08:30:00Z")  # Monday 09:30 Paris
    assert code == 0
    assert "ACCEPTED" in out
    assert "3. db: MATCHES — applies" in out
    assert "4. any-db: matches, but an earlier rule applies" in out
    assert "1. no-drops: no match (action_type)" in out
    assert "2 distinct approvals from: U0DBA1, U0DBA2, U0DBA3" in out
    assert "U0SPONSOR (the agent's sponsor) may not approve" in out
    assert "submitted by deploy-bot (sponsor U0SPONSOR)" in out  # the workflow's first agent
    assert "after 10m (2026-03-02T08:40:00Z): U0ESC" in out and "after 20m" in out
    assert "undecided by 2026-03-02T09:00:00Z it expires" in out
    assert "window:    mon,tue,wed,thu,fri 09:00–17:00 Europe/Paris" in out
    assert "freeze:    2026-03-04T00:00:00Z – 2026-03-05T00:00:00Z: quarterly close" in out
    assert "Could execute: yes, as soon as it is approved (inside a change window until 2026-03-02T16:00:00Z)" in out
    assert "approval_ttl" in out and "8h" in out


def test_outside_the_window_and_inside_a_freeze(files, capsys):
    cfg, write = files
    code, out, _ = run(capsys, cfg, write(BODY), "--at", "2026-03-02T18:00:00+00:00")
    assert code == 0
    assert "not now — outside the change windows" in out
    assert "from 2026-03-03T08:00:00Z at the earliest" in out
    code, out, _ = run(capsys, cfg, write(BODY), "--at", "2026-03-04T10:00:00")  # naive: UTC
    assert code == 0
    assert "freeze until 2026-03-05T00:00:00Z: quarterly close" in out
    assert "from 2026-03-05T08:00:00Z" in out  # the freeze ends at night; Thursday 09:00 Paris


def test_auto_approve_is_explained_and_never_for_critical(files, capsys):
    cfg, write = files
    body = dict(BODY, risk="low", action={"type": "service.restart", "target": "api"})
    code, out, _ = run(capsys, cfg, write(body), "--at", "2026-03-02T09:00:00Z")
    assert code == 0 and "automatic — rule 'restarts'" in out and "5 per 1h" in out
    assert "Beyond the budget: 1 distinct approval from: U0OWNER, U0SPONSOR, U0SECOND" in out


@pytest.mark.parametrize(
    "change,needle",
    [
        ({"workflow": "nope"}, "REFUSED (404): unknown workflow 'nope'"),
        ({"agent": "outsider"}, "REFUSED (403): agent 'outsider' may not submit"),
        ({"executor": "outsider"}, "REFUSED (403): executor 'outsider'"),
        (
            {"action": {"type": "db.drop_table", "target": "orders-db"}},
            "REFUSED (403): refused by rule 'no-drops': dropping databases is never done by agents",
        ),
        ({"rollback": None}, "REFUSED (422): a high-risk request needs a rollback plan"),
        ({"rollback": {"description": "  "}}, "REFUSED (422)"),
        ({"action": {"type": "DB.DROP_TABLE", "target": "orders-db"}}, "REFUSED (403): refused by rule 'no-drops'"),
        ({"action": {"type": "Db.Drop", "target": "orders-db"}}, "REFUSED (403): refused by rule 'no-drops'"),
    ],
)
def test_refusals_say_why(files, capsys, change, needle):
    cfg, write = files
    code, out, _ = run(capsys, cfg, write({**BODY, **change}))
    assert code == 1, out
    assert needle in out


def test_the_agent_given_is_the_submitter(files, capsys):
    cfg, write = files
    code, out, _ = run(capsys, cfg, write({**BODY, "agent": "other-bot"}), "--at", "2026-03-02T09:00:00Z")
    assert code == 0 and "submitted by other-bot (sponsor U0OTHERSP)" in out


@pytest.mark.parametrize(
    "content,needle",
    [
        ("{not json", "not UTF-8 JSON"),
        ("[1, 2]", "must hold a JSON object"),
        (json.dumps({**BODY, "title": ""}), "title"),
        (json.dumps({**BODY, "surprise": 1}), "surprise"),
        (json.dumps({**BODY, "agent": 7}), "agent"),
        (json.dumps({**BODY, "action": {"type": "db.drop\u200b", "target": "orders-db"}}), "action.type"),
        (json.dumps({**BODY, "action": {"type": "db.migrate", "target": "orders-db "}}), "action.target"),
        ('{"workflow": "nope", ' + json.dumps(BODY)[1:], "duplicated key 'workflow'"),
        ('{"n": 1' + "0" * 5000 + "}", "within ±(2^53 - 1)"),
    ],
)
def test_invalid_input_exits_2(files, capsys, content, needle):
    cfg, write = files
    code, _, err = run(capsys, cfg, write(content))
    assert code == 2 and needle in err


def test_unreadable_file_bad_time_and_bad_config_exit_2(files, capsys, tmp_path):
    cfg, write = files
    code, _, err = run(capsys, cfg, str(tmp_path / "missing.json"))
    assert code == 2 and "cannot read" in err
    code, _, err = run(capsys, cfg, write(BODY), "--at", "next tuesday")
    assert code == 2 and "--at" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text(YAML.replace("limit: 5 per 1h", "limit: lots"))
    code, _, err = run(capsys, str(bad), write(BODY))
    assert code == 2 and "rules[1].auto_approve.limit" in err


def test_explain_and_submit_agree(files, capsys, tmp_path, monkeypatch):
    """The dry run uses the functions submit uses: same rule, same effective policy hash."""
    from datetime import datetime, timezone

    from signoff.config import load_config
    from signoff.policy.evaluate import plan
    from signoff.usecases.submit import parse_submission

    cfg, write = files
    code, out, _ = run(capsys, cfg, write(BODY), "--at", "2026-03-02T09:00:00Z")
    p = plan(load_config(cfg), "deploy-bot", parse_submission(BODY), datetime(2026, 3, 2, 9, tzinfo=timezone.utc))
    assert code == 0 and p.effective.policy_hash() in out and p.evaluation.rule_name == "db"
