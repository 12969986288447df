"""`signoff --version`, and `signoff standin` (the Slack stand-in as a process, for compose)."""

from __future__ import annotations

import subprocess
import sys
import time
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import httpx

import signoff
from support import free_port

ROOT = Path(__file__).resolve().parents[2]
SIGNOFF = [sys.executable, "-m", "signoff.cli"]


def test_version_is_the_distributions():
    run = subprocess.run([*SIGNOFF, "--version"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    try:
        expected = version("signoff")
    except PackageNotFoundError:  # run from a source tree
        expected = signoff.__version__
    assert run.stdout.strip() == f"signoff {expected}"


def test_package_version_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert signoff.__version__ == project["version"]


def test_standin_serves_auth_test_and_prints_each_call(tmp_path):
    port = free_port()
    log = tmp_path / "standin.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*SIGNOFF, "standin", "--port", str(port)], stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/api/"
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.post(url + "auth.test", headers={"Authorization": "Bearer xoxb-any"}, timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "stand-in not listening after 30 s:\n" + log.read_text()
                time.sleep(0.05)
        assert r.status_code == 200 and r.json()["ok"] is True and r.json()["user_id"]
        assert httpx.post(url + "auth.test", timeout=2).json() == {"ok": False, "error": "not_authed"}
        posted = httpx.post(
            url + "chat.postMessage",
            headers={"Authorization": "Bearer xoxb-any"},
            data={"channel": "C0APPROVALS", "text": "hello"},
            timeout=2,
        ).json()
        proc.terminate()  # SIGTERM: a clean stop, as `docker compose stop` asks
        assert proc.wait(timeout=10) == 0
        lines = log.read_text().splitlines()
        assert lines[0].startswith(f"Slack stand-in listening on http://127.0.0.1:{port}/")
        assert lines[1:] == [
            "auth.test 200 ok",
            "auth.test 200 not_authed",
            f"chat.postMessage 200 ok channel=C0APPROVALS ts={posted['ts']} text='hello'",
        ]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_standin_names_a_port_it_cannot_take():
    port = free_port()
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        run = subprocess.run([*SIGNOFF, "standin", "--port", str(port)], capture_output=True, text=True, timeout=30)
    assert run.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in run.stderr
