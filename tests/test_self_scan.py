"""The repository must scan clean with its own config: README's first command runs that scan, so
a doc example or helper that looks like a credential would otherwise break installation (exit 1)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_repository_scans_clean() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "depthguard", "scan", "dir", ".", "--format", "json", "--no-progress"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    found = [(f["path"], f["line"], f["rule_id"]) for f in json.loads(res.stdout)["findings"]]
    assert res.returncode == 0 and not found, found
