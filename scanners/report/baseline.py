"""``--format baseline``: a detect-secrets ``.secrets.baseline`` that detect-secrets itself loads.

For teams that keep detect-secrets tooling (``detect-secrets audit``, dashboards reading baselines).
It never holds a secret: entries carry detect-secrets' ``hashed_secret`` (SHA-1 hex of the value, their
convention), never the value, so ``show_secrets`` is ignored.

Compatibility choices:

* ``plugins_used``/``filters_used`` are what the installed detect-secrets writes with its defaults, so
  its loader (and ``detect-secrets scan --baseline``) finds only plugins it ships: no depthguard plugin
  needs to be installed.
* ``type`` is detect-secrets' own secret type where a depthguard rule detects the same value its plugin
  does (detect-secrets compares filename, hash *and* type), else the rule's description.
* Entries are deduplicated per (filename, type, hash) like detect-secrets' own set, and sorted;
  ``generated_at`` honours ``SOURCE_DATE_EPOCH`` for reproducible output.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable
from typing import Any

from scanners.finding import Finding
from scanners.result import ScanResult

# Rule-id prefix -> detect-secrets plugin secret_type, only where both extract the same span.
DETECT_SECRETS_TYPES: tuple[tuple[str, str], ...] = (
    ("aws-access-key-id", "AWS Access Key"),
    ("aws-secret-access-key", "AWS Access Key"),
    ("github-pat-classic", "GitHub Token"),
    ("github-oauth-token", "GitHub Token"),
    ("github-app-token", "GitHub Token"),
    ("github-refresh-token", "GitHub Token"),
    ("gitlab-", "GitLab Token"),
    ("slack-", "Slack Token"),
    ("stripe-", "Stripe Access Key"),
)


def sha1_hex(secret: str) -> str:
    """detect-secrets' ``hashed_secret``: SHA-1 of the UTF-8 value (their format, not a security hash)."""
    return hashlib.sha1(secret.encode("utf-8", "surrogateescape")).hexdigest()


def secret_type(finding: Finding) -> str:
    for prefix, ds_type in DETECT_SECRETS_TYPES:
        if finding.rule_id.startswith(prefix):
            return ds_type
    return finding.description


def normalize_path(path: str) -> str:
    """Forward slashes, no leading ``./``: how both tools' relative paths compare equal."""
    path = path.replace("\\", "/")
    while path.startswith("./"):
        path = path[2:]
    return path


def entry(finding: Finding) -> dict[str, Any]:
    return {
        "type": secret_type(finding),
        "filename": normalize_path(finding.path),
        "hashed_secret": sha1_hex(finding.secret),
        "is_verified": False,
        "line_number": finding.line,
    }


def results(findings: Iterable[Finding]) -> dict[str, list[dict[str, Any]]]:
    """``results`` keyed by filename, each list sorted by line then type then hash; first line wins."""
    seen: dict[tuple[str, str, str], dict[str, Any]] = {}
    for f in findings:
        e = entry(f)
        key = (e["filename"], e["type"], e["hashed_secret"])
        if key not in seen or e["line_number"] < seen[key]["line_number"]:
            seen[key] = e
    out: dict[str, list[dict[str, Any]]] = {}
    for e in seen.values():
        out.setdefault(e["filename"], []).append(e)
    return {
        name: sorted(entries, key=lambda e: (e["line_number"], e["type"], e["hashed_secret"]))
        for name, entries in sorted(out.items())
    }


def detect_secrets_version() -> str:
    from detect_secrets.__version__ import VERSION

    return str(VERSION)


def detect_secrets_settings() -> dict[str, Any]:
    """``plugins_used`` and ``filters_used`` exactly as ``detect-secrets scan`` writes by default.

    Uses detect-secrets' ``default_settings`` context manager, which swaps its global settings and
    restores them on exit: do not call concurrently with detect-secrets scanning in other threads.
    """
    from detect_secrets.settings import default_settings

    with default_settings() as settings:
        raw: dict[str, Any] = settings.json()
    return {"plugins_used": raw["plugins_used"], "filters_used": raw["filters_used"]}


def generated_at() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    when = int(epoch) if epoch.isdigit() else time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def baseline_object(findings: Iterable[Finding]) -> dict[str, Any]:
    return {
        "version": detect_secrets_version(),
        **detect_secrets_settings(),
        "results": results(findings),
        "generated_at": generated_at(),
    }


def dumps(obj: dict[str, Any]) -> str:
    """detect-secrets' own layout (indent 2, trailing newline) so diffs against its files are small."""
    return json.dumps(obj, indent=2) + "\n"


class DetectSecretsBaselineReporter:
    def render(self, result: ScanResult, show_secrets: bool) -> str:
        return dumps(baseline_object(result.findings))
