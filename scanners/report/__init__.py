"""Report formats: one module per format behind :class:`~scanners.report.interface.Reporter`.

The CLI calls :func:`render`; a new format is one module plus one line in :func:`get_reporter`.
"""

from __future__ import annotations

from depthguard.errors import UsageError
from scanners.report.baseline import DetectSecretsBaselineReporter
from scanners.report.interface import Reporter
from scanners.report.json_report import JsonReporter
from scanners.report.jsonl import JsonlReporter
from scanners.report.sarif import SarifReporter
from scanners.report.text import TextReporter
from scanners.result import ScanResult

FORMATS = ("text", "json", "jsonl", "sarif", "baseline")

__all__ = ["FORMATS", "Reporter", "get_reporter", "render"]


def get_reporter(fmt: str, *, color: bool = False) -> Reporter:
    """The reporter for ``fmt``; an unknown name is a usage error (exit code 2)."""
    if fmt == "text":
        return TextReporter(color=color)
    if fmt == "json":
        return JsonReporter()
    if fmt == "jsonl":
        return JsonlReporter()
    if fmt == "sarif":
        return SarifReporter()
    if fmt == "baseline":
        return DetectSecretsBaselineReporter()
    raise UsageError(f"unknown report format {fmt!r}; choose one of: {', '.join(FORMATS)}")


def render(result: ScanResult, fmt: str, *, show_secrets: bool, color: bool = False) -> str:
    """The whole report as one string; ``color`` only affects ``text``."""
    return get_reporter(fmt, color=color).render(result, show_secrets)
