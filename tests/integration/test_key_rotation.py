"""`signoff keys rotate` on SQLite and PostgreSQL: a new key signs, the old one stays published
until what it signed has expired, and grants signed before the rotation still verify."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import jwt
from fastapi.testclient import TestClient

from signoff.api.app import create_app
from signoff.bootstrap import key_retention, load_keyring
from signoff.cli import main
from signoff.evidence.links import check_link, sign_link
from signoff.usecases.decide import decide
from signoff.usecases.ports import system_clock
from support import SECRETS, dumps, runtime, signed_headers, submission

PAIR = """
  - id: pair
    owner: U0OWNER
    platform_owner: U0PLAT
    security_owner: U0SEC
    agents: [deploy-bot, other-bot]
    timeout: 30m
"""


def _grant(client, ctx) -> str:
    # a title of its own: one body signed twice in one second would be one signed request, sent again
    body = dumps(submission(workflow="pair", executor="other-bot", title=f"Restart {uuid.uuid4()}"))
    r = client.post(
        "/v1/actions", content=body, headers=signed_headers("deploy-bot", SECRETS["DEPLOY_BOT_SECRET"], body)
    )
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    decide(ctx, request_id=rid, user="U0OWNER", decision="approve")
    r = client.get(f"/v1/actions/{rid}", headers=signed_headers("other-bot", SECRETS["OTHER_BOT_SECRET"], b""))
    assert r.json()["grant"], r.text
    return r.json()["grant"]


def _verifies(grant: str, jwks: dict) -> bool:
    kid = jwt.get_unverified_header(grant)["kid"]
    jwk = next((k for k in jwks["keys"] if k["kid"] == kid), None)
    if jwk is None:
        return False
    jwt.decode(grant, jwt.PyJWK(jwk, algorithm="EdDSA").key, algorithms=["EdDSA"], issuer="signoff")
    return True


def test_rotate_makes_a_new_key_current_and_keeps_the_old_one_published(db_url, monkeypatch, capsys):
    from support import BASIC_YAML

    rt = runtime(db_url, BASIC_YAML + PAIR, clock=system_clock, monkeypatch=monkeypatch)
    ctx = rt.context
    client = TestClient(create_app(ctx), raise_server_exceptions=False)
    try:
        old_kid = ctx.keys.active.kid
        old_grant = _grant(client, ctx)
        old_link = sign_link(ctx.keys.active, "r-1", 4_000_000_000)

        monkeypatch.setenv("SIGNOFF_DATABASE_URL", db_url)
        monkeypatch.delenv("SIGNOFF_SIGNING_KEY", raising=False)
        assert main(["keys", "rotate"]) == 0
        assert "new signing key" in capsys.readouterr().out

        # what every replica's refresh does
        ctx.keys = load_keyring(
            rt.store, None, system_clock(), create=False, retention=key_retention(ctx.config(), timedelta(days=7))
        )
        new_kid = ctx.keys.active.kid
        assert new_kid != old_kid
        jwks = client.get("/.well-known/jwks.json").json()
        assert {k["kid"] for k in jwks["keys"]} == {old_kid, new_kid}
        assert _verifies(old_grant, jwks), "a grant signed before the rotation still verifies"
        new_grant = _grant(client, ctx)
        assert jwt.get_unverified_header(new_grant)["kid"] == new_kid and _verifies(new_grant, jwks)
        exp, sig = 4_000_000_000, old_link.split("sig=")[1]
        assert check_link(ctx.keys, "r-1", exp, sig, 1_900_000_000), "old evidence links stay valid"

        assert main(["keys", "list"]) == 0
        listing = capsys.readouterr().out
        assert f"{new_kid}" in listing and "active" in listing and "retired" in listing

        # a week and a bit later the old key has nothing live left: no longer published
        later = system_clock() + timedelta(days=8)
        ring = load_keyring(
            rt.store, None, later, create=False, retention=key_retention(ctx.config(), timedelta(days=7))
        )
        assert [k["kid"] for k in ring.jwks()["keys"]] == [new_kid]
        assert ring.find(old_kid) is not None

        assert main(["keys", "list", "--jwks"]) == 0
        assert {k["kid"] for k in json.loads(capsys.readouterr().out)["keys"]} == {old_kid, new_kid}
    finally:
        client.close()
        rt.store.dispose()


def test_rotate_in_a_while_publishes_first(db_url, monkeypatch, capsys):
    from support import BASIC_YAML

    rt = runtime(db_url, BASIC_YAML, monkeypatch=monkeypatch)
    try:
        old_kid = rt.context.keys.active.kid
        monkeypatch.setenv("SIGNOFF_DATABASE_URL", db_url)
        monkeypatch.delenv("SIGNOFF_SIGNING_KEY", raising=False)
        assert main(["keys", "rotate", "--in", "10m"]) == 0
        now = system_clock()
        ring = load_keyring(rt.store, None, now, create=False)
        assert ring.active.kid == old_kid and len(ring.upcoming) == 1
        assert len(ring.jwks()["keys"]) == 2
        assert (
            load_keyring(rt.store, None, now + timedelta(minutes=11), create=False).active.kid == ring.upcoming[0].kid
        )
    finally:
        rt.store.dispose()


def test_rotate_refuses_when_the_key_comes_from_the_environment(tmp_path, monkeypatch, capsys):
    from signoff.keys import generate

    monkeypatch.setenv("SIGNOFF_DATABASE_URL", f"sqlite:///{tmp_path / 'k.db'}")
    monkeypatch.setenv("SIGNOFF_SIGNING_KEY", generate().private_pem())
    try:
        main(["keys", "rotate"])
    except SystemExit as exc:
        assert exc.code == 2
    else:
        raise AssertionError("rotate should refuse")
    assert "SIGNOFF_SIGNING_KEY is set" in capsys.readouterr().err


def test_a_running_service_picks_up_a_rotation_on_its_key_tick(sqlite_url, monkeypatch):
    from signoff.bootstrap import rotate_key
    from signoff.server import build_service
    from support import BASIC_YAML

    monkeypatch.delenv("SIGNOFF_SIGNING_KEY", raising=False)
    rt = runtime(sqlite_url, BASIC_YAML, clock=system_clock, monkeypatch=monkeypatch)
    service = build_service(rt, with_slack=False)
    try:
        old = rt.context.keys.active.kid
        now = system_clock()
        new = rotate_key(rt.store, now, now).key.kid
        service.scheduler.get_job("keys").func()
        assert rt.context.keys.active.kid == new
        assert {k.kid for k in rt.context.keys.published()} == {old, new}
    finally:
        rt.store.dispose()
