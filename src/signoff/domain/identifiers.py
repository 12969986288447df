"""Identifiers an agent sends (action type, target, environment, workflow, executor, ids):
what they may hold, how rule values compare with them, and which scripts they mix.

Rules match identifiers, so an identifier must not be able to look like another one while
being a different string: invisible characters, edge whitespace and a second spelling of the
same text (not NFC) are refused; case never matters (``fold``). What remains — letters of
another script that look alike, such as a Cyrillic ``о`` in ``production`` — is legitimate
text in general, so it is shown, not refused (``mixed_scripts``).

Scripts come from the Unicode character names in the standard library (``LATIN SMALL
LETTER A``, ``CYRILLIC SMALL LETTER O``): the name's first word is the script of every
letter this needs to tell apart, and it needs no dependency for one warning.

Also here, the one definition of the Slack ids the workflow file names people and places
with (``USER_RE``, ``GROUP_RE``, ``CHANNEL_RE``): who may approve depends on which kind a
reference is.
"""

from __future__ import annotations

import re
import unicodedata

# Characters that draw nothing yet are neither format characters nor spaces (Hangul fillers,
# the combining grapheme joiner, Khmer inherent vowels; all default-ignorable in Unicode):
# "production\u3164" looks exactly like "production".
INVISIBLE_FILLERS = frozenset("\u034f\u115f\u1160\u17b4\u17b5\u3164\uffa0")
_ASCII_BAD = re.compile(r"[\x00-\x1f\x7f]")

# Slack ids: a person (U…, or W… in an Enterprise Grid org), a user group (S…), a channel
# (C… public, G… private, D… a direct message). A group or a channel stands for its members.
USER_RE = re.compile(r"^[UW][A-Z0-9]{2,}$")
GROUP_RE = re.compile(r"^S[A-Z0-9]{2,}$")
CHANNEL_RE = re.compile(r"^[CGD][A-Z0-9]{2,}$")
# A request id as it may arrive in a URL, a button value or a modal's metadata (ours are UUIDs).
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9-]{1,40}$")


def identifier_problem(value: str) -> str | None:
    """What makes ``value`` unfit as an identifier, or None: control or format characters
    (Unicode Cc, Cf), line or paragraph separators, invisible fillers, leading or trailing
    whitespace, or a spelling that is not NFC."""
    if not value:
        return None
    if value[0].isspace() or value[-1].isspace():
        return "must not start or end with whitespace"
    if value.isascii():
        m = _ASCII_BAD.search(value)
        return _describe("a control character", m.group()) if m else None
    for c in value:
        cat = unicodedata.category(c)
        if cat == "Cc":
            return _describe("a control character", c)
        if cat == "Cf":
            return _describe("an invisible format character", c)
        if cat in ("Zl", "Zp"):
            return _describe("a line or paragraph separator", c)
        if c in INVISIBLE_FILLERS:
            return _describe("an invisible filler character", c)
    if not unicodedata.is_normalized("NFC", value):
        return "must be in Unicode NFC (the composed spelling, e.g. 'é' as one character)"
    return None


def _describe(what: str, c: str) -> str:
    name = unicodedata.name(c, "")
    return f"must not hold {what} (U+{ord(c):04X}{' ' + name if name else ''})"


def fold(value: str) -> str:
    """``value`` for a case-insensitive comparison: Unicode's identifier caseless form
    (NFKC, casefolded), so ``PRODUCTION``, ``Production`` and fullwidth ``ｐｒｏｄｕｃｔｉｏｎ``
    are all ``production``."""
    if value.isascii():
        return value.lower()
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", value).casefold())


# First words of letter names that are no script (the letter is "common" to scripts).
_COMMON = frozenset(
    {
        "LETTER",
        "CAPITAL",
        "SMALL",
        "DIGIT",
        "MATHEMATICAL",
        "DOUBLE-STRUCK",
        "SCRIPT",
        "BLACK-LETTER",
        "TURNED",
        "FEMININE",
        "MASCULINE",
        "MICRO",
        "PLANCK",
        "INFORMATION",
        "ESTIMATED",
        "KATAKANA-HIRAGANA",
    }
)
# Words before the script's name that do not change it (HALFWIDTH KATAKANA LETTER A is Katakana).
_QUALIFIERS = frozenset({"FULLWIDTH", "HALFWIDTH", "MODIFIER", "SUPERSCRIPT", "SUBSCRIPT", "EXTENDED"})
_SCRIPT = {"CJK": "Han", "IDEOGRAPHIC": "Han", "ARABIC-INDIC": "Arabic"}
# Writing systems that mix scripts by nature (Unicode TR 39's Japanese, Korean, Chinese).
_WRITING_SYSTEMS = (
    frozenset({"Han", "Hiragana", "Katakana"}),
    frozenset({"Han", "Hangul"}),
    frozenset({"Han", "Bopomofo"}),
)


def _script(c: str) -> str | None:
    cat = unicodedata.category(c)
    if not (cat[0] == "L" or cat == "Nd"):
        return None  # punctuation, symbols, marks, spaces: shared by every script
    words = unicodedata.name(c, "").split()
    while words and words[0] in _QUALIFIERS:
        words = words[1:]
    if not words or words[0] in _COMMON:
        return None
    return _SCRIPT.get(words[0]) or words[0].title()


def scripts_of(value: str) -> tuple[str, ...]:
    """The scripts of ``value``'s letters and digits, in order of first appearance
    (ASCII digits and everything that is no letter belong to no script)."""
    if value.isascii():
        return ("Latin",) if any(c.isalpha() for c in value) else ()
    seen: dict[str, None] = {}
    for c in value:
        if c.isascii():
            if c.isalpha():
                seen.setdefault("Latin")
            continue
        s = _script(c)
        if s is not None:
            seen.setdefault(s)
    return tuple(seen)


def mixed_scripts(value: object) -> tuple[str, ...] | None:
    """The scripts a text value mixes (e.g. ``("Latin", "Cyrillic")``), or None when it
    uses one (or one writing system, such as Japanese) or is not text."""
    if not isinstance(value, str) or value.isascii():
        return None
    found = scripts_of(value)
    if len(found) < 2 or any(set(found) <= ws for ws in _WRITING_SYSTEMS):
        return None
    return found
