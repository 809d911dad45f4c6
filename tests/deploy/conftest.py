"""Fixtures of the deploy validation tests (helpers: deploy_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from deploy_helpers import BUILD, validate


@pytest.fixture(scope="session")
def rendered() -> dict[str, Path]:
    """deploy/build/{base,dev,prod}.yaml, rendered once per session by `validate.sh render`."""
    validate("render")
    return {name: BUILD / f"{name}.yaml" for name in ("base", "dev", "prod")}
