"""Baselines: known findings a scan should not report again.

Two formats are read:

* depthguard's own (``"format": "depthguard-baseline"``), written by :func:`write_baseline`. Entries
  are keyed by content fingerprint, never by line number or commit, and written sorted, one entry per
  line, with no timestamp, so two branches that each baseline a finding rarely conflict and a moved
  line never resurrects an accepted finding.
* detect-secrets' ``.secrets.baseline`` (any 0.12+/1.x version), so teams migrating keep their audited
  baseline. A finding matches an entry with the same filename and ``hashed_secret == sha1(secret)``;
  line numbers and detect-secrets' ``type`` are ignored (its plugins and our rules name types
  differently). Every entry suppresses, whatever its ``is_secret`` audit label: that is what
  ``detect-secrets-hook --baseline`` does (the baseline lists *known* values; tracking whether a real
  one was rotated is the audit's job, not the scan's).

Nothing here ever logs or puts a secret in a message: errors name the file, the key and the problem.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from depthguard.errors import ReportError
from scanners.finding import Finding
from scanners.report import baseline as ds_report

OWN_FORMAT = "depthguard-baseline"
CURRENT_VERSION = 1

BaselineFormat = Literal["depthguard", "detect-secrets"]

UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}
"""Version N -> a function turning a version-N document into version N+1 (like detect-secrets'
``core/upgrades``). Empty while only version 1 exists; add ``UPGRADES[1] = _v1_to_v2`` with version 2."""


def upgrade(data: dict[str, Any], source: str) -> dict[str, Any]:
    """Bring an own-format document up to :data:`CURRENT_VERSION`, one step at a time."""
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ReportError(f"{source}: unknown depthguard baseline version {version!r}")
    if version > CURRENT_VERSION:
        raise ReportError(
            f"{source}: baseline format version {version} is newer than this depthguard reads "
            f"({CURRENT_VERSION}); upgrade depthguard"
        )
    while version < CURRENT_VERSION:
        step = UPGRADES.get(version)
        if step is None:
            raise ReportError(f"{source}: no upgrade path from baseline format version {version}")
        data = step(dict(data))
        version += 1
        data["version"] = version
    return data


@dataclass(frozen=True, slots=True, order=True)
class BaselineEntry:
    """One accepted finding of the own format. Field order is the sort order of the file."""

    fingerprint: str
    path: str
    """Relative to the scanned root, forward slashes."""
    rule_id: str
    """Informational: matching ignores it so renaming or splitting a rule keeps the acceptance."""
    id: str
    """The finding's stable id when it was accepted (what SARIF's partialFingerprints carry)."""

    @property
    def key(self) -> tuple[str, str]:
        return (self.path, self.fingerprint)

    @classmethod
    def from_finding(cls, finding: Finding) -> BaselineEntry:
        return cls(finding.fingerprint, ds_report.normalize_path(finding.path), finding.rule_id, finding.id)

    def to_dict(self) -> dict[str, str]:
        return {"fingerprint": self.fingerprint, "id": self.id, "path": self.path, "rule_id": self.rule_id}


def _own_key(finding: Finding) -> tuple[str, str]:
    return (ds_report.normalize_path(finding.path), finding.fingerprint)


def _ds_key(finding: Finding) -> tuple[str, str]:
    return (ds_report.normalize_path(finding.path), ds_report.sha1_hex(finding.secret))


class Baseline:
    """A loaded baseline and the question the scanner asks it: is this finding already known?

    Own-format matching is **same fingerprint + same path** (rule, line and commit ignored): an
    accepted value stays accepted when its line moves, when it reappears in another commit of the
    history, or when a different rule starts matching it; the same value leaking into a *new* file is
    a new finding worth a look.
    """

    def __init__(
        self,
        fmt: BaselineFormat,
        *,
        entries: Iterable[BaselineEntry] = (),
        ds_results: dict[str, list[dict[str, Any]]] | None = None,
        ds_header: dict[str, Any] | None = None,
        source: str = "",
    ) -> None:
        self.format: BaselineFormat = fmt
        self.source = source
        self.entries: tuple[BaselineEntry, ...] = tuple(sorted(set(entries)))
        self.ds_results: dict[str, list[dict[str, Any]]] = ds_results or {}
        """detect-secrets format only: filename -> its entries, as read (audit labels kept)."""
        self.ds_header: dict[str, Any] = ds_header or {}
        """detect-secrets format only: every top-level key but ``results``, kept for :func:`update`."""
        if fmt == "depthguard":
            self._keys = frozenset(e.key for e in self.entries)
        else:
            self._keys = frozenset(
                (ds_report.normalize_path(name), str(item["hashed_secret"]))
                for name, items in self.ds_results.items()
                for item in items
            )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Baseline:
        """Read either format; :class:`ReportError` names the file when it is missing or invalid."""
        source = os.fspath(path)
        try:
            with open(source, encoding="utf-8") as fh:
                text = fh.read()
        except FileNotFoundError:
            raise ReportError(f"{source}: baseline file not found") from None
        except UnicodeDecodeError:
            raise ReportError(f"{source}: baseline is not UTF-8 text") from None
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise ReportError(f"{source}: cannot read baseline ({reason})") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ReportError(
                f"{source}: baseline is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
            ) from None
        return cls.parse(data, source)

    @classmethod
    def parse(cls, data: Any, source: str = "<baseline>") -> Baseline:
        """Recognise the format of an already-decoded document and validate it."""
        if not isinstance(data, dict):
            raise ReportError(f"{source}: baseline must be a JSON object")
        if data.get("format") == OWN_FORMAT:
            return cls._parse_own(data, source)
        if isinstance(data.get("version"), str) and "results" in data:
            return cls._parse_detect_secrets(data, source)
        if isinstance(data.get("tool"), dict) and "findings" in data:
            raise ReportError(
                f"{source}: this is a depthguard scan report, not a baseline; "
                "create one with `depthguard baseline create`"
            )
        raise ReportError(
            f"{source}: unknown baseline format (expected \"format\": \"{OWN_FORMAT}\" "
            "or a detect-secrets baseline)"
        )

    @classmethod
    def _parse_own(cls, data: dict[str, Any], source: str) -> Baseline:
        data = upgrade(data, source)
        items = data.get("findings")
        if not isinstance(items, list):
            raise ReportError(f"{source}: findings: expected a list")
        entries: list[BaselineEntry] = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise ReportError(f"{source}: findings[{i}]: expected an object")
            for key in ("fingerprint", "path"):
                if not isinstance(item.get(key), str) or not item[key]:
                    raise ReportError(f"{source}: findings[{i}].{key}: missing or not a string")
            if not item["fingerprint"].startswith("sha256:"):
                raise ReportError(f"{source}: findings[{i}].fingerprint: expected \"sha256:…\"")
            entries.append(
                BaselineEntry(
                    fingerprint=item["fingerprint"],
                    path=ds_report.normalize_path(item["path"]),
                    rule_id=str(item.get("rule_id", "")),
                    id=str(item.get("id", "")),
                )
            )
        return cls("depthguard", entries=entries, source=source)

    @classmethod
    def _parse_detect_secrets(cls, data: dict[str, Any], source: str) -> Baseline:
        results = data["results"]
        if not isinstance(results, dict):
            raise ReportError(f"{source}: results: expected an object of filename -> list")
        for name, items in results.items():
            if not isinstance(items, list):
                raise ReportError(f"{source}: results[{name!r}]: expected a list")
            for i, item in enumerate(items):
                if not isinstance(item, dict) or not isinstance(item.get("hashed_secret"), str):
                    raise ReportError(
                        f"{source}: results[{name!r}][{i}].hashed_secret: missing or not a string"
                    )
        header = {k: v for k, v in data.items() if k != "results"}
        return cls("detect-secrets", ds_results=results, ds_header=header, source=source)

    @classmethod
    def from_findings(cls, findings: Iterable[Finding]) -> Baseline:
        return cls("depthguard", entries=(BaselineEntry.from_finding(f) for f in findings))

    def __len__(self) -> int:
        return len(self._keys)

    def suppresses(self, finding: Finding) -> bool:
        key = _own_key(finding) if self.format == "depthguard" else _ds_key(finding)
        return key in self._keys

    def apply(self, findings: Iterable[Finding]) -> tuple[list[Finding], int]:
        """The findings the baseline does not know, and how many it suppressed (for ``stats``)."""
        kept: list[Finding] = []
        suppressed = 0
        for f in findings:
            if self.suppresses(f):
                suppressed += 1
            else:
                kept.append(f)
        return kept, suppressed


def _dump_own(entries: Iterable[BaselineEntry]) -> str:
    """One entry per line: a merge conflict touches only the entries both branches changed."""
    unique: dict[tuple[str, str], BaselineEntry] = {}
    for e in sorted(entries):
        unique.setdefault(e.key, e)  # same value at the same path: one entry (lowest rule id)
    lines = [json.dumps(e.to_dict(), sort_keys=True) for e in sorted(unique.values())]
    body = ",\n".join("    " + line for line in lines)
    findings = "[\n" + body + "\n  ]" if lines else "[]"
    return (
        "{\n"
        f'  "format": "{OWN_FORMAT}",\n'
        f'  "version": {CURRENT_VERSION},\n'
        '  "tool": "depthguard",\n'
        f'  "findings": {findings}\n'
        "}\n"
    )


def write_baseline(findings: Iterable[Finding]) -> str:
    """A new own-format baseline accepting every finding given (``depthguard baseline create``)."""
    return _dump_own(BaselineEntry.from_finding(f) for f in findings)


def update(old: Baseline, findings: Iterable[Finding]) -> str:
    """Rewrite ``old`` for the current scan, in ``old``'s own format (``depthguard baseline update``).

    Entries whose finding is still present are kept as they were (a detect-secrets entry keeps its
    ``type`` and audit labels; only its ``line_number`` follows the code), entries no longer found are
    dropped, and new findings are added. ``findings`` must be the *unfiltered* scan result (run the scan
    without applying the baseline), or every known finding would look gone.
    """
    current = list(findings)
    if old.format == "depthguard":
        kept = {e.key: e for e in old.entries}
        return _dump_own(kept.get(_own_key(f)) or BaselineEntry.from_finding(f) for f in current)
    return ds_report.dumps(_update_detect_secrets(old, current))


def _update_detect_secrets(old: Baseline, current: list[Finding]) -> dict[str, Any]:
    old_items: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for name, items in old.ds_results.items():
        for item in items:
            old_items.setdefault((ds_report.normalize_path(name), item["hashed_secret"]), []).append(item)
    first_line: dict[tuple[str, str], int] = {}
    for f in current:
        key = _ds_key(f)
        first_line[key] = min(first_line.get(key, f.line), f.line)
    fresh = [f for f in current if _ds_key(f) not in old_items]
    results = ds_report.results(fresh)
    for key, line in first_line.items():
        for item in old_items.get(key, []):
            kept = {**item, "filename": key[0]}
            if "line_number" in item:  # slim baselines have none; keep them slim
                kept["line_number"] = line
            results.setdefault(key[0], []).append(kept)
    ordered = {
        name: sorted(
            items, key=lambda e: (e.get("line_number", 0), str(e.get("type", "")), e["hashed_secret"])
        )
        for name, items in sorted(results.items())
    }
    out: dict[str, Any] = {k: v for k, v in old.ds_header.items() if k != "generated_at"}
    out["results"] = ordered
    if "generated_at" in old.ds_header:
        out["generated_at"] = ds_report.generated_at()
    return out
