from datetime import timedelta

import pytest

from signoff.cli import main
from signoff.config import ConfigError, parse_config
from signoff.durations import format_duration, parse_duration
from support import BASIC_YAML


@pytest.mark.parametrize(
    "text,seconds",
    [
        (90, 90),
        ("90s", 90),
        ("10m", 600),
        ("1h30m", 5400),
        ("7d", 604800),
        ("2h", 7200),
        ("1d2h3m4s", 93784),
        ("45", 45),
    ],
)
def test_durations(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("bad", ["", "10x", "m10", "1m1h1m", "-5", 0, -3, True, None, "1.5h", "10 m"])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_format_duration_round_trips():
    assert format_duration(timedelta(seconds=5400)) == "1h30m"
    assert parse_duration(format_duration(timedelta(seconds=93784))) == timedelta(seconds=93784)
    # a fractional timeout survives the policy snapshot (format, then parse) unchanged
    assert parse_duration(format_duration(timedelta(seconds=1.5))) == timedelta(seconds=1.5)


def test_basic_file_is_valid():
    cfg = parse_config(BASIC_YAML)
    wf = cfg.workflow("prod-restart")
    assert wf.timeout == timedelta(minutes=30)
    assert [s.after for s in wf.escalation] == [timedelta(minutes=10), timedelta(minutes=20)]
    assert cfg.agent("deploy-bot").sponsor == "U0SPONSOR"
    assert wf.approver_ids == ["U0OWNER", "U0SPONSOR", "U0SECOND"]


def test_approvers_default_to_owner():
    cfg = parse_config(BASIC_YAML.replace("    approvers: [U0OWNER, U0SPONSOR, U0SECOND]\n", ""))
    assert cfg.workflow("prod-restart").approver_ids == ["U0OWNER"]


BAD = """
agents:
  - id: bot
    sponsor: nobody
    secret_env: X
workflows:
  - id: wf
    platform_owner: U0PLAT
    security_owner: U0SEC
    agents: [bot, ghost]
    required_approvals: 0
    timeout: 10q
    escalation:
      - after: forever
        to: [U1]
"""


def test_every_error_is_reported_with_its_path():
    with pytest.raises(ConfigError) as exc:
        parse_config(BAD, "bad.yaml")
    text = "\n".join(exc.value.errors)
    assert "agents[0].sponsor" in text
    assert "workflows[0].owner" in text and "Field required" in text
    assert "workflows[0].required_approvals" in text
    assert "workflows[0].timeout" in text and "10q" in text
    assert "workflows[0].escalation[0].after" in text
    assert "line " in text


def test_unknown_agent_reference_and_unreachable_quorum():
    text = BASIC_YAML.replace("agents: [deploy-bot, other-bot]", "agents: [deploy-bot, ghost-bot]")
    with pytest.raises(ConfigError) as exc:
        parse_config(text)
    assert any("workflows[0].agents[1]" in e and "ghost-bot" in e for e in exc.value.errors)
    text = BASIC_YAML.replace("required_approvals: 1", "required_approvals: 9")
    with pytest.raises(ConfigError) as exc:
        parse_config(text)
    assert any("required_approvals" in e and "could ever approve" in e for e in exc.value.errors)


def test_unknown_keys_and_bad_yaml():
    with pytest.raises(ConfigError) as exc:
        parse_config(BASIC_YAML.replace("    timeout: 30m\n", "    timeout: 30m\n    timout: 5m\n"))
    assert any("timout" in e for e in exc.value.errors)
    with pytest.raises(ConfigError) as exc:
        parse_config("agents: [\n")
    assert "not valid YAML" in exc.value.errors[0]


def test_check_config_command(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text(BASIC_YAML)
    assert main(["check-config", str(good)]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    assert main(["check-config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "workflows[0].timeout" in err and "error(s)" in err
    assert main(["check-config", str(tmp_path / "missing.yaml")]) == 1
