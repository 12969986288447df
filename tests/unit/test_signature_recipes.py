"""The agent signature recipes, and the worked example the docs show (docs/api.md)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from signoff.domain import agent_signature as sig

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
SECRET, TS = b"example-secret", "1767225600"
BODY = (
    b'{"workflow":"prod-restart","title":"Restart checkout-api","action":{"type":"service.restart",'
    b'"target":"checkout-api"},"justification":"p99 latency doubled","risk":"low"}'
)
RID = "3f2c9a4e-8d1b-4c55-9e0a-6b7f1d2e3a4b"
EXAMPLES = [
    sig.sign_v2(SECRET, TS, "POST", "/v1/actions", BODY),
    sig.sign_v1(SECRET, TS, BODY),
    sig.sign_v2(SECRET, TS, "GET", f"/v1/actions/{RID}?wait=30", b""),
    sig.sign_v2(SECRET, TS, "POST", f"/v1/actions/{RID}/cancel", b""),
]


def test_the_docs_show_the_values_the_code_computes():
    text = DOC.read_text()
    assert BODY.decode() in text
    for value in EXAMPLES:
        assert value in text, value
    # and the hex the shell example prints
    assert EXAMPLES[0][3:] + " *stdin" in text and EXAMPLES[2][3:] + " *stdin" in text


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_openssl_agrees_with_the_recipe():
    message = b"v2:" + TS.encode() + b":POST:/v1/actions:" + BODY
    out = subprocess.run(
        ["openssl", "dgst", "-sha256", "-hmac", SECRET.decode(), "-r"],
        input=message,
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout.decode()
    assert out.split()[0] == EXAMPLES[0][3:]


def test_the_python_example_in_the_docs_signs_like_the_recipe():
    block = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    recipe = block.split("# a real call")[0].replace("import httpx", "")
    namespace: dict = {}
    exec(compile(recipe, "docs/api.md", "exec"), namespace)  # its own assert checks the value
    assert namespace["sign_v1"](SECRET, TS, BODY) == EXAMPLES[1]


def test_v2_binds_method_target_timestamp_and_body():
    base = sig.sign_v2(SECRET, TS, "POST", "/v1/actions", BODY)
    assert sig.sign_v2(SECRET, TS, "post", "/v1/actions", BODY) == base  # the method is upper-cased
    assert sig.sign_v2(SECRET, TS, "POST", b"/v1/actions", BODY) == base  # bytes or text
    for other in (
        sig.sign_v2(SECRET, TS, "GET", "/v1/actions", BODY),
        sig.sign_v2(SECRET, TS, "POST", "/v1/actions?x=1", BODY),
        sig.sign_v2(SECRET, "1767225601", "POST", "/v1/actions", BODY),
        sig.sign_v2(SECRET, TS, "POST", "/v1/actions", BODY + b" "),
        sig.sign_v2(b"other", TS, "POST", "/v1/actions", BODY),
    ):
        assert other != base


def test_sign_both_is_v1_then_v2():
    both = sig.sign_both(SECRET, TS, "POST", "/v1/actions", BODY)
    assert both == f"{EXAMPLES[1]},{EXAMPLES[0]}"
    assert sig.parse_header(both) == {"v1": EXAMPLES[1], "v2": EXAMPLES[0]}


def test_parse_header():
    h = "0" * 64
    assert sig.parse_header(f"v2={h}") == {"v2": f"v2={h}"}
    assert sig.parse_header(f" v1={h} , v2={h}") == {"v1": f"v1={h}", "v2": f"v2={h}"}
    assert sig.parse_header(f"v3={h},v2={h}") == {"v2": f"v2={h}"}  # a version it does not know is skipped
    assert sig.parse_header(f"v3={h}") == {}
    for bad in (
        "",
        "v1",
        "v1=",
        f"v1={h[:-1]}",
        f"v1={'a' * 63}A",
        f"v1={h}\n",
        f"v1={h},",
        f"v1={h},v1={h}",
        f"v1={h};v2={h}",
        f"sha256={h}",
        "é",
    ):
        with pytest.raises(sig.MalformedSignature):
            sig.parse_header(bad)
