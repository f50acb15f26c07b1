"""``depthguard audit verify``: in-process via click's CliRunner and main()'s error mapping, plus a real
process once the group is registered in main.py."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from broker.audit import AuditLog
from broker.audit_sinks import FileSink
from depthguard.cli import audit_cmd
from depthguard.errors import SourceError

# The module, not the ``main`` function that depthguard/cli/__init__.py re-exports under the same name.
cli_main = importlib.import_module("depthguard.cli.main")


def cli() -> click.Group:
    """A root group like main.py's, with only our group registered (main.py is the integrator's)."""

    @click.group()
    def root() -> None:
        pass

    root.add_command(audit_cmd.app)
    return root


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli(), ["audit", "verify", *args])


@pytest.fixture()
def good_log(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    ticks = iter(range(1_700_000_000, 1_700_001_000))  # one record per second
    with AuditLog([FileSink(path)], heartbeat=30, now=lambda: float(next(ticks))) as log:
        for i in range(4):
            log.record("secret.read", "allow", secret=f"s{i}")
    return path


def test_ok_exits_0_with_a_summary(good_log: Path) -> None:
    res = invoke(str(good_log))
    assert res.exit_code == 0, res.output
    assert res.stdout == f"{good_log}: 6 records (seq 1-6), chain intact, heartbeat 30 s\n"


def test_problems_exit_1_one_per_line_then_summary(good_log: Path) -> None:
    lines = good_log.read_bytes().splitlines(keepends=True)
    edited = lines[2].replace(b'"s1"', b'"s9"')
    good_log.write_bytes(b"".join([*lines[:2], edited, *lines[3:]]))
    res = invoke(str(good_log), "--heartbeat", "400ms")
    assert res.exit_code == 1
    out = res.stdout.splitlines()
    broken = ("line 3 (seq 3): hash chain broken: record altered (its hash does not match the prev "
              "of line 4, seq 4)")
    gaps = [f"silent for 1.0 s between seq {n} and {n + 1} (heartbeat 0.4 s)" for n in range(1, 6)]
    assert out[:-1] == [gaps[0], broken, *gaps[1:]]  # file order; the gap before line 3 comes first
    summary = f"{good_log}: {len(out) - 1} problems in 6 records (seq 1-6), heartbeat 0.4 s"
    assert out[-1] == summary


@pytest.mark.parametrize(("text", "seconds"), [("500ms", 0.5), ("30s", 30), ("5m", 300), ("1h", 3600),
                                               ("2d", 172800), ("45", 45), ("1.5m", 90)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert audit_cmd.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "5 minutes", "-1s", "0s", "1w"])
def test_bad_duration_is_a_usage_error(good_log: Path, text: str) -> None:
    with pytest.raises(ValueError):
        audit_cmd.parse_duration(text)
    res = invoke(str(good_log), "--heartbeat", text)
    assert res.exit_code == 2 and "--heartbeat" in res.output


def test_heartbeat_option_overrides_the_file(good_log: Path) -> None:
    assert invoke(str(good_log), "--heartbeat", "5m").stdout.endswith("heartbeat 300 s\n")


def test_missing_file_raises_source_error(tmp_path: Path) -> None:
    res = invoke(str(tmp_path / "nope.jsonl"))
    assert isinstance(res.exception, SourceError) and "nope.jsonl" in str(res.exception)


def run_main(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    """Run depthguard.cli.main.main() in-process with our group registered, returning its exit code."""
    root = click.Group("depthguard", commands=dict(cli_main.app.commands))
    root.add_command(audit_cmd.app)
    monkeypatch.setattr(cli_main, "app", root)
    monkeypatch.setattr(sys, "argv", ["depthguard", *args])
    with pytest.raises(SystemExit) as info:
        cli_main.main()
    code = info.value.code
    return code if isinstance(code, int) else 0


def test_exit_codes_through_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                 good_log: Path, tmp_path: Path) -> None:
    assert run_main(monkeypatch, "audit", "verify", str(good_log)) == 0
    capsys.readouterr()
    missing = tmp_path / "missing.jsonl"
    assert run_main(monkeypatch, "audit", "verify", str(missing)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot read the audit file" in err and str(missing) in err
    assert run_main(monkeypatch, "audit", "verify", str(tmp_path)) == 2  # a directory
    assert run_main(monkeypatch, "audit", "verify", str(good_log), "--heartbeat", "x") == 2
    lines = good_log.read_bytes().splitlines(keepends=True)
    good_log.write_bytes(b"".join(lines[:2] + lines[3:]))
    capsys.readouterr()
    assert run_main(monkeypatch, "audit", "verify", str(good_log)) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "line 3 (seq 4): missing record(s): seq 3 absent (line 2 has seq 2)"


# -- real processes ------------------------------------------------------------------------------------


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "depthguard", *args], capture_output=True, text=True,
                          timeout=60)


@pytest.mark.integration
def test_real_process_exit_codes(good_log: Path, tmp_path: Path) -> None:
    assert run("audit", "verify", str(good_log)).returncode == 0
    res = run("audit", "verify", str(tmp_path / "missing.jsonl"))
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    data = good_log.read_bytes()
    good_log.write_bytes(data.replace(b'"s1"', b'"s7"'))
    res = run("audit", "verify", str(good_log))
    assert res.returncode == 1 and res.stdout.startswith("line 3 (seq 3): hash chain broken")
