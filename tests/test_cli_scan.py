"""``depthguard scan dir`` as a user runs it: a real process, real files, exit codes, formats."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.secretgen import github_token

TOKEN = github_token()


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "depthguard", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "settings.py").write_text(f"DEBUG = True\nGITHUB_TOKEN = '{TOKEN}'\n")
    (tmp_path / "README.md").write_text("nothing to see\n")
    return tmp_path


def test_findings_exit_1_and_json_contract(tree: Path) -> None:
    res = run("scan", "dir", str(tree), "--format", "json", "--no-progress")
    assert res.returncode == 1, res.stderr
    report = json.loads(res.stdout)
    assert report["version"] == 1 and report["tool"]["name"] == "depthguard"
    (f,) = report["findings"]
    assert f["rule_id"] == "github-pat-classic" and f["path"] == "src/settings.py"
    assert (f["line"], f["column"]) == (2, 17)
    assert f["fingerprint"].startswith("sha256:") and f["commit"] is None and f["layer"] is None
    assert {"files", "bytes", "seconds", "rules"} <= set(report["stats"])
    assert report["stats"]["files"] == 2


def test_clean_tree_exits_0_and_exit_zero(tree: Path) -> None:
    (tree / "src" / "settings.py").write_text("DEBUG = True\n")
    assert run("scan", "dir", str(tree), "--no-progress").returncode == 0
    (tree / "src" / "settings.py").write_text(f"T = '{TOKEN}'\n")
    assert run("scan", "dir", str(tree), "--no-progress", "--exit-zero").returncode == 0


@pytest.mark.parametrize("fmt", ["text", "json", "jsonl", "sarif", "baseline"])
def test_no_format_leaks_the_secret_unless_asked(tree: Path, fmt: str) -> None:
    res = run("scan", "dir", str(tree), "--format", fmt, "--no-progress")
    assert res.returncode == 1, res.stderr
    assert TOKEN not in res.stdout + res.stderr
    shown = run("scan", "dir", str(tree), "--format", fmt, "--no-progress", "--show-secrets")
    if fmt != "baseline":  # baselines store hashes only, by design
        assert TOKEN in shown.stdout


def test_output_file_written_whole(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.sarif"
    res = run("scan", "dir", str(tree / "src"), "--format", "sarif", "--output", str(out), "--no-progress")
    assert res.returncode == 1 and res.stdout == ""
    assert json.loads(out.read_text())["version"] == "2.1.0"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".report.sarif.")]


def test_baseline_round_trip_suppresses(tree: Path, tmp_path: Path) -> None:
    base = tmp_path / "dg.baseline"
    assert run("scan", "dir", str(tree), "-f", "baseline", "-o", str(base), "--no-progress").returncode == 1
    res = run("scan", "dir", str(tree), "--baseline", str(base), "--no-progress", "-f", "json")
    assert res.returncode == 0, res.stdout
    assert json.loads(res.stdout)["stats"]["suppressed"] == 1


def test_config_disables_rule_and_excludes(tree: Path) -> None:
    (tree / ".depthguard.toml").write_text('[rules]\ndisable = ["github-pat-classic"]\n')
    res = run("scan", "dir", str(tree), "--no-progress", "-f", "json", "--exit-zero")
    assert "github-pat-classic" not in {f["rule_id"] for f in json.loads(res.stdout)["findings"]}
    (tree / ".depthguard.toml").write_text('[scan]\nexclude = ["src/"]\n')
    assert run("scan", "dir", str(tree), "--no-progress").returncode == 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["scan", "dir", "/no/such/path"], "/no/such/path"),
        (["scan", "dir", ".", "--format", "xml"], "--format"),
        (["scan", "dir", ".", "--baseline", "/no/such/baseline"], "/no/such/baseline"),
        (["scan", "dir", ".", "--config", "/no/such/config.toml"], "/no/such/config.toml"),
        (["scan", "dir", ".", "--max-file-size", "lots"], "--max-file-size"),
        (["scan", "dir", ".", "--jobs", "-3"], "jobs"),
        (["scan", "nope"], "nope"),
    ],
)
def test_usage_errors_one_line_exit_2(tree: Path, args: list[str], needle: str) -> None:
    res = run(*args, cwd=tree)
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], res.stderr
    assert "Traceback" not in res.stderr


def test_invalid_config_and_baseline_files(tree: Path) -> None:
    bad_cfg = tree / "bad.toml"
    bad_cfg.write_text("[scan]\nexclude = 3\n")
    res = run("scan", "dir", str(tree), "--config", str(bad_cfg))
    assert res.returncode == 2 and "scan.exclude" in res.stderr and str(bad_cfg) in res.stderr
    bad_base = tree / "bad.baseline"
    bad_base.write_text("{not json")
    res = run("scan", "dir", str(tree), "--baseline", str(bad_base))
    assert res.returncode == 2 and str(bad_base) in res.stderr


def test_rules_commands() -> None:
    listed = run("rules", "list")
    assert listed.returncode == 0 and "github-pat-classic" in listed.stdout
    tested = run("rules", "test")
    assert tested.returncode == 0, tested.stdout[-2000:]
    assert "0 failures" in tested.stdout


def test_baseline_commands(tree: Path) -> None:
    base = tree / "known.json"
    created = run("baseline", "create", str(tree / "src"), "-o", str(base))
    assert created.returncode == 0, created.stderr
    assert TOKEN not in base.read_text()
    audit = run("baseline", "audit", str(base))
    assert audit.returncode == 0 and "github-pat-classic" in audit.stdout and "1 entry" in audit.stdout
    assert run("scan", "dir", str(tree / "src"), "--baseline", str(base), "--no-progress").returncode == 0
    new = github_token("gho")
    (tree / "src" / "more.py").write_text(f"X = '{new}'\n")
    assert run("scan", "dir", str(tree / "src"), "--baseline", str(base), "--no-progress").returncode == 1
    assert run("baseline", "update", str(base), str(tree / "src")).returncode == 0
    assert run("scan", "dir", str(tree / "src"), "--baseline", str(base), "--no-progress").returncode == 0
    ds = tree / ".secrets.baseline"
    assert run("baseline", "create", str(tree / "src"), "--detect-secrets", "-o", str(ds)).returncode == 0
    assert json.loads(ds.read_text())["results"]
