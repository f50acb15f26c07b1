"""Baselines: detect-secrets' real files suppress our findings, the own format round-trips sorted and
timestamp-free, update keeps/drops/adds, and bad files fail with the file's name (never a secret)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from depthguard.errors import ReportError
from scanners.baseline import CURRENT_VERSION, OWN_FORMAT, Baseline, update, upgrade, write_baseline
from scanners.finding import Finding
from scanners.report.baseline import sha1_hex

AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
PASSWORD = "Sup3rS3cretPassw0rd!x"
GH_TOKEN = "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"


def make(rule_id: str, secret: str, path: str, line: int = 1, **kw: Any) -> Finding:
    return Finding(
        rule_id=rule_id, description=rule_id, severity="high", confidence="high", path=path, line=line,
        column=1, end_column=len(secret) + 1, secret=secret, entropy=4.0, **kw,
    )


def aws(path: str = "config.py", line: int = 1, **kw: Any) -> Finding:
    return make("aws-access-key-id", AWS_KEY, path, line, **kw)


def password(path: str = "config.py", line: int = 2) -> Finding:
    return make("generic-password", PASSWORD, path, line)


# --- detect-secrets' own baselines ----------------------------------------------------------------

@pytest.fixture
def ds_baseline(tmp_path: Path) -> Path:
    """A baseline written by detect-secrets itself, for a tree holding an AWS key and a password."""
    tree = tmp_path / "repo"
    (tree / "app").mkdir(parents=True)
    (tree / "app" / "config.py").write_text(f'aws_access_key_id = "{AWS_KEY}"\npassword = "{PASSWORD}"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "detect_secrets", "scan", "--all-files", "."],
        cwd=tree, capture_output=True, text=True, timeout=120, check=True,
    )
    out = tmp_path / ".secrets.baseline"
    out.write_text(proc.stdout)
    results = json.loads(proc.stdout)["results"]
    assert {(e["type"], e["hashed_secret"]) for e in results["app/config.py"]} == {
        ("AWS Access Key", sha1_hex(AWS_KEY)),
        ("Secret Keyword", sha1_hex(PASSWORD)),
    }
    return out


def test_detect_secrets_baseline_suppresses_matching_findings(ds_baseline: Path) -> None:
    baseline = Baseline.load(ds_baseline)
    assert baseline.format == "detect-secrets" and len(baseline) == 2
    assert baseline.suppresses(aws("app/config.py"))
    assert baseline.suppresses(password("app/config.py"))
    assert baseline.suppresses(aws("./app/config.py", line=40))  # line moves and ./ are ignored
    assert baseline.suppresses(aws("app\\config.py"))  # Windows separators
    assert not baseline.suppresses(aws("app/other.py"))  # same value, new file: report it
    assert not baseline.suppresses(make("github-pat-classic", GH_TOKEN, "app/config.py"))
    kept, suppressed = baseline.apply([aws("app/config.py"), aws("elsewhere.py")])
    assert suppressed == 1 and [f.path for f in kept] == ["elsewhere.py"]


def test_audited_detect_secrets_entries_suppress(ds_baseline: Path) -> None:
    doc = json.loads(ds_baseline.read_text())
    for item in doc["results"]["app/config.py"]:
        item["is_secret"] = item["type"] != "Secret Keyword"  # password audited as false positive
    ds_baseline.write_text(json.dumps(doc, indent=2))
    baseline = Baseline.load(ds_baseline)
    assert baseline.suppresses(password("app/config.py"))
    assert baseline.suppresses(aws("app/config.py"))


def test_update_detect_secrets_keeps_labels_and_format(ds_baseline: Path) -> None:
    doc = json.loads(ds_baseline.read_text())
    for item in doc["results"]["app/config.py"]:
        item["is_secret"] = False
    ds_baseline.write_text(json.dumps(doc, indent=2))
    old = Baseline.load(ds_baseline)
    new_text = update(old, [aws("app/config.py", line=7), make("github-pat-classic", GH_TOKEN, "ci.sh", 3)])
    new = json.loads(new_text)
    assert new["plugins_used"] == doc["plugins_used"] and new["version"] == doc["version"]
    assert list(new["results"]) == ["app/config.py", "ci.sh"]
    (kept,) = new["results"]["app/config.py"]  # the password is gone, so its entry is dropped
    assert kept["type"] == "AWS Access Key" and kept["is_secret"] is False and kept["line_number"] == 7
    assert new["results"]["ci.sh"][0]["hashed_secret"] == sha1_hex(GH_TOKEN)
    assert GH_TOKEN not in new_text and AWS_KEY not in new_text


# --- own format -----------------------------------------------------------------------------------

def test_own_format_round_trip(tmp_path: Path) -> None:
    findings = [aws(), password(), aws("other.py", commit={"sha": "1" * 40})]
    path = tmp_path / "depthguard.baseline.json"
    path.write_text(write_baseline(findings))
    baseline = Baseline.load(path)
    assert baseline.format == "depthguard" and len(baseline) == 3
    assert all(baseline.suppresses(f) for f in findings)
    assert baseline.suppresses(aws(line=99))  # line moved
    assert baseline.suppresses(aws("other.py", commit={"sha": "2" * 40}))  # another commit
    assert baseline.suppresses(make("aws-key-renamed", AWS_KEY, "config.py"))  # rule renamed
    assert not baseline.suppresses(aws("new_file.py"))  # same value leaked to a new file
    assert not baseline.suppresses(make("github-pat-classic", GH_TOKEN, "config.py"))


def test_own_format_sorted_stable_and_timestamp_free() -> None:
    findings = [aws(), password(), make("github-pat-classic", GH_TOKEN, "z.sh", 9), aws(line=30)]
    text = write_baseline(findings)
    assert text == write_baseline(list(reversed(findings)))
    doc = json.loads(text)
    assert doc["format"] == OWN_FORMAT and doc["version"] == CURRENT_VERSION and doc["tool"] == "depthguard"
    entries = doc["findings"]
    assert len(entries) == 3  # the moved duplicate is one entry
    assert [e["fingerprint"] for e in entries] == sorted(e["fingerprint"] for e in entries)
    for e in entries:
        assert set(e) == {"id", "rule_id", "path", "fingerprint"}
    for word in ("generated_at", "line", "time", "date"):
        assert f'"{word}' not in text
    for secret in (AWS_KEY, PASSWORD, GH_TOKEN):
        assert secret not in text
    # one entry per line: concurrent branches conflict only on the entries they both touch
    assert sum(1 for line in text.splitlines() if '"fingerprint"' in line) == 3


def test_own_format_update_keeps_adds_drops(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    path.write_text(write_baseline([aws(), password()]))
    old = Baseline.load(path)
    renamed = make("aws-key-renamed", AWS_KEY, "config.py", 50)
    new = json.loads(update(old, [renamed, make("github-pat-classic", GH_TOKEN, "ci.sh")]))
    by_path_rule = {(e["path"], e["rule_id"]) for e in new["findings"]}
    # the AWS entry is still present and kept as recorded; the password is gone; the token is new
    assert by_path_rule == {("config.py", "aws-access-key-id"), ("ci.sh", "github-pat-classic")}
    assert update(old, [aws(), password()]) == path.read_text()


def test_upgrade_current_version_is_identity() -> None:
    doc = {"format": OWN_FORMAT, "version": 1, "tool": "depthguard", "findings": []}
    assert upgrade(dict(doc), "b.json") == doc


def test_from_findings_matches_written_file() -> None:
    assert Baseline.from_findings([aws()]).suppresses(aws(line=3))


# --- errors ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"format": OWN_FORMAT, "version": 0, "findings": []}), "unknown depthguard baseline"),
        (json.dumps({"format": OWN_FORMAT, "version": "1", "findings": []}), "unknown depthguard baseline"),
        ("[1, 2]", "must be a JSON object"),
        ('{"hello": "world"}', "unknown baseline format"),
        (json.dumps({"format": OWN_FORMAT, "version": 2, "findings": []}), "newer than this depthguard"),
        (json.dumps({"format": OWN_FORMAT, "version": 1, "findings": {}}), "findings: expected a list"),
        (json.dumps({"format": OWN_FORMAT, "version": 1, "findings": [{"path": "a.py"}]}),
         "findings[0].fingerprint"),
        (json.dumps({"version": "1.5.0", "results": {"a.py": [{"type": "x"}]}}), "hashed_secret"),
        (json.dumps({"version": "1.5.0", "results": []}), "results: expected an object"),
        (json.dumps({"version": 1, "tool": {"name": "depthguard"}, "findings": [], "stats": {}}),
         "scan report, not a baseline"),
    ],
)
def test_bad_baselines_name_the_file(tmp_path: Path, content: str, reason: str) -> None:
    path = tmp_path / "broken.baseline"
    path.write_text(content)
    with pytest.raises(ReportError) as err:
        Baseline.load(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and reason in message
    assert "\n" not in message


def test_missing_and_unreadable_baselines(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match=r"nope\.json: baseline file not found"):
        Baseline.load(tmp_path / "nope.json")
    with pytest.raises(ReportError, match="cannot read baseline"):
        Baseline.load(tmp_path)  # a directory
    binary = tmp_path / "bin.baseline"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ReportError, match=r"bin\.baseline: baseline is not UTF-8"):
        Baseline.load(binary)


def test_error_messages_never_echo_a_secret(tmp_path: Path) -> None:
    path = tmp_path / "leaky.baseline"
    path.write_text(json.dumps({"format": OWN_FORMAT, "version": 1,
                                "findings": [{"path": "a.py", "fingerprint": AWS_KEY}]}))
    with pytest.raises(ReportError) as err:
        Baseline.load(path)
    assert AWS_KEY not in str(err.value) and "leaky.baseline" in str(err.value)
    path.write_text('{"password": "' + PASSWORD + '" oops}')
    with pytest.raises(ReportError) as err:
        Baseline.load(path)
    assert PASSWORD not in str(err.value)
