"""``--format jsonl``: one finding object (as in the JSON report) per line, for streaming tools.

No header or stats line, so every line has the same shape; an empty scan yields empty output.
"""

from __future__ import annotations

import json

from scanners.result import ScanResult


class JsonlReporter:
    def render(self, result: ScanResult, show_secrets: bool) -> str:
        return "".join(json.dumps(f.to_dict(show_secrets)) + "\n" for f in result.findings)
