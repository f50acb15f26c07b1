"""``--format json``: design.md's report object, exactly, for scripts and CI.

The top-level keys are a public contract (version, tool, findings, stats); extend only compatibly.
Output is ASCII-escaped JSON so a surrogate-escaped secret byte can never make writing it fail.
"""

from __future__ import annotations

import json
from typing import Any

from scanners.report.interface import TOOL_NAME, tool_version
from scanners.result import ScanResult

REPORT_VERSION = 1


def report_object(result: ScanResult, show_secrets: bool) -> dict[str, Any]:
    return {
        "version": REPORT_VERSION,
        "tool": {"name": TOOL_NAME, "version": tool_version()},
        "findings": [f.to_dict(show_secrets) for f in result.findings],
        "stats": result.stats.to_dict(),
    }


class JsonReporter:
    def render(self, result: ScanResult, show_secrets: bool) -> str:
        return json.dumps(report_object(result, show_secrets), indent=2) + "\n"
