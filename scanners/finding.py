"""The finding model shared by every source and report.

A finding holds the real secret in memory only so that fingerprints, baselines and ``--show-secrets``
work; every report goes through :func:`redact` unless the user asked otherwise.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any


def fingerprint(secret: str) -> str:
    """``sha256:`` of the secret: stable across files, lines and commits, and reveals nothing."""
    return "sha256:" + hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def redact(secret: str) -> str:
    """Enough to recognise a value you already know, never enough to use it."""
    n = len(secret)
    if n >= 20:
        return f"{secret[:4]}…{secret[-4:]}"
    if n >= 12:
        return f"{secret[:2]}…{secret[-2:]}"
    return "…"


@dataclass(frozen=True, slots=True)
class Finding:
    rule_id: str
    description: str
    severity: str
    confidence: str
    path: str
    line: int
    """1-based line of the secret's first character."""
    column: int
    """1-based column (characters) where the secret starts."""
    end_column: int
    """1-based column just past the secret's last character on its last line."""
    secret: str = field(repr=False)
    entropy: float
    source: str = "file"
    commit: dict[str, Any] | None = None
    layer: dict[str, Any] | None = None
    verified: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    """Source-specific context (pid, file, present_at_head...) added to the JSON object."""

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.secret)

    @property
    def id(self) -> str:
        """Stable identity: rule, path and fingerprint; moving a line does not change it."""
        raw = f"{self.rule_id}\0{self.path}\0{self.fingerprint}".encode()
        return hashlib.sha256(raw).hexdigest()[:20]

    def with_location(self, **changes: Any) -> Finding:
        return replace(self, **changes)

    def to_dict(self, show_secrets: bool = False) -> dict[str, Any]:
        """The JSON object of design.md's report contract (plus ``id`` and source extras)."""
        out: dict[str, Any] = {
            "id": self.id,
            "rule_id": self.rule_id,
            "description": self.description,
            "severity": self.severity,
            "confidence": self.confidence,
            "source": self.source,
            "path": self.path,
            "line": self.line,
            "column": self.column,
            "end_column": self.end_column,
            "secret": self.secret if show_secrets else redact(self.secret),
            "fingerprint": self.fingerprint,
            "entropy": round(self.entropy, 2),
            "commit": self.commit,
            "layer": self.layer,
            "verified": self.verified,
        }
        out.update(self.extra)
        return out
