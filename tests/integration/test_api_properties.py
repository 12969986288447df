"""Property: a signed submission body, valid or mutated (fields dropped, wrong types,
duplicated keys, look-alike identifiers, huge numbers, deep nesting), never gets a 5xx, and a
refused one changes nothing in the database. SQLite and PostgreSQL; one app per database for
the whole module (hypothesis runs many examples against it)."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from hypothesis import event, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from conftest import fresh_postgres, postgres_base_url
from signoff.api.app import create_app
from signoff.store.tables import EventRow, OutboxRow, RequestRow
from signoff.usecases.ports import system_clock
from support import BASIC_YAML, SECRETS, runtime, signed_headers

YAML = (
    BASIC_YAML
    + """    rules:
      - name: no-prod-db-drops
        match: {action_type: "db.drop*", environment: production}
        deny: dropping production databases is never automated
"""
)


class App:
    def __init__(self, db_url: str, monkeypatch):
        self.rt = runtime(db_url, YAML, clock=system_clock, monkeypatch=monkeypatch)
        self.client = TestClient(create_app(self.rt.context), raise_server_exceptions=False)

    def rows(self) -> tuple[int, int, int]:
        def count(s):
            return tuple(s.scalar(select(func.count()).select_from(t)) for t in (RequestRow, EventRow, OutboxRow))

        return self.rt.store.read(count)

    def close(self):
        self.client.close()
        self.rt.store.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def app(request, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        if request.param == "sqlite":
            a = App(f"sqlite:///{tmp_path_factory.mktemp('props') / 'signoff.db'}", mp)
            try:
                yield a
            finally:
                a.close()
            return
        if not postgres_base_url():
            pytest.skip("SIGNOFF_TEST_POSTGRES_URL is not set: PostgreSQL tests skipped")
        with fresh_postgres() as url:
            a = App(url, mp)
            try:
                yield a
            finally:
                a.close()


# -- bodies as trees that can hold what a dict cannot (duplicated keys, raw number literals) --


class Obj(list):
    """A JSON object as a list of (key, value) pairs: a key may repeat."""


class Raw(str):
    """A literal written into the JSON text as it is (a huge number)."""


def render(v) -> str:
    if isinstance(v, Raw):
        return str(v)
    if isinstance(v, Obj):
        return "{" + ",".join(f"{json.dumps(k)}:{render(x)}" for k, x in v) + "}"
    if isinstance(v, list):
        return "[" + ",".join(render(x) for x in v) + "]"
    return json.dumps(v)


def get(obj: Obj, key: str):
    return next((v for k, v in obj if k == key), None)


def put(obj: Obj, key: str, value) -> None:
    for i, (k, _) in enumerate(obj):
        if k == key:
            obj[i] = (k, value)
            return
    obj.append((key, value))


identifier = st.sampled_from(["service.restart", "db.drop", "db.migrate", "orders-db", "checkout-api"])
text = st.text(min_size=1, max_size=40)


@st.composite
def valid(draw) -> Obj:
    risk = draw(st.sampled_from(["low", "medium", "high", "critical"]))
    action = Obj([("type", draw(identifier)), ("target", draw(identifier))])
    env = draw(st.sampled_from([None, "production", "staging"]))
    if env:
        action.append(("environment", env))
    if draw(st.booleans()):
        action.append(("parameters", Obj([("n", draw(st.integers(-(2**53) + 1, 2**53 - 1))), ("s", draw(text))])))
    body = Obj(
        [
            ("workflow", "prod-restart"),
            ("title", draw(text)),
            ("action", action),
            ("justification", draw(text)),
            ("risk", risk),
        ]
    )
    if risk in ("high", "critical") or draw(st.booleans()):
        body.append(("rollback", Obj([("description", draw(text))])))
    if draw(st.booleans()):
        body.append(("executor", "deploy-bot"))
    return body


LOOK_ALIKE = [
    lambda s: s + "\u200b",
    lambda s: s + " ",
    lambda s: " " + s,
    lambda s: s + "\u00a0",
    lambda s: s.replace("o", "\u043e"),
    lambda s: s.upper(),
    lambda s: s.title(),
    lambda s: s[:1] + "\u0301" + s[1:],
    lambda s: s + "\n",
    lambda s: "\ufeff" + s,
    lambda s: s + "\u3164",
]
WRONG = [None, 5, -1.5, True, [], {}, "x" * 300, ["a"]]


@st.composite
def mutated(draw) -> bytes:
    body = draw(valid())
    action = get(body, "action")
    for op in draw(st.lists(st.sampled_from(["drop", "wrong", "dup", "look", "huge", "deep", "extra"]), max_size=3)):
        node = draw(st.sampled_from([body, action]))
        if op == "drop" and node:
            del node[draw(st.integers(0, len(node) - 1))]
        elif op == "wrong" and node:
            i = draw(st.integers(0, len(node) - 1))
            node[i] = (node[i][0], draw(st.sampled_from(WRONG)))
        elif op == "dup" and node:
            k, _ = node[draw(st.integers(0, len(node) - 1))]
            node.insert(draw(st.integers(0, len(node))), (k, draw(st.sampled_from(["prod-restart", "db.drop", 1]))))
        elif op == "look":
            key = draw(st.sampled_from(["workflow", "executor"] if node is body else ["type", "target", "environment"]))
            value = get(node, key)
            base = value if isinstance(value, str) else "production"
            put(node, key, draw(st.sampled_from(LOOK_ALIKE))(base))
        elif op == "huge":
            put(
                action,
                "parameters",
                Obj(
                    [
                        (
                            "n",
                            Raw(
                                draw(
                                    st.sampled_from(
                                        [
                                            "1" + "0" * 5000,
                                            "-" + "9" * 4400,
                                            "1e999999",
                                            "-1E400",
                                            str(2**60),
                                            "9007199254740992",
                                        ]
                                    )
                                )
                            ),
                        )
                    ]
                ),
            )
        elif op == "deep":
            depth = draw(st.integers(60, 3000))
            put(action, "parameters", Obj([("deep", Raw("[" * depth + "]" * depth))]))
        elif op == "extra":
            node.append((draw(st.sampled_from(["surprise", "agent", "status"])), 1))
    return render(body).encode("utf-8", "surrogatepass")


ACCEPTED: dict[bytes, str] = {}


@settings(max_examples=100, deadline=None, database=None)
@given(raw=mutated())
def test_mutated_submissions_never_5xx_and_refusals_change_nothing(app, raw):
    before = app.rows()
    r = app.client.post(
        "/v1/actions", content=raw, headers=signed_headers("deploy-bot", SECRETS["DEPLOY_BOT_SECRET"], raw)
    )
    event(f"status {r.status_code}")
    assert r.status_code < 500, (raw[:300], r.text)
    after = app.rows()
    if r.status_code == 201:
        assert after[0] == before[0] + 1 and after[1] > before[1], (before, after)
        ACCEPTED[raw] = r.json()["id"]
        return
    if r.status_code == 200:
        # Hypothesis runs an example again (while shrinking, or a duplicate draw) within the
        # signature's second: a byte-for-byte replay of an accepted submit answers with the
        # first request and changes nothing.
        assert ACCEPTED.get(raw) == r.json()["id"], (raw[:300], r.text)
        assert after == before, (raw[:300], r.text)
        return
    assert r.status_code in (400, 403, 404, 422), (raw[:300], r.status_code, r.text)
    err = r.json()["error"]
    assert err["code"] and err["message"]
    if r.status_code == 422:
        assert err.get("fields"), err
    assert after == before, (raw[:300], r.text)
