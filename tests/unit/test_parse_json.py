"""Reading an agent's JSON body: what is refused (400 not JSON, 422 JSON that cannot be kept
exactly), with the field's path, and that nothing else ever escapes."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signoff.api.agents import BadBody, parse_json
from signoff.domain.errors import Invalid


def refused(raw: bytes) -> Invalid:
    with pytest.raises(Invalid) as info:
        parse_json(raw)
    return info.value


@pytest.mark.parametrize(
    "raw, path",
    [
        (b'{"workflow":"nope","workflow":"wf1"}', "workflow"),
        (b'{"a":{"b":1,"c":2,"b":3}}', "a.b"),
        (b'{"a":[1,{"k":1,"k":1}]}', "a.1.k"),
        (b'[{"x":0},{"y":1,"y":1}]', "1.y"),
        (b'{"t":1,"\\u0074":2}', "t"),  # one key, two spellings
        (b'{"":1,"":2}', ""),
    ],
)
def test_a_duplicated_key_is_refused_with_its_path(raw, path):
    err = refused(raw)
    assert err.fields == [path or "body"] or err.fields == [path]
    assert "duplicated key" in err.message


def test_distinct_keys_are_kept():
    assert parse_json(b'{"a":1,"A":2,"b":{"a":3}}') == {"a": 1, "A": 2, "b": {"a": 3}}
    assert type(parse_json(b'{"a":{"b":1}}')["a"]) is dict


@pytest.mark.parametrize(
    "raw, path",
    [
        (b'{"n":1' + b"0" * 5000 + b"}", "n"),
        (b'{"a":{"n":-' + b"9" * 50_000 + b"}}", "a.n"),
        (b'{"n":[0,' + b"1" * 4301 + b"]}", "n.1"),
        (b"1" * 4301, "body"),
        (b'{"n":9007199254740992}', "n"),
        (b'{"n":-9007199254740992}', "n"),
    ],
)
def test_integers_beyond_2_53_are_422_without_python_advice(raw, path):
    err = refused(raw)
    assert err.fields == [path]
    assert "integers must be within ±(2^53 - 1)" in err.message
    assert "sys." not in err.message and "digits" not in err.message


@pytest.mark.parametrize(
    "raw, path",
    [
        (b'{"x":1e999999}', "x"),
        (b'{"x":-1e400}', "x"),
        (b'{"x":[1E+99999999999999999999]}', "x.0"),
    ],
)
def test_numbers_beyond_a_double_are_422(raw, path):
    err = refused(raw)
    assert err.fields == [path] and "finite" in err.message


def test_numbers_within_range_are_kept():
    assert parse_json(b'{"a":9007199254740991,"b":-9007199254740991,"c":1e308,"d":0.' + b"5" * 3000 + b"}") == {
        "a": 2**53 - 1,
        "b": -(2**53 - 1),
        "c": 1e308,
        "d": 0.5555555555555556,
    }
    assert parse_json(b'{"z":000}'.replace(b"000", b"0")) == {"z": 0}


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b"",
        b"\xff",
        b'{"a":NaN}',
        b'{"a":Infinity}',
        b"[1,]",
        b'{"a":01}',
        b"1" * 4301 + b"x",
        b'{"n":1' + b"0" * 5000 + b",}",
    ],
)
def test_what_is_not_json_is_400(raw):
    with pytest.raises(BadBody) as info:
        parse_json(raw)
    assert "sys." not in info.value.message


def test_deep_nesting_is_422():
    assert refused(b"[" * 100_000 + b"]" * 100_000).fields == ["body"]
    assert refused(b'{"a":' * 70 + b"1" + b"}" * 70).fields


# -- nothing else escapes ---------------------------------------------------------------------

JSONISH = st.text(
    alphabet=st.sampled_from(list('{}[]":,0123456789-+.eE \\u"tnrfalsTNI') + ["\ud800", "\x00", "é"]), max_size=200
)
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=5), kids, max_size=4),
    max_leaves=20,
)


def _must_not_escape(raw: bytes) -> None:
    try:
        parse_json(raw)
    except (BadBody, Invalid) as exc:
        assert exc.message
        assert "set_int_max_str_digits" not in exc.message


FUZZ = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_400_or_422(raw):
    _must_not_escape(raw)


@FUZZ
@given(JSONISH)
def test_random_json_ish_text_raises_only_400_or_422(text):
    _must_not_escape(text.encode("utf-8", "surrogatepass"))


@FUZZ
@given(values, st.integers(min_value=0, max_value=400), st.text(alphabet='{}[],:"0123456789e-', max_size=3))
def test_json_with_a_splice_raises_only_400_or_422(value, at, splice):
    raw = json.dumps(value).encode()
    at = at % (len(raw) + 1)
    _must_not_escape(raw[:at] + splice.encode() + raw[at:])


@FUZZ
@given(values)
def test_valid_json_in_range_round_trips(value):
    raw = json.dumps(value).encode()
    try:
        assert parse_json(raw) == value
    except Invalid as exc:  # out of range for I-JSON: named, never silently changed
        assert exc.fields
