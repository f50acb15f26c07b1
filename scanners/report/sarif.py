"""``--format sarif``: SARIF 2.1.0 for code-scanning UIs (GitHub, Azure DevOps, IDE viewers).

Must validate against the official schema. Messages carry the redacted secret only (SARIF files are
uploaded to third-party services); ``partialFingerprints`` carry the finding's stable id so a viewer
tracks one alert across line moves.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from scanners.finding import Finding, redact
from scanners.report.interface import INFORMATION_URI, TOOL_NAME, tool_version
from scanners.result import ScanResult

SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
FINGERPRINT_KEY = "depthguard/v1"

LEVELS = {"critical": "error", "high": "error", "medium": "warning", "low": "note"}
# GitHub code scanning maps security-severity to its own labels: >=9 critical, >=7 high, >=4 medium.
SECURITY_SEVERITY = {"critical": "9.5", "high": "8.0", "medium": "5.5", "low": "2.0"}


def _level(severity: str) -> str:
    return LEVELS.get(severity, "warning")


def _rule(finding: Finding) -> dict[str, Any]:
    return {
        "id": finding.rule_id,
        "name": finding.rule_id,
        "shortDescription": {"text": finding.description},
        "defaultConfiguration": {"level": _level(finding.severity)},
        "properties": {
            "tags": ["security", "secret", finding.severity],
            "security-severity": SECURITY_SEVERITY.get(finding.severity, "5.5"),
            "severity": finding.severity,
        },
    }


def _location(finding: Finding) -> dict[str, Any]:
    if finding.source == "env" or finding.path.startswith("env:"):
        # An environment variable has no file; a logical location keeps the result valid and honest.
        name = finding.path.removeprefix("env:")
        return {"logicalLocations": [{"name": name, "kind": "variable"}]}
    region: dict[str, Any] = {"startLine": max(finding.line, 1), "startColumn": max(finding.column, 1)}
    # end_column is on the secret's last line; multi-line secrets (PEM keys) need endLine too.
    extra_lines = finding.secret.count("\n")
    if extra_lines:
        region["endLine"] = region["startLine"] + extra_lines
    region["endColumn"] = max(finding.end_column, 1)
    uri = quote(finding.path.replace("\\", "/").lstrip("/"), safe="/")
    return {
        "physicalLocation": {
            "artifactLocation": {"uri": uri, "uriBaseId": "%SRCROOT%"},
            "region": region,
        }
    }


def _result(finding: Finding, rule_index: int, show_secrets: bool) -> dict[str, Any]:
    shown = finding.secret if show_secrets else redact(finding.secret)
    properties: dict[str, Any] = {
        "fingerprint": finding.fingerprint,
        "confidence": finding.confidence,
        "severity": finding.severity,
        "entropy": round(finding.entropy, 2),
        "source": finding.source,
    }
    for key in ("commit", "layer", "verified"):
        value = getattr(finding, key)
        if value is not None:
            properties[key] = value
    return {
        "ruleId": finding.rule_id,
        "ruleIndex": rule_index,
        "level": _level(finding.severity),
        "message": {"text": f"{finding.description}: {shown}"},
        "locations": [_location(finding)],
        "partialFingerprints": {FINGERPRINT_KEY: finding.id},
        "properties": properties,
    }


def sarif_log(result: ScanResult, show_secrets: bool) -> dict[str, Any]:
    """The SARIF log object: one run, rules sorted by id, results in the scan's order."""
    first: dict[str, Finding] = {}
    for f in result.findings:
        first.setdefault(f.rule_id, f)
    rule_ids = sorted(first)
    index = {rid: i for i, rid in enumerate(rule_ids)}
    notifications = [{"level": "warning", "message": {"text": w}} for w in result.warnings]
    invocation: dict[str, Any] = {"executionSuccessful": True}
    if notifications:
        invocation["toolExecutionNotifications"] = notifications
    run: dict[str, Any] = {
        "tool": {
            "driver": {
                "name": TOOL_NAME,
                "version": tool_version(),
                "semanticVersion": tool_version(),
                "informationUri": INFORMATION_URI,
                "rules": [_rule(first[rid]) for rid in rule_ids],
            }
        },
        "invocations": [invocation],
        "columnKind": "unicodeCodePoints",
        "results": [_result(f, index[f.rule_id], show_secrets) for f in result.findings],
        "properties": {"stats": result.stats.to_dict()},
    }
    return {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [run]}


class SarifReporter:
    def render(self, result: ScanResult, show_secrets: bool) -> str:
        return json.dumps(sarif_log(result, show_secrets), indent=2) + "\n"
