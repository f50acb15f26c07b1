"""Shared fixtures: engines are built once per session (compiling the pack is the slow part)."""

from __future__ import annotations

import pytest

from scanners.engine import Engine
from scanners.prefilter import hyperscan_available
from scanners.rulepack import builtin_rules


@pytest.fixture(scope="session")
def python_engine() -> Engine:
    return Engine(builtin_rules(), engine="python")


@pytest.fixture(scope="session")
def hs_engine() -> Engine:
    if not hyperscan_available():
        pytest.skip("hyperscan is not installed on this platform")
    return Engine(builtin_rules(), engine="hyperscan")


@pytest.fixture(scope="session", params=["hyperscan", "python"])
def engine(request: pytest.FixtureRequest) -> Engine:
    return request.getfixturevalue("hs_engine" if request.param == "hyperscan" else "python_engine")
