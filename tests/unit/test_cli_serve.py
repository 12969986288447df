"""``signoff serve`` refuses bad worker settings with a clear message, before starting."""

from __future__ import annotations

import pytest

from signoff import cli


def _serve(monkeypatch, tmp_path, *argv, **env):
    monkeypatch.chdir(tmp_path)
    for k in ("SIGNOFF_WORKERS", "SIGNOFF_DATABASE_URL"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "secret")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SystemExit) as stop:
        cli.main(["serve", *argv])
    return stop.value.code


@pytest.mark.parametrize("value", ["abc", "0", "65", "-1", "1.5"])
def test_a_bad_signoff_workers_is_named(monkeypatch, tmp_path, capsys, value):
    assert _serve(monkeypatch, tmp_path, SIGNOFF_WORKERS=value) == 2
    assert f"SIGNOFF_WORKERS must be a whole number from 1 to 64, not {value!r}" in capsys.readouterr().err


def test_a_bad_signoff_workers_does_not_break_other_commands(monkeypatch, capsys):
    monkeypatch.setenv("SIGNOFF_WORKERS", "abc")
    assert cli.parser().parse_args(["demo"]).command == "demo"


def test_bad_workers_flag_is_an_argument_error(monkeypatch, tmp_path, capsys):
    assert _serve(monkeypatch, tmp_path, "--workers", "0") == 2
    assert "--workers" in capsys.readouterr().err


def test_workers_refuse_an_in_memory_database(monkeypatch, tmp_path, capsys):
    assert _serve(monkeypatch, tmp_path, "--workers", "2", SIGNOFF_DATABASE_URL="sqlite:///:memory:") == 2
    assert "in-memory SQLite" in capsys.readouterr().err
