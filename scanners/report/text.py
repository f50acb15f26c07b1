"""``--format text``: the human listing for terminals.

One aligned row per finding (severity, rule, path:line:col, redacted secret), a summary with counts
and stats, and how to allow a false positive. Everything taken from scanned content goes through
:func:`printable` so file names cannot inject terminal escapes. Plain text unless ``color``.
"""

from __future__ import annotations

import io
from collections import Counter

from rich.console import Console
from rich.text import Text

from scanners.finding import Finding, redact
from scanners.report.interface import SEVERITY_ORDER, printable
from scanners.result import ScanResult

STYLES = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "cyan"}
ALLOW_HINT = (
    "To allow a false positive: add a `depthguard:allow` comment on its line, "
    "or record it in a baseline (`depthguard baseline create`, then `--baseline FILE`)."
)


def _location(f: Finding) -> str:
    if f.path.startswith("env:"):
        return printable(f.path)
    return f"{printable(f.path)}:{f.line}:{f.column}"


def _where(f: Finding) -> str:
    """Source context beyond the path: the commit, image layer, process or file it was seen in."""
    parts: list[str] = []
    if f.commit and f.commit.get("sha"):
        parts.append(f"commit {str(f.commit['sha'])[:12]}")
    if f.layer and f.layer.get("digest"):
        deleted = ", deleted" if f.layer.get("deleted") else ""
        parts.append(f"layer {f.layer.get('index', '?')} {str(f.layer['digest'])[:19]}{deleted}")
    if "pid" in f.extra:  # env: which process, and which file or object a variable came from
        command = f.extra.get("command")
        parts.append(f"pid {f.extra['pid']}" + (f" {printable(str(command))}" if command else ""))
    if "file" in f.extra:
        parts.append(f"{printable(str(f.extra['file']))}:{f.line}")
    if "object" in f.extra:
        parts.append(printable(str(f.extra["object"])))
    return f" ({'; '.join(parts)})" if parts else ""


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover - loop always returns


def summary(result: ScanResult) -> str:
    counts = Counter(f.severity for f in result.findings)
    order = [s for s in SEVERITY_ORDER if counts[s]] + sorted(s for s in counts if s not in SEVERITY_ORDER)
    n = len(result.findings)
    st = result.stats
    head = f"{n} finding{'s' if n != 1 else ''}"
    if n:
        head += " (" + ", ".join(f"{counts[s]} {s}" for s in order) + ")"
    line = (
        f"{head} in {st.files} file{'s' if st.files != 1 else ''}, {_size(st.bytes)}, "
        f"{st.seconds:.2f}s, {st.rules} rules"
    )
    if st.suppressed:
        line += f"; {st.suppressed} suppressed by baseline"
    if st.skipped:
        line += "; skipped: " + ", ".join(f"{k} {v}" for k, v in sorted(st.skipped.items()))
    return line


class TextReporter:
    def __init__(self, color: bool = False, width: int = 200) -> None:
        self.color = color
        self.width = width

    def render(self, result: ScanResult, show_secrets: bool) -> str:
        buf = io.StringIO()
        console = Console(
            file=buf,
            width=self.width,
            force_terminal=self.color,
            no_color=not self.color,
            color_system="standard" if self.color else None,
            highlight=False,
            emoji=False,
            soft_wrap=True,
        )
        rows = [
            (
                f.severity.upper(),
                printable(f.rule_id),
                _location(f),
                printable(f.secret if show_secrets else redact(f.secret)),
                printable(f.description) + _where(f),
                STYLES.get(f.severity, ""),
            )
            for f in result.findings
        ]
        widths = [max((len(r[i]) for r in rows), default=0) for i in range(3)]
        for sev, rule, loc, secret, desc, style in rows:
            line = Text()
            line.append(sev.ljust(widths[0]), style=style)
            line.append("  " + rule.ljust(widths[1]), style="bold")
            line.append("  " + loc.ljust(widths[2]))
            line.append("  " + secret, style="magenta")
            line.append("  " + desc, style="dim")
            console.print(line)
        for warning in result.warnings:
            console.print(Text("warning: " + printable(warning), style="yellow"))
        if rows or result.warnings:
            console.print()
        console.print(Text(summary(result), style="bold red" if rows else "bold green"))
        if rows:
            console.print(Text(ALLOW_HINT, style="dim"))
        return "\n".join(line.rstrip() for line in buf.getvalue().splitlines()) + "\n"
