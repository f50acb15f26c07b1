"""The report family's one interface: a reporter turns a :class:`ScanResult` into text.

Reporters are pure (no I/O, no logging) so the CLI decides where output goes, and they never print a
raw secret unless the caller passed ``show_secrets=True``.
"""

from __future__ import annotations

import unicodedata
from typing import Protocol, runtime_checkable

import depthguard
from scanners.result import ScanResult

TOOL_NAME = "depthguard"
INFORMATION_URI = "https://github.com/depthguard/depthguard"
"""Where SARIF viewers send users for the tool; change here when the project has a public home."""

SEVERITY_ORDER = ("critical", "high", "medium", "low")


def tool_version() -> str:
    return depthguard.__version__


@runtime_checkable
class Reporter(Protocol):
    """One output format. ``render`` returns the whole document (ending in a newline when non-empty)."""

    def render(self, result: ScanResult, show_secrets: bool) -> str: ...


def printable(text: str) -> str:
    """Escape control and unpaired-surrogate characters.

    Paths and secrets come from scanned (possibly hostile) content: a file name holding ANSI escapes
    must not be able to rewrite the user's terminal, and a surrogate-escaped byte must not crash an
    encoder.
    """
    out: list[str] = []
    for ch in text:
        if ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif unicodedata.category(ch) in ("Cc", "Cs", "Cf"):  # Cf: bidi overrides (trojan source)
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)
