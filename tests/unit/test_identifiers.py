"""Identifier hygiene: what an identifier may hold, how rule values compare, which
scripts a value mixes."""

from __future__ import annotations

import unicodedata

import pytest

from signoff.domain.identifiers import fold, identifier_problem, mixed_scripts, scripts_of


@pytest.mark.parametrize(
    "value",
    [
        "production",
        "db.drop_table",
        "checkout-api",
        "orders/eu-1",
        "a b",
        "Prod",
        "svc:restart",
        "café",
        "サーバー再起動",
        "сервер",
        "δ-service",
        "x" * 200,
        "1",
        "😀-deploy",
    ],
)
def test_ordinary_identifiers_pass(value):
    assert identifier_problem(value) is None


@pytest.mark.parametrize(
    "value, why",
    [
        ("production\u200b", "format"),  # zero-width space (Cf)
        ("pro\u200dduction", "format"),  # zero-width joiner
        ("\ufeffproduction", "format"),  # byte-order mark
        ("prod\u202eUCTION", "format"),  # right-to-left override
        ("prod\u00adction", "format"),  # soft hyphen
        ("prod\nuction", "control"),
        ("prod\tuction", "control"),
        ("prod\x7fuction", "control"),
        ("prod\x85uction", "control"),  # NEL (C1 control)
        ("production ", "whitespace"),
        (" production", "whitespace"),
        ("production\u00a0", "whitespace"),  # no-break space
        ("\u3000production", "whitespace"),  # ideographic space
        ("prod\u2028uction", "line"),  # line separator
        ("production\u3164", "invisible"),  # Hangul filler: a letter that draws nothing
        ("cafe\u0301", "NFC"),  # e + combining acute: NFC spells it é
        ("\u212aelvin", "NFC"),  # KELVIN SIGN: NFC makes it K
    ],
)
def test_look_alike_spellings_are_named(value, why):
    problem = identifier_problem(value)
    assert problem is not None and why in problem, problem


def test_nfc_spelling_of_the_same_text_passes():
    assert identifier_problem(unicodedata.normalize("NFC", "cafe\u0301")) is None


def test_fold_is_the_identifier_caseless_form():
    assert fold("Production") == fold("PRODUCTION") == fold("ｐｒｏｄｕｃｔｉｏｎ") == "production"
    assert fold("DB.DROP") == "db.drop"
    assert fold("Straße") == fold("STRASSE")
    assert fold("cafe\u0301") == fold("CAFÉ")


def test_scripts_in_order_of_appearance_ignoring_common_characters():
    assert scripts_of("checkout-api-2") == ("Latin",)
    assert scripts_of("prоduction") == ("Latin", "Cyrillic")  # a Cyrillic о
    assert scripts_of("сервер-1") == ("Cyrillic",)
    assert scripts_of("αlpha") == ("Greek", "Latin")
    assert scripts_of("ｐｒｏｄ") == ("Latin",)  # fullwidth Latin is Latin
    assert scripts_of("server-١") == ("Latin", "Arabic")  # an Arabic-Indic digit
    assert scripts_of("123-_.") == ()


def test_mixed_scripts():
    assert mixed_scripts("prоduction") == ("Latin", "Cyrillic")
    assert mixed_scripts("Cyrillic-сервер") == ("Latin", "Cyrillic")
    assert mixed_scripts("production") is None
    assert mixed_scripts("сервер") is None
    assert mixed_scripts("") is None
    assert mixed_scripts(None) is None
    # Japanese and Korean writing mix scripts by nature: not a warning
    assert mixed_scripts("サーバー再起動する") is None
    assert mixed_scripts("서버再起動") is None
    # ... but Latin with them is a mix
    assert mixed_scripts("deploy-サーバー") == ("Latin", "Katakana")
