"""Helpers of the deploy validation tests: the tools of deploy/setup-tools.sh, deploy/validate.sh steps.

A missing tool FAILS the tests that need it (it is a CI setup defect, not a reason to skip): the message
says to run `bash deploy/setup-tools.sh`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BUILD = DEPLOY / "build"
TOOLS = Path(os.environ.get("DEPLOY_TOOLS", ROOT / ".cache" / "deploy-tools"))
TOOL_BIN = TOOLS / "venv" / "bin"
PROM_BIN = TOOLS / "prometheus" / "bin"
SETUP_HINT = "run `bash deploy/setup-tools.sh` (scripts/setup.sh should do it)"

sys.path.insert(0, str(DEPLOY / "tools"))


def tool(name: str) -> str:
    """Absolute path of a deploy tool; pytest.fail (never skip) when it is missing."""
    for d in (TOOL_BIN, PROM_BIN, Path(sys.executable).parent):
        if (d / name).exists():
            return str(d / name)
    found = shutil.which(name)
    if found:
        return found
    pytest.fail(f"MISSING TOOL {name!r}: not in {TOOL_BIN}, {PROM_BIN}, the project venv or PATH; {SETUP_HINT}", pytrace=False)


def run(cmd: list[str], timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, **kw)


def validate(*steps: str, timeout: float = 180) -> str:
    """Run deploy/validate.sh STEP...; fail with its output unless it succeeds."""
    env = {**os.environ, "DEPLOY_TOOLS": str(TOOLS), "PROJECT_PY": sys.executable}
    proc = run(["bash", str(DEPLOY / "validate.sh"), *steps], timeout=timeout, env=env)
    out = proc.stdout + proc.stderr
    if proc.returncode == 3:
        pytest.fail(f"{out}\n{SETUP_HINT}", pytrace=False)
    if proc.returncode != 0:
        pytest.fail(f"deploy/validate.sh {' '.join(steps)} failed (rc {proc.returncode}):\n{out[-8000:]}",
                    pytrace=False)
    return out


def load(path: Path) -> list[dict]:
    with open(path) as fh:
        return [d for d in yaml.safe_load_all(fh) if d]
