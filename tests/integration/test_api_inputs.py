"""Input hardening of the agent API: look-alike identifiers, duplicated keys, huge numbers,
deny rules that case cannot dodge, strict evidence links — on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from urllib.parse import parse_qs

import pytest
from sqlalchemy import func, select
from test_api import PAIR_YAML_EXTRA, Api, assert_error

from signoff.evidence.links import sign_link
from signoff.store.tables import EventRow, OutboxRow, RequestRow
from signoff.usecases.ports import system_clock
from support import BASIC_YAML, runtime, submission

RULES = """    rules:
      - name: no-prod-db-drops
        match: {action_type: "db.drop*", environment: production}
        deny: dropping production databases is never automated
"""


@pytest.fixture
def api(db_url, monkeypatch):
    rt = runtime(db_url, BASIC_YAML + RULES + PAIR_YAML_EXTRA, clock=system_clock, monkeypatch=monkeypatch)
    a = Api(rt)
    try:
        yield a
    finally:
        a.client.close()
        rt.store.dispose()


def rows(api) -> tuple[int, int, int]:
    """(requests, events, outbox rows): what a refused submission must leave as it was."""

    def count(s):
        return tuple(s.scalar(select(func.count()).select_from(t)) for t in (RequestRow, EventRow, OutboxRow))

    return api.rt.store.read(count)


def _action(**over) -> dict:
    return {"type": "service.restart", "target": "checkout-api", "environment": "production", **over}


# --------------------------------------------------------------------------- identifiers

LOOK_ALIKES = [
    (submission(action=_action(environment="production\u200b")), "action.environment"),
    (submission(action=_action(environment="production ")), "action.environment"),
    (submission(action=_action(environment=" production")), "action.environment"),
    (submission(action=_action(environment="production\u00a0")), "action.environment"),
    (submission(action=_action(environment="prod\u00aduction")), "action.environment"),
    (submission(action=_action(environment="productio\u0301n")), "action.environment"),
    (submission(action=_action(environment="production\u3164")), "action.environment"),
    (submission(action=_action(type="db.drop\ufeff")), "action.type"),
    (submission(action=_action(type="db.\u202epord")), "action.type"),
    (submission(action=_action(type="db.drop\n")), "action.type"),
    (submission(action=_action(target="orders-db\x00x")), "action.target"),
    (submission(action=_action(target="orders\u2028db")), "action.target"),
    (submission(action=_action(target="cafe\u0301")), "action.target"),
    (submission(action=_action(target="\tcheckout-api")), "action.target"),
    (submission(workflow="prod-restart\u200b"), "workflow"),
    (submission(workflow="prod-restart "), "workflow"),
    (submission(executor="deploy-bot\u200c"), "executor"),
    (submission(executor=" deploy-bot"), "executor"),
    (submission(parent_id="abc\u200b"), "parent_id"),
    (submission(rollback_of="abc\r"), "rollback_of"),
    (
        submission(rollback={"description": "d", "action": _action(environment="production\u200b")}),
        "rollback.action.environment",
    ),
]


def test_look_alike_identifiers_are_422_naming_the_field(api, subtests):
    for body, field in LOOK_ALIKES:
        with subtests.test(field=field, value=json.dumps(body, ensure_ascii=True)[:200]):
            err = assert_error(api.call("POST", "/v1/actions", body), 422, [field])
            assert field in err["message"]
    assert rows(api) == (0, 0, 0)


def test_identifiers_in_other_scripts_and_with_inner_spaces_are_accepted(api):
    for env in ("production", "prоduction", "среда", "本番", "prod eu"):
        r = api.call("POST", "/v1/actions", submission(action=_action(environment=env)))
        assert r.status_code == 201, r.text
        assert r.json()["action"]["environment"] == env


def test_deny_rule_refuses_whatever_the_case(api, subtests):
    for typ, env in (
        ("db.drop", "production"),
        ("db.drop", "Production"),
        ("DB.DROP", "production"),
        ("DB.Drop_Table", "PRODUCTION"),
        ("db.drop", "ｐｒｏｄｕｃｔｉｏｎ"),
    ):
        with subtests.test(type=typ, env=env):
            err = assert_error(
                api.call("POST", "/v1/actions", submission(action=_action(type=typ, environment=env))), 403
            )
            assert "no-prod-db-drops" in err["message"]
    assert rows(api) == (0, 0, 0)
    # the rule still lets other environments through
    assert (
        api.call("POST", "/v1/actions", submission(action=_action(type="DB.DROP", environment="staging"))).status_code
        == 201
    )


# --------------------------------------------------------------------------- duplicated keys

DUPLICATES = [
    (
        (
            b'{"workflow":"nope","workflow":"prod-restart","title":"t","action":{"type":"a","target":"b"},'
            b'"justification":"j"}'
        ),
        "workflow",
    ),
    (
        (
            b'{"workflow":"prod-restart","title":"t","action":{"type":"a","target":"b","type":"db.drop"},'
            b'"justification":"j"}'
        ),
        "action.type",
    ),
    (
        (
            b'{"workflow":"prod-restart","title":"t","action":{"type":"a","target":"b",'
            b'"parameters":{"x":[{"k":1,"k":2}]}},"justification":"j"}'
        ),
        "action.parameters.x.0.k",
    ),
    (
        (
            b'{"workflow":"prod-restart","title":"t","action":{"type":"a","target":"b"},"justification":"j",'
            b'"\\u0074itle":"t2"}'
        ),
        "title",
    ),  # the same key spelled with an escape
]


def test_duplicated_keys_are_422_naming_the_path(api, subtests):
    for raw, field in DUPLICATES:
        with subtests.test(field=field):
            err = assert_error(api.call("POST", "/v1/actions", raw=raw), 422, [field])
            assert "duplicated" in err["message"]
    assert rows(api) == (0, 0, 0)


def test_duplicated_keys_in_an_outcome_are_422(api):
    rid = api.created(workflow="pair", executor="other-bot")["id"]
    api.approve(rid)
    assert api.get(rid, agent="other-bot").json()["grant"]
    raw = b'{"status":"failed","status":"succeeded","detail":"ok"}'
    assert_error(api.call("POST", f"/v1/actions/{rid}/outcome", raw=raw, agent="other-bot"), 422, ["status"])
    assert api.get(rid, agent="other-bot").json()["outcome"] is None


# --------------------------------------------------------------------------- huge numbers


def _with_parameters(raw_params: bytes) -> bytes:
    return (
        b'{"workflow":"prod-restart","title":"t","action":{"type":"a","target":"b","parameters":'
        + raw_params
        + b'},"justification":"j"}'
    )


HUGE = [
    (_with_parameters(b'{"n":1' + b"0" * 5000 + b"}"), "action.parameters.n"),
    (_with_parameters(b'{"n":-' + b"9" * 100_000 + b"}"), "action.parameters.n"),
    (_with_parameters(b'{"n":[1,2,' + b"7" * 4301 + b"]}"), "action.parameters.n.2"),
    (_with_parameters(b'{"n":1e999999}'), "action.parameters.n"),
    (_with_parameters(b'{"n":-1E400}'), "action.parameters.n"),
    (_with_parameters(b'{"n":0.' + b"1" * 5000 + b"e99999999999999999999}"), "action.parameters.n"),
    (
        b'{"workflow":"prod-restart","title":' + b"4" * 5000 + b',"action":{"type":"a","target":"b"},'
        b'"justification":"j"}',
        "title",
    ),
]


def test_huge_numbers_are_422_without_python_advice(api, subtests):
    for raw, field in HUGE:
        with subtests.test(field=field, raw=raw[:80]):
            err = assert_error(api.call("POST", "/v1/actions", raw=raw), 422, [field])
            assert "set_int_max_str_digits" not in err["message"] and "limit" not in err["message"]
            assert "(2^53 - 1)" in err["message"] or "finite" in err["message"]
    assert rows(api) == (0, 0, 0)


def test_long_numbers_within_range_are_kept(api):
    # many digits that still make a small number: not a refusal
    raw = _with_parameters(b'{"f":0.' + b"5" * 5000 + b',"z":' + b"0." + b"0" * 4000 + b"1}")
    r = api.call("POST", "/v1/actions", raw=raw)
    assert r.status_code == 201, r.text


# --------------------------------------------------------------------------- evidence links


def test_evidence_links_open_only_in_their_canonical_spelling(api, subtests):
    rid = api.created()["id"]
    query = parse_qs(sign_link(api.ctx.keys.active, rid, int(system_clock().timestamp()) + 3600))
    exp, sig = query["exp"][0], query["sig"][0]
    assert api.client.get(f"/evidence/{rid}", params={"exp": exp, "sig": sig}).status_code == 200
    arabic = "".join(chr(0x660 + int(d)) for d in exp)
    fullwidth = "".join(chr(0xFF10 + int(d)) for d in exp)
    for bad_exp in (
        f"+{exp}",
        f"0{exp}",
        f"00{exp}",
        f"{exp[:3]}_{exp[3:]}",
        f" {exp}",
        f"{exp} ",
        f"{exp}\n",
        arabic,
        fullwidth,
        f"{exp}.0",
        f"-{exp}",
        "",
    ):
        with subtests.test(exp=bad_exp):
            r = api.client.get(f"/evidence/{rid}", params={"exp": bad_exp, "sig": sig})
            assert_error(r, 403)
    for bad_sig in (
        f" {sig}",
        f"{sig} ",
        f"{sig}=",
        f"{sig}==",
        sig.replace("-", "+").replace("_", "/"),
        f"{sig}\n",
        sig + "A",
        "",
    ):
        if bad_sig == sig:
            continue
        with subtests.test(sig=bad_sig):
            r = api.client.get(f"/evidence/{rid}", params={"exp": exp, "sig": bad_sig})
            assert_error(r, 403)
