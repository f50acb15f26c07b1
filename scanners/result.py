"""The outcome of one scan: findings plus statistics, handed from the runner to a report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from scanners.finding import Finding


@dataclass(slots=True)
class ScanStats:
    files: int = 0
    """Files (or blobs, layers' members, variables) actually scanned."""
    bytes: int = 0
    seconds: float = 0.0
    rules: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    """Reason -> count: ``binary``, ``too-large``, ``unreadable``, ``excluded``…; never fatal."""
    suppressed: int = 0
    """Findings hidden by a baseline."""
    engine: str = ""

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + n

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "rules": self.rules,
            "skipped": dict(sorted(self.skipped.items())),
            "suppressed": self.suppressed,
            "engine": self.engine,
        }


@dataclass(slots=True)
class ScanResult:
    findings: list[Finding]
    stats: ScanStats
    roots: list[str] = field(default_factory=list)
    """What was scanned, as the user named it (paths are relative to these)."""
    warnings: list[str] = field(default_factory=list)
