"""``signoff check-config`` reports every problem of a file in one run, each with its line;
an agent whose ``secret_env`` is unset is a warning; an empty file is an error."""

from __future__ import annotations

import logging
import re

import pytest

from signoff.cli import main
from signoff.config import ConfigError, parse_config
from support import BASIC_YAML

# Every kind of problem at once (EXPECTED names each by its line in this text).
ALL_AT_ONCE = """\
agents:
  - id: deploy-bot
    sponsor: U0SPONSOR
    secret_env: SIGNOFF_TEST_DEPLOY_SECRET
  - id: deploy-bot
    sponsor: U0OTHER
    secret_env: SIGNOFF_TEST_OTHER_SECRET
  - id: unset-bot
    sponsor: U0UNSET
    secret_env: SIGNOFF_TEST_UNSET_SECRET
workflows:
  - id: prod-restart
    owner: U0OWNER
    platform_owner: U0PLAT
    security_owner: U0SEC
    approvers: [U0OWNER, U0SECOND]
    required_approvals: 5
    agents: [deploy-bot, ghost-bot]
    timeout: 30m
    escalation:
      - after: 20m
        to: [U0PLAT]
      - after: 10m
        to: [U0ESC]
  - id: prod-restart
    owner: nobody
    platform_owner: U0PLAT
    security_owner: U0SEC
    approvers: [U0OWNER]
    required_approvals: 4
    timeout: 10m
    timeout: 12m
    escalation:
      - after: 15m
        to: [U0ESC]
      - after: 1h
        to: []
"""

# (line, where, words the message holds)
EXPECTED = [
    (5, "agents[1].id", ["duplicate agent id 'deploy-bot'", "line 2"]),
    (17, "workflows[0].required_approvals", ["5", "4 distinct approver(s)"]),
    (18, "workflows[0].agents[1]", ["unknown agent 'ghost-bot'"]),
    (23, "workflows[0].escalation[1].after", ["10m", "not after", "20m"]),
    (25, "workflows[1].id", ["duplicate workflow id 'prod-restart'", "line 12"]),
    (26, "workflows[1].owner", ["'nobody'", "Slack user id"]),
    (30, "workflows[1].required_approvals", ["4", "2 distinct approver(s)"]),
    (32, "workflows[1].timeout", ["duplicate key 'timeout'", "line 31"]),
    (34, "workflows[1].escalation[0].after", ["15m", "not before the timeout", "12m"]),
    (36, "workflows[1].escalation[1].after", ["1h", "not before the timeout"]),
    (37, "workflows[1].escalation[1].to", ["at least 1"]),
]

LINE = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+): (?P<where>[^:]+): (?P<message>.*)$")


