"""Allowlists: inline comments users already write, plus values and regexes from the config.

Inline markers are honoured from every tool a team may be migrating from, so adopting depthguard
does not mean re-annotating a codebase.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

INLINE_MARKERS = (b"depthguard:allow", b"pragma: allowlist secret", b"gitleaks:allow", b"trufflehog:ignore")
NEXT_LINE_MARKERS = (b"pragma: allowlist nextline secret", b"depthguard:allow-next-line")


def line_allows(line: bytes) -> bool:
    return any(m in line for m in INLINE_MARKERS)


def previous_line_allows(line: bytes) -> bool:
    return any(m in line for m in NEXT_LINE_MARKERS)


@dataclass(frozen=True)
class Allowlist:
    """Values (exact) and regexes (searched in the secret) that a config declared harmless."""

    values: frozenset[str] = frozenset()
    regexes: tuple[re.Pattern[str], ...] = field(default_factory=tuple)

    @classmethod
    def build(cls, values: Iterable[str] = (), regexes: Iterable[str] = ()) -> Allowlist:
        return cls(frozenset(values), tuple(re.compile(r) for r in regexes))

    def allows(self, secret: str) -> bool:
        return secret in self.values or any(r.search(secret) for r in self.regexes)
