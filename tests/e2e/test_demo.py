"""``signoff demo`` as a user runs it (``python -m signoff demo``): the whole loop offline on
the package's own samples and Slack stand-in, every check holding, exit 0."""

from __future__ import annotations

import subprocess
import sys

from e2e.harness import base_env
from signoff.demo import samples


def test_the_demo_runs_the_whole_loop_and_exits_0():
    run = subprocess.run(
        [sys.executable, "-m", "signoff", "demo"], env=base_env(), capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert f"agent {samples.AGENT} submits" in out
    assert samples.submission()["title"] in out
    assert "refused (separation of duties)" in out and "HMAC signature valid: True" in out
    assert "live buttons left: False" in out and "store verify: OK" in out
    assert out.rstrip().endswith("demo finished: everything held")
