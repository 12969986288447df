"""The agent API over HTTP (contract §3, §4), on SQLite and PostgreSQL.

A real clock: the HMAC timestamp window is checked against the server's clock.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from datetime import datetime, timedelta, timezone

import jwt
import pytest
import rfc8785
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from signoff.api.app import create_app
from signoff.store.tables import RequestRow
from signoff.usecases.decide import decide
from signoff.usecases.ports import system_clock
from support import SECRETS, dumps, runtime, signed_headers, submission

AGENTS = {
    "deploy-bot": SECRETS["DEPLOY_BOT_SECRET"],
    "other-bot": SECRETS["OTHER_BOT_SECRET"],
    "outsider": SECRETS["OUTSIDER_SECRET"],
}
KIB = 1024

# A second workflow whose agents can execute each other's requests.
PAIR_YAML_EXTRA = """
  - id: pair
    owner: U0OWNER
    platform_owner: U0PLAT
    security_owner: U0SEC
    agents: [deploy-bot, other-bot]
    timeout: 30m
"""


class Api:
    def __init__(self, rt):
        self.rt = rt
        self.ctx = rt.context
        self.client = TestClient(create_app(rt.context), raise_server_exceptions=False)
        self._signed: set[tuple] = set()

    def call(
        self,
        method: str,
        path: str,
        body=None,
        *,
        agent: str | None = "deploy-bot",
        raw: bytes | None = None,
        headers: dict | None = None,
        ts: int | None = None,
        secret: str | None = None,
        version: str = "v1",
    ):
        data = raw if raw is not None else (b"" if body is None else dumps(body))
        hdrs = {}
        if agent is not None and ts is None:
            # Each call is a new request, as a client's would be: never the same bytes signed
            # at the same second as an earlier call (that would be a replay of it).
            ts = int(time.time())
            while (agent, ts, method, path, data) in self._signed:
                ts -= 1
            self._signed.add((agent, ts, method, path, data))
        if agent is not None:
            hdrs = signed_headers(
                agent,
                secret if secret is not None else AGENTS[agent],
                data,
                ts=ts,
                version=version,
                method=method,
                target=path,
            )
        hdrs.update(headers or {})
        return self.client.request(method, path, content=data, headers=hdrs)

    def submit(self, agent: str = "deploy-bot", **over):
        return self.call("POST", "/v1/actions", submission(**over), agent=agent)

    def created(self, agent: str = "deploy-bot", **over) -> dict:
        r = self.submit(agent, **over)
        assert r.status_code == 201, r.text
        return r.json()

    def get(self, rid: str, agent: str = "deploy-bot"):
        return self.call("GET", f"/v1/actions/{rid}", agent=agent)

    def approve(self, rid: str, user: str = "U0OWNER"):
        return decide(self.ctx, request_id=rid, user=user, decision="approve")

    def count(self) -> int:
        return self.rt.store.read(lambda s: s.scalar(select(func.count()).select_from(RequestRow)))


@pytest.fixture
def api(db_url, monkeypatch):
    from support import BASIC_YAML

    rt = runtime(db_url, BASIC_YAML + PAIR_YAML_EXTRA, clock=system_clock, monkeypatch=monkeypatch)
    a = Api(rt)
    try:
        yield a
    finally:
        a.client.close()
        rt.store.dispose()


def assert_error(r, status: int, fields: list[str] | None = None) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert isinstance(err["code"], str) and err["code"]
    assert isinstance(err["message"], str) and err["message"]
    if fields is not None:
        assert sorted(err.get("fields") or []) == sorted(fields), err
    return err


def parse_z(text: str) -> datetime:
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text[:-1] + "+00:00")


# --------------------------------------------------------------------------- submit / read


def test_submit_answers_201_with_the_request_object(api):
    body = submission(risk="high", rollback={"description": "restart again"})
    before = datetime.now(timezone.utc)
    r = api.call("POST", "/v1/actions", body)
    assert r.status_code == 201, r.text
    req = r.json()
    for key in (
        "id",
        "status",
        "workflow",
        "title",
        "action",
        "action_sha256",
        "risk",
        "submitted_by",
        "executor",
        "sponsor",
        "deadline",
        "decisions",
        "grant",
        "outcome",
    ):
        assert key in req, key
    assert req["status"] == "pending"
    assert req["workflow"] == "prod-restart"
    assert req["title"] == body["title"]
    assert req["action"] == body["action"]
    assert req["action_sha256"] == hashlib.sha256(rfc8785.dumps(body["action"])).hexdigest()
    assert req["risk"] == "high"
    assert req["submitted_by"] == "deploy-bot" and req["executor"] == "deploy-bot"
    assert req["sponsor"] == "U0SPONSOR"
    assert req["decisions"] == [] and req["grant"] is None and req["outcome"] is None
    deadline = parse_z(req["deadline"])
    assert before + timedelta(minutes=29) < deadline < datetime.now(timezone.utc) + timedelta(minutes=31)


def test_defaults_risk_medium_and_executor_submitter(api):
    body = submission()
    del body["risk"]
    req = api.call("POST", "/v1/actions", body).json()
    assert req["risk"] == "medium" and req["executor"] == "deploy-bot"


def test_get_by_submitter_and_executor_but_404_for_anyone_else(api):
    req = api.created(workflow="pair", executor="other-bot")
    assert req["executor"] == "other-bot"
    for agent in ("deploy-bot", "other-bot"):
        r = api.get(req["id"], agent)
        assert r.status_code == 200, r.text
        assert r.json()["id"] == req["id"] and r.json()["status"] == "pending"
    assert_error(api.get(req["id"], "outsider"), 404)
    assert_error(api.get("00000000-0000-4000-8000-000000000000"), 404)


def test_unknown_ids_of_any_shape_are_404(api):
    for rid in ("nope", "x" * 300, "%00", "%FF%FE", "a%20b", "é"):
        assert_error(api.get(rid), 404)
        assert_error(api.call("POST", f"/v1/actions/{rid}/cancel"), 404)
        assert_error(api.call("POST", f"/v1/actions/{rid}/outcome", {"status": "succeeded"}), 404)


def test_cancel_by_submitter_while_pending(api):
    req = api.created(workflow="pair", executor="other-bot")
    assert_error(api.call("POST", f"/v1/actions/{req['id']}/cancel", agent="outsider"), 404)
    assert_error(api.call("POST", f"/v1/actions/{req['id']}/cancel", agent="other-bot"), 403)
    r = api.call("POST", f"/v1/actions/{req['id']}/cancel")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled"
    assert api.get(req["id"]).json()["status"] == "cancelled"
    assert_error(api.call("POST", f"/v1/actions/{req['id']}/cancel"), 409)
    # a cancelled request cannot be approved afterwards
    assert api.approve(req["id"]).outcome == "already"
    assert api.get(req["id"]).json()["status"] == "cancelled"


def test_cancel_after_approval_is_409(api):
    req = api.created()
    api.approve(req["id"])
    assert_error(api.call("POST", f"/v1/actions/{req['id']}/cancel"), 409)


def test_pull_mode_grant_and_outcome_succeeded(api):
    req = api.created(workflow="pair", executor="other-bot")
    rid = req["id"]
    outcome = {"status": "succeeded", "detail": "restarted"}
    assert_error(api.call("POST", f"/v1/actions/{rid}/outcome", outcome, agent="other-bot"), 409)  # pending
    assert api.approve(rid).outcome == "approved"

    submitter_view = api.get(rid, "deploy-bot").json()
    assert submitter_view["status"] == "approved" and submitter_view["grant"] is None
    assert submitter_view["decisions"][0]["by"] == "U0OWNER"
    assert submitter_view["decisions"][0]["decision"] == "approve"
    parse_z(submitter_view["decisions"][0]["at"])

    executor_view = api.get(rid, "other-bot").json()  # pull mode: fetching the grant delivers it
    assert executor_view["grant"]
    assert executor_view["status"] == "executing"
    assert api.get(rid, "deploy-bot").json()["status"] == "executing"

    assert_error(api.call("POST", f"/v1/actions/{rid}/outcome", outcome, agent="outsider"), 404)
    err = api.call("POST", f"/v1/actions/{rid}/outcome", outcome, agent="deploy-bot")
    assert err.status_code in (403, 404)
    r = api.call("POST", f"/v1/actions/{rid}/outcome", outcome, agent="other-bot")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "succeeded"
    assert r.json()["outcome"]["status"] == "succeeded"
    assert r.json()["grant"] is None  # only while approved or executing
    assert_error(api.call("POST", f"/v1/actions/{rid}/outcome", outcome, agent="other-bot"), 409)
    assert_error(api.call("POST", f"/v1/actions/{rid}/outcome", {"status": "failed"}, agent="other-bot"), 409)
    assert api.get(rid, "deploy-bot").json()["status"] == "succeeded"


def test_outcome_failed_while_approved(api):
    req = api.created()
    api.approve(req["id"])
    r = api.call("POST", f"/v1/actions/{req['id']}/outcome", {"status": "failed", "detail": "boom"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "failed"
    assert_error(api.call("POST", f"/v1/actions/{req['id']}/outcome", {"status": "failed"}), 409)


BAD_OUTCOMES = [
    {},
    {"status": "done"},
    {"status": "succeeded", "extra": 1},
    {"status": "failed", "detail": 5},
    {"status": "failed", "detail": "x" * 4001},
    {"status": "failed", "detail": "a\u0000"},
    [],
    "succeeded",
    None,
]


def test_outcome_body_is_validated(api, subtests):
    req = api.created()
    api.approve(req["id"])
    for body in BAD_OUTCOMES:
        with subtests.test(body=str(body)[:40]):
            assert_error(api.call("POST", f"/v1/actions/{req['id']}/outcome", raw=json.dumps(body).encode()), 422)
    assert_error(api.call("POST", f"/v1/actions/{req['id']}/outcome", raw=b"{nope"), 400)
    assert api.get(req["id"]).json()["outcome"] is None


def test_outcome_on_rejected_or_cancelled_is_409(api):
    a = api.created()
    decide(api.ctx, request_id=a["id"], user="U0OWNER", decision="reject")
    assert_error(api.call("POST", f"/v1/actions/{a['id']}/outcome", {"status": "succeeded"}), 409)
    b = api.created()
    api.call("POST", f"/v1/actions/{b['id']}/cancel")
    assert_error(api.call("POST", f"/v1/actions/{b['id']}/outcome", {"status": "succeeded"}), 409)


# --------------------------------------------------------------------------- idempotency


def test_idempotency_key_replays_the_first_answer(api):
    key = {"Idempotency-Key": "retry-1"}
    first = api.call("POST", "/v1/actions", submission(), headers=key)
    assert first.status_code == 201, first.text
    again = api.call("POST", "/v1/actions", submission(), headers=key)
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    # same JSON, different spelling: the same body
    body = submission()
    respelled = json.dumps(dict(reversed(list(body.items()))), indent=2).encode()
    again = api.call("POST", "/v1/actions", raw=respelled, headers=key)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert api.count() == 1

    assert_error(
        api.call("POST", "/v1/actions", submission(title="something else"), headers=key), 422, ["Idempotency-Key"]
    )
    assert api.count() == 1

    # scoped to the agent: another agent's identical key is its own
    other = api.call("POST", "/v1/actions", submission(), agent="other-bot", headers=key)
    assert other.status_code == 201, other.text
    assert other.json()["id"] != first.json()["id"]
    assert api.count() == 2
    # and without a key, a second submission is a second request
    assert api.submit().status_code == 201
    assert api.count() == 3


def test_concurrent_retries_with_one_key_make_one_request(api):
    import threading

    key = {"Idempotency-Key": "burst"}
    barrier = threading.Barrier(8)
    answers = []

    def go():
        barrier.wait()
        r = api.call("POST", "/v1/actions", submission(), headers=key)
        answers.append((r.status_code, r.json().get("id")))

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(code for code, _ in answers) == [200] * 7 + [201], answers
    assert len({rid for _, rid in answers}) == 1
    assert api.count() == 1


def test_a_burst_of_submissions_is_all_accepted(api):
    """Concurrent submissions share the evidence ledger; none is turned away for it
    (PostgreSQL used to answer some of them 503, Conflicted, after losing the race for
    its head eight times)."""
    from concurrent.futures import ThreadPoolExecutor

    from signoff.usecases.submit import submit

    def go(_):
        return submit(api.ctx, agent_id="deploy-bot", body=submission()).created

    with ThreadPoolExecutor(32) as pool:
        created = list(pool.map(go, range(400)))
    assert created == [True] * 400
    assert api.count() == 400


def test_idempotent_replay_after_the_request_moved_on(api):
    key = {"Idempotency-Key": "k2"}
    first = api.call("POST", "/v1/actions", submission(), headers=key).json()
    api.approve(first["id"])
    again = api.call("POST", "/v1/actions", submission(), headers=key)
    assert again.status_code == 200
    assert again.json()["id"] == first["id"] and again.json()["status"] == "approved"


def test_bad_idempotency_keys_are_422(api):
    assert_error(
        api.call("POST", "/v1/actions", submission(), headers={"Idempotency-Key": "k" * 201}), 422, ["Idempotency-Key"]
    )
    assert api.count() == 0


# --------------------------------------------------------------------------- authentication


def test_unsigned_request_is_401(api):
    r = api.client.post("/v1/actions", content=dumps(submission()), headers={"Content-Type": "application/json"})
    assert_error(r, 401)
    assert_error(api.client.get("/v1/actions/whatever"), 401)
    assert api.count() == 0


BAD_SIGNATURES = [
    "wrong_secret",
    "tampered_body",
    "no_prefix",
    "empty_sig",
    "missing_agent",
    "missing_ts",
    "bad_ts",
    "other_agents_sig",
]


def test_badly_signed_requests_are_401(api, subtests):
    for case in BAD_SIGNATURES:
        with subtests.test(case=case):
            _badly_signed(api, case)


def _badly_signed(api, case):
    raw = dumps(submission())
    h = signed_headers("deploy-bot", AGENTS["deploy-bot"], raw)
    if case == "wrong_secret":
        h = signed_headers("deploy-bot", "not-the-secret", raw)
    elif case == "tampered_body":
        raw = dumps(submission(title="tampered"))
    elif case == "no_prefix":
        h["X-Signoff-Signature"] = h["X-Signoff-Signature"][3:]
    elif case == "empty_sig":
        h["X-Signoff-Signature"] = ""
    elif case == "missing_agent":
        del h["X-Signoff-Agent"]
    elif case == "missing_ts":
        del h["X-Signoff-Timestamp"]
    elif case == "bad_ts":
        h["X-Signoff-Timestamp"] = "yesterday"
    elif case == "other_agents_sig":
        h = signed_headers("other-bot", AGENTS["deploy-bot"], raw)
    assert_error(api.client.post("/v1/actions", content=raw, headers=h), 401)
    assert api.count() == 0


def test_stale_or_future_timestamps_are_401(api, subtests):
    # +310, not +301: int(time.time()) drops up to a second and the call itself takes time,
    # which a future timestamp only 301 s ahead could lose inside the window
    for offset in (-301, 310, -3600, 10**9, -(10**9)):
        with subtests.test(offset=offset):
            assert_error(api.call("POST", "/v1/actions", submission(), ts=int(time.time()) + offset), 401)
    assert api.count() == 0


def test_timestamp_within_the_window_is_accepted(api):
    assert api.call("POST", "/v1/actions", submission(), ts=int(time.time()) - 280).status_code == 201
    assert api.call("POST", "/v1/actions", submission(), ts=int(time.time()) + 280).status_code == 201


def test_unknown_agent_is_401(api):
    raw = dumps(submission())
    assert_error(api.client.post("/v1/actions", content=raw, headers=signed_headers("ghost-bot", "x", raw)), 401)
    # a known agent's key does not make an unknown agent id valid
    h = signed_headers("ghost-bot", AGENTS["deploy-bot"], raw)
    assert_error(api.client.post("/v1/actions", content=raw, headers=h), 401)


def test_agent_whose_secret_is_not_set_is_401(api, monkeypatch):
    monkeypatch.delenv("OTHER_BOT_SECRET")
    assert_error(api.submit("other-bot"), 401)


def test_non_ascii_signature_header_is_401(api):
    raw = dumps(submission())
    h = signed_headers("deploy-bot", AGENTS["deploy-bot"], raw)
    h["X-Signoff-Signature"] = "v1=\xe9\xff".encode("latin-1")
    assert_error(api.client.post("/v1/actions", content=raw, headers=h), 401)


# --------------------------------------------------------------------------- permission / workflow


def test_agent_outside_the_workflow_is_403(api):
    assert_error(api.submit("outsider"), 403)
    assert api.count() == 0


def test_executor_outside_the_workflow_is_403(api):
    for executor in ("outsider", "ghost-bot"):
        assert_error(api.submit(executor=executor), 403)
    assert api.count() == 0


def test_unknown_workflow_is_404(api):
    assert_error(api.submit(workflow="no-such-workflow"), 404)
    assert api.count() == 0


# --------------------------------------------------------------------------- body validation


def _without(path: str) -> dict:
    body = submission()
    node = body
    *parents, last = path.split(".")
    for p in parents:
        node = node[p]
    del node[last]
    return body


INVALID_BODIES = [
    (submission(title="t" * 201), ["title"]),
    (submission(title=""), ["title"]),
    (_without("title"), ["title"]),
    (_without("workflow"), ["workflow"]),
    (_without("justification"), ["justification"]),
    (submission(justification="j" * 4001), ["justification"]),
    (_without("action.target"), ["action.target"]),
    (_without("action.type"), ["action.type"]),
    (submission(action={"type": "t" * 201, "target": "x"}), ["action.type"]),
    (submission(action={"type": "x", "target": ""}), ["action.target"]),
    (_without("action"), ["action"]),
    (submission(action="restart it"), ["action"]),
    (submission(surprise=1), ["surprise"]),
    (submission(risk="extreme"), ["risk"]),
    (submission(risk=3), ["risk"]),
    (submission(prompt="p" * (64 * KIB + 1)), ["prompt"]),
    (submission(rollback={"description": "d" * 4001}), ["rollback.description"]),
    (submission(title=5), ["title"]),
]


def test_invalid_bodies_are_422_naming_the_fields(api, subtests):
    for body, fields in INVALID_BODIES:
        with subtests.test(fields=fields):
            assert_error(api.call("POST", "/v1/actions", body), 422, fields)
    assert api.count() == 0


def test_several_invalid_fields_are_all_named(api):
    body = _without("action.target")
    body.update(title="", risk="bogus")
    assert_error(api.call("POST", "/v1/actions", body), 422, ["action.target", "risk", "title"])


def test_high_risk_without_rollback_is_422_naming_rollback(api, subtests):
    for risk in ("high", "critical"):
        for rollback in ("missing", None, {}, {"description": ""}, {"description": "   "}):
            with subtests.test(risk=risk, rollback=rollback):
                body = submission(risk=risk)
                if rollback != "missing":
                    body["rollback"] = rollback
                assert_error(api.call("POST", "/v1/actions", body), 422, ["rollback"])
    assert api.count() == 0


def test_low_risk_needs_no_rollback(api):
    assert api.submit(risk="low").status_code == 201
    assert api.submit(risk="medium", rollback=None).status_code == 201


def test_high_risk_with_rollback_is_accepted(api):
    r = api.submit(risk="critical", rollback={"description": "restore the snapshot"})
    assert r.status_code == 201, r.text


def test_404_and_403_come_before_the_rollback_check(api):
    assert_error(api.submit(workflow="nope", risk="high"), 404)
    assert_error(api.submit("outsider", risk="high", rollback={}), 403)
    assert_error(api.submit(executor="outsider", risk="critical", rollback=None), 403)


# --------------------------------------------------------------------------- raw body problems


def test_body_over_256_kib_is_413_even_unsigned(api):
    big = b'{"x":"' + b"a" * (256 * KIB) + b'"}'
    assert_error(api.client.post("/v1/actions", content=big), 413)
    assert_error(api.call("POST", "/v1/actions", raw=big), 413)
    assert_error(api.call("POST", "/v1/actions/some-id/outcome", raw=big), 413)


def test_body_over_256_kib_without_content_length_is_413(api):
    def chunks():
        for _ in range(300):
            yield b"a" * KIB

    assert_error(api.client.post("/v1/actions", content=chunks()), 413)


def test_body_at_the_limit_is_read(api):
    # exactly 256 KiB of valid JSON: not 413 (it is refused later, as invalid)
    pad = 256 * KIB - len(b'{"pad":""}')
    raw = b'{"pad":"' + b"a" * pad + b'"}'
    assert len(raw) == 256 * KIB
    assert_error(api.call("POST", "/v1/actions", raw=raw), 422)


def test_malformed_or_non_utf8_bodies_are_400(api, subtests):
    for raw in (
        b"{not json",
        b"",
        b'{"a":1',
        b"\xff\xfe{}",
        b'{"title":"caf\xe9"}',
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b'{"a": -Infinity}',
    ):
        with subtests.test(raw=raw):
            assert_error(api.call("POST", "/v1/actions", raw=raw), 400)
    assert api.count() == 0


def test_json_that_is_not_an_object_is_422(api, subtests):
    for raw in (b"[]", b"[1,2]", b'"text"', b"42", b"null", b"true"):
        with subtests.test(raw=raw):
            assert_error(api.call("POST", "/v1/actions", raw=raw), 422)


def test_values_that_cannot_be_kept_exactly_are_422(api, subtests):
    for params, field in (
        ({"n": 2**60}, "action.parameters.n"),
        ({"n": -(2**60)}, "action.parameters.n"),
        ({"s": "a\u0000b"}, "action.parameters.s"),
        ({"a\u0000": 1}, "action.parameters"),
    ):
        with subtests.test(field=field):
            body = submission(action={"type": "x", "target": "y", "parameters": params})
            assert_error(api.call("POST", "/v1/actions", body), 422, [field])
    # the edges of the exact range are fine
    body = submission(action={"type": "x", "target": "y", "parameters": {"max": 2**53 - 1, "min": -(2**53 - 1)}})
    assert api.call("POST", "/v1/actions", body).status_code == 201


UNREPRESENTABLE = [
    b'{"workflow":"prod-restart","title":"t\\ud800","action":{"type":"a","target":"b"},"justification":"j"}',
    (
        b'{"workflow":"prod-restart","title":"t","action":{"type":"a","target":"b","parameters":{"x":"\\udfff"}},'
        b'"justification":"j"}'
    ),
    (
        b'{"workflow":"prod-restart","title":"t","action":{"type":"a","target":"b","parameters":{"x":1e400}},'
        b'"justification":"j"}'
    ),
    b'{"workflow":"prod-restart","title":"a\\u0000","action":{"type":"a","target":"b"},"justification":"j"}',
    b"[" * 5000 + b"]" * 5000,
    b'{"workflow":"prod-restart","title":"t","action":{"type":"a","target":"b","parameters":'
    + b'{"a":' * 200
    + b"1"
    + b"}" * 200
    + b'},"justification":"j"}',
]


def test_unrepresentable_json_is_refused_never_500(api, subtests):
    for raw in UNREPRESENTABLE:
        with subtests.test(raw=raw[:60]):
            r = api.call("POST", "/v1/actions", raw=raw)
            assert r.status_code in (400, 422), r.text
            assert_error(r, r.status_code)
    assert api.count() == 0


# --------------------------------------------------------------------------- check order


def test_checks_run_in_contract_order(api):
    big_bad = b"[" + b"1," * (140 * KIB) + b"1]"  # over 256 KiB, not an object
    assert len(big_bad) > 256 * KIB
    # size before signature
    assert_error(api.client.post("/v1/actions", content=big_bad), 413)
    # signature before body
    assert_error(api.call("POST", "/v1/actions", raw=b"{nope", ts=int(time.time()) - 1000), 401)
    assert_error(api.client.post("/v1/actions", content=b"\xff\xff"), 401)
    # body (400, then 422) before workflow
    assert_error(api.call("POST", "/v1/actions", raw=b"{nope", agent="outsider"), 400)
    assert_error(
        api.call("POST", "/v1/actions", submission(workflow="nope", title=""), agent="outsider"), 422, ["title"]
    )
    # workflow before permission
    assert_error(api.submit("outsider", workflow="nope"), 404)
    # permission before the rollback rule
    assert_error(api.submit("outsider", risk="high"), 403)
    assert api.count() == 0


# --------------------------------------------------------------------------- ops endpoints


def test_health_ready_and_unknown_routes(api):
    r = api.client.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    r = api.client.get("/readyz")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    assert_error(api.client.get("/no/such/route"), 404)
    assert_error(api.client.delete("/v1/actions"), 405)


def test_readyz_is_503_when_the_database_is_unreachable(db_url, monkeypatch):
    from sqlalchemy import create_engine

    rt = runtime(db_url, clock=system_clock, monkeypatch=monkeypatch)
    try:
        rt.store.engine = create_engine("sqlite:////nonexistent-dir/x/y.db")
        r = TestClient(create_app(rt.context)).get("/readyz")
        assert r.status_code == 503
    finally:
        rt.store.dispose()


def test_database_outage_is_503_not_500(api):
    from sqlalchemy import create_engine
    from sqlalchemy.orm import sessionmaker

    api.rt.store.sessions = sessionmaker(create_engine("sqlite:////nonexistent-dir/x/y.db"))
    err = assert_error(api.submit(), 503)
    assert err["code"] == "unavailable"
    assert_error(api.get("00000000-0000-4000-8000-000000000000"), 503)


def test_metrics_are_prometheus_text(api):
    api.created()
    api.submit("outsider")
    r = api.client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert "# TYPE signoff_requests_submitted_total counter" in text
    assert 'signoff_requests_submitted_total{workflow="prod-restart"} 1.0' in text
    assert 'signoff_requests{status="pending"} 1.0' in text
    assert 'signoff_http_errors_total{status="403"} 1.0' in text
    from prometheus_client.parser import text_string_to_metric_families

    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"signoff_requests_submitted", "signoff_requests", "signoff_outbox_pending"} <= names


def test_jwks_verifies_the_grant(api):
    action = {
        "type": "db.migrate",
        "target": "orders",
        "environment": "production",
        "parameters": {"version": 42, "dry_run": False, "note": "é ü 😀", "ratio": 0.5},
    }
    req = api.created(workflow="pair", executor="other-bot", action=action)
    t0 = int(time.time())
    api.approve(req["id"])
    grant = api.get(req["id"], "other-bot").json()["grant"]
    assert grant

    jwks = api.client.get("/.well-known/jwks.json")
    assert jwks.status_code == 200
    keys = jwks.json()["keys"]
    header = jwt.get_unverified_header(grant)
    assert header["alg"] == "EdDSA"
    jwk = next(k for k in keys if k["kid"] == header["kid"])
    assert jwk["kty"] == "OKP" and jwk["crv"] == "Ed25519"
    key = jwt.PyJWK(jwk, algorithm="EdDSA")
    claims = jwt.decode(
        grant, key.key, algorithms=["EdDSA"], issuer="signoff", options={"require": ["iss", "sub", "jti", "iat", "exp"]}
    )
    assert claims["iss"] == "signoff"
    assert claims["sub"] == "other-bot"
    assert claims["jti"] == req["id"]
    assert t0 - 5 <= claims["iat"] <= time.time() + 5
    assert claims["exp"] - claims["iat"] == 600  # the default grant_ttl
    assert claims["action_sha256"] == hashlib.sha256(rfc8785.dumps(action)).hexdigest()
    assert claims["action_sha256"] == req["action_sha256"]

    # a tampered token does not verify
    head, payload, sig = grant.split(".")
    forged = json.loads(jwt.utils.base64url_decode(payload))
    forged["sub"] = "outsider"
    bad = ".".join([head, jwt.utils.base64url_encode(json.dumps(forged).encode()).decode(), sig])
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(bad, key.key, algorithms=["EdDSA"])


def test_grant_ttl_follows_the_workflow(api):
    req = api.created()  # prod-restart: grant_ttl 10m
    api.approve(req["id"])
    claims = jwt.decode(api.get(req["id"]).json()["grant"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 600


# --------------------------------------------------------------------------- fuzz


def _junk_value(rnd: random.Random, depth: int = 0):
    kind = rnd.randrange(12 if depth < 4 else 8)
    if kind == 0:
        return None
    if kind == 1:
        return rnd.choice([True, False])
    if kind == 2:
        return rnd.choice([0, -1, 2**31, 2**53 - 1, 2**53, -(2**63), 10**30, rnd.randrange(-(10**6), 10**6)])
    if kind == 3:
        return rnd.choice([0.5, -0.0, 1e308, 5e-324, rnd.random() * 1e6])
    if kind in (4, 5, 6):
        alphabet = 'abc <>&@!#\u0000\u200b\ud800é😀\n\t"\\{}[]' + "x" * 10
        n = rnd.choice([0, 1, 5, 50, 201, 4001])
        return "".join(rnd.choice(alphabet) for _ in range(n))
    if kind == 7:
        return rnd.choice(["prod-restart", "pair", "high", "critical", "low", "deploy-bot", "outsider"])
    if kind in (8, 9):
        return [_junk_value(rnd, depth + 1) for _ in range(rnd.randrange(4))]
    return {
        rnd.choice(["type", "target", "description", "a", "", "environment", "parameters"]): _junk_value(rnd, depth + 1)
        for _ in range(rnd.randrange(4))
    }


def _mutated_submission(rnd: random.Random) -> dict:
    body = submission(risk=rnd.choice(["low", "medium", "high", "critical"]))
    for _ in range(rnd.randrange(1, 4)):
        op = rnd.randrange(4)
        keys = list(body) + ["rollback", "executor", "parent_id", "rollback_of", "bogus"]
        key = rnd.choice(keys)
        if op == 0:
            body.pop(key, None)
        elif op == 1 and isinstance(body.get("action"), dict):
            body["action"][rnd.choice(["type", "target", "environment", "parameters", "x"])] = _junk_value(rnd)
        else:
            body[key] = _junk_value(rnd)
    return body


def _json_bytes(value) -> bytes:
    return json.dumps(value, ensure_ascii=True, allow_nan=True).encode("utf-8")


def test_fuzzed_requests_never_500(api):
    rnd = random.Random(20260302)
    existing = api.created()["id"]
    paths = [
        "/v1/actions",
        f"/v1/actions/{existing}",
        f"/v1/actions/{existing}/cancel",
        f"/v1/actions/{existing}/outcome",
        "/v1/actions/%00/outcome",
        "/v1/actions//cancel",
    ]
    seen = set()
    for i in range(250):
        path = rnd.choice(paths)
        method = rnd.choice(["POST", "POST", "GET", "PUT"])
        choice = rnd.randrange(6)
        if choice == 0:
            raw = bytes(rnd.randrange(256) for _ in range(rnd.randrange(64)))
        elif choice == 1:
            raw = _json_bytes(_junk_value(rnd))
        elif choice == 2 and path.endswith("outcome"):
            raw = _json_bytes({"status": rnd.choice(["succeeded", "failed", 1, None]), "detail": _junk_value(rnd)})
        else:
            raw = _json_bytes(_mutated_submission(rnd))
        agent = rnd.choice(["deploy-bot", "deploy-bot", "other-bot", "outsider"])
        headers = signed_headers(agent, AGENTS[agent], raw)
        mess = rnd.randrange(8)
        if mess == 0:
            headers["X-Signoff-Timestamp"] = rnd.choice(["", "-1", "1e9", "9" * 50, " 12 ", "NaN"])
        elif mess == 1:
            headers["X-Signoff-Signature"] = rnd.choice(["", "v1=", "v2=00", "v1=" + "0" * 64, "v1=zz"])
        elif mess == 2:
            headers["X-Signoff-Agent"] = rnd.choice(["", "ghost", "signoff", "a" * 500, "deploy-bot "])
        elif mess == 3:
            headers["Idempotency-Key"] = rnd.choice(
                ["", "k", "k" * 300, "\u00e9\u00ff".encode("latin-1"), f"key-{i % 3}"]
            )
        elif mess == 4:
            headers["Content-Type"] = rnd.choice(["text/plain", "application/x-www-form-urlencoded", "a/b; x"])
        r = api.client.request(method, path, content=raw, headers=headers)
        assert r.status_code < 500, (i, method, path, raw[:200], headers, r.text)
        if r.status_code >= 400:
            err = r.json()["error"]
            assert err["code"] and err["message"]
        seen.add(r.status_code)
    assert {401, 422} <= seen