@pytest.fixture
def env(monkeypatch, tmp_path):
    monkeypatch.setenv("SIGNOFF_TEST_DEPLOY_SECRET", "s1")
    monkeypatch.setenv("SIGNOFF_TEST_OTHER_SECRET", "s2")
    monkeypatch.delenv("SIGNOFF_TEST_UNSET_SECRET", raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_every_problem_is_reported_with_its_line(tmp_path, capsys, env):
    path = tmp_path / "signoff.yaml"
    path.write_text(ALL_AT_ONCE)
    assert main(["check-config", str(path)]) == 1
    out = capsys.readouterr()
    errors = [
        LINE.match(text)
        for text in out.err.splitlines()
        if re.match(rf"{re.escape(str(path))}:\d+:", text) and ": warning: " not in text
    ]
    assert all(errors), out.err
    got = [(int(m["line"]), m["where"], m["message"]) for m in errors]
    for line, where, words in EXPECTED:
        hits = [g for g in got if g[0] == line and g[1] == where]
        assert len(hits) == 1, (line, where, out.err)
        assert all(w in hits[0][2] for w in words), (words, hits[0])
    assert len(got) == len(EXPECTED), out.err
    assert [g[0] for g in got] == sorted(g[0] for g in got)  # in file order
    assert f"{path}: {len(EXPECTED)} error(s), 1 warning(s)" in out.err
    # the warning is printed too, with its line
    assert f"{path}:10: warning: agents[2].secret_env: SIGNOFF_TEST_UNSET_SECRET is not set" in out.err
    assert "OK" not in out.out


def test_parse_config_raises_every_problem_with_lines(env):
    with pytest.raises(ConfigError) as exc:
        parse_config(ALL_AT_ONCE, "f.yaml")
    assert [(p.line, p.where) for p in exc.value.problems] == [(line, where) for line, where, _ in EXPECTED]
    assert all(e.startswith("line ") for e in exc.value.errors)


@pytest.mark.parametrize(
    "text,words",
    [
        ("", "empty"),
        ("# only a comment\n", "empty"),
        ("[]\n", "mapping"),
        ("just text\n", "mapping"),
        ("agents: []\nworkflows: []\n", "no workflows"),
        ("agents:\n  - id: a\n    sponsor: U0S\n    secret_env: A_SECRET\n", "no workflows"),
        ("workflows:\n  - id: w\n    owner: U0O\n    platform_owner: U0P\n    security_owner: U0S\n", "no agents"),
    ],
)
def test_an_empty_file_is_an_error(tmp_path, capsys, env, text, words):
    path = tmp_path / "signoff.yaml"
    path.write_text(text)
    assert main(["check-config", str(path)]) == 1
    out = capsys.readouterr()
    assert words in out.err and "OK" not in out.out
    assert out.err.startswith(f"{path}")


def test_unset_secret_is_a_warning_with_its_line(tmp_path, capsys, env, monkeypatch):
    path = tmp_path / "signoff.yaml"
    path.write_text(BASIC_YAML)
    for name in ("DEPLOY_BOT_SECRET", "OTHER_BOT_SECRET"):
        monkeypatch.setenv(name, "x")
    monkeypatch.delenv("OUTSIDER_SECRET", raising=False)
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr()
    line = BASIC_YAML.splitlines().index("    secret_env: OUTSIDER_SECRET") + 1
    assert f"{path}:{line}: warning: agents[2].secret_env: OUTSIDER_SECRET is not set" in out.err
    assert "outsider" in out.err and "401" in out.err
    assert out.out.startswith(f"{path}: OK — 3 agent(s), 1 workflow(s), 1 warning(s)")
    monkeypatch.setenv("OUTSIDER_SECRET", "")  # empty is unset too
    assert main(["check-config", str(path)]) == 0
    assert "OUTSIDER_SECRET is not set" in capsys.readouterr().err
    monkeypatch.setenv("OUTSIDER_SECRET", "x")
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr()
    assert "warning" not in out.err and out.out.startswith(f"{path}: OK — 3 agent(s), 1 workflow(s)\n")


def test_unset_secret_in_dotenv_is_not_a_warning(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("DEPLOY_BOT_SECRET", "OTHER_BOT_SECRET", "OUTSIDER_SECRET"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / ".env").write_text("DEPLOY_BOT_SECRET=a\nOTHER_BOT_SECRET=b\nOUTSIDER_SECRET=c\n")
    (tmp_path / "signoff.yaml").write_text(BASIC_YAML)
    assert main(["check-config", "signoff.yaml"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_reload_logs_the_unset_secret(tmp_path, monkeypatch, caplog):
    from signoff.bootstrap import ConfigHolder
    from signoff.config import load_config

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "signoff.yaml"
    path.write_text(BASIC_YAML)
    for name in ("DEPLOY_BOT_SECRET", "OTHER_BOT_SECRET", "OUTSIDER_SECRET"):
        monkeypatch.setenv(name, "value-never-logged")
    holder = ConfigHolder(load_config(path), str(path))
    monkeypatch.delenv("OTHER_BOT_SECRET")
    with caplog.at_level(logging.WARNING):
        assert holder.reload()[0]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert "other-bot" in text and "OTHER_BOT_SECRET" in text and "value-never-logged" not in text


@pytest.mark.parametrize(
    "text",
    [
        "agents: 5\nworkflows: {a: 1}\n",
        'agents: [1, "x", null]\nworkflows: [3, {id: 5, agents: 7, escalation: 3, timeout: [1]}]\n',
        "? [a, b]\n: 1\nagents: []\n",
        "agents: [\n",
        "!!python/object/apply:os.system [echo hi]\n",
        (
            "agents: [{id: a, sponsor: U0S, secret_env: A}]\nworkflows:\n  - id: w\n    owner: U0O\n"
            "    platform_owner: U0P\n    security_owner: U0S\n    escalation: [{after: 5m, to: [U0X]}, {after: x}]\n"
        ),
    ],
)
def test_odd_files_get_lines_not_tracebacks(tmp_path, capsys, env, text):
    path = tmp_path / "odd.yaml"
    path.write_text(text)
    assert main(["check-config", str(path)]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines and all(line.startswith(f"{path}:") for line in lines), lines
    assert re.match(rf"{re.escape(str(path))}:\d+: ", lines[0]), lines
