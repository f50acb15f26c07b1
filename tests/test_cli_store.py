"""``depthguard store``: in-process via click's CliRunner, plus real processes once it is registered."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from depthguard.cli import store_cmd
from depthguard.errors import ConfigError, UsageError

VALUE = b"\x00\x01binary\xff\xfe s3cr3t-value\r\n\x80"
KEY_B64 = base64.b64encode(bytes(range(32))).decode()


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


def cli() -> click.Group:
    """A root group like main.py's, with only our command registered (main.py is the lead's)."""

    @click.group()
    def root() -> None:
        pass

    root.add_command(store_cmd.app)
    return root


def invoke(runner: CliRunner, args: list[str], stdin: bytes | None = None,
           env: dict[str, str] | None = None) -> click.testing.Result:
    full_env = {"DEPTHGUARD_STORE_KEY": "", **(env or {})}  # ignore the developer's own key
    return runner.invoke(cli(), ["store", *args], input=stdin, env=full_env)


def test_put_get_list_rm_round_trip_binary(runner: CliRunner, tmp_path: Path) -> None:
    d = str(tmp_path / "s")
    res = invoke(runner, ["put", "api-key", "--store", d], stdin=VALUE)
    assert res.exit_code == 0, res.output
    assert "development only" in res.stderr and "version 1" in res.stderr
    assert stat.S_IMODE((tmp_path / "s" / ".key").stat().st_mode) == 0o600

    res = invoke(runner, ["get", "api-key", "--store", d])
    assert res.exit_code == 0 and res.stdout_bytes == VALUE  # exact bytes, no newline added

    assert invoke(runner, ["put", "api-key", "--store", d], stdin=b"v2").exit_code == 0
    assert invoke(runner, ["put", "other", "--store", d], stdin=b"x").exit_code == 0
    res = invoke(runner, ["list", "--store", d])
    assert res.exit_code == 0 and res.stdout == "api-key\t2\nother\t1\n"
    assert invoke(runner, ["get", "api-key", "--store", d, "--version", "1"]).stdout_bytes == VALUE

    res = invoke(runner, ["rm", "api-key", "--store", d])
    assert res.exit_code == 0
    assert invoke(runner, ["list", "--store", d]).stdout == "other\t1\n"


def test_warning_only_on_first_use(runner: CliRunner, tmp_path: Path) -> None:
    d = str(tmp_path / "s")
    invoke(runner, ["put", "a", "--store", d], stdin=b"1")
    res = invoke(runner, ["put", "a", "--store", d], stdin=b"2")
    assert res.exit_code == 0 and "development only" not in res.stderr


def test_no_trailing_newline_added_and_kept_when_present(runner: CliRunner, tmp_path: Path) -> None:
    d = str(tmp_path / "s")
    invoke(runner, ["put", "a", "--store", d], stdin=b"line\n")
    invoke(runner, ["put", "b", "--store", d], stdin=b"noline")
    assert invoke(runner, ["get", "a", "--store", d]).stdout_bytes == b"line\n"
    assert invoke(runner, ["get", "b", "--store", d]).stdout_bytes == b"noline"


def test_put_has_no_value_argument(runner: CliRunner, tmp_path: Path) -> None:
    d = str(tmp_path / "s")
    res = invoke(runner, ["put", "a", "s3cr3t-on-argv", "--store", d], stdin=b"from-stdin")
    assert res.exit_code == 2 and "unexpected extra argument" in res.output.lower()
    assert not (tmp_path / "s" / "a.dgs").exists()


def test_put_refuses_empty_stdin(runner: CliRunner, tmp_path: Path) -> None:
    res = invoke(runner, ["put", "a", "--store", str(tmp_path / "s")], stdin=b"")
    assert isinstance(res.exception, UsageError) and "empty" in str(res.exception)


def test_put_prompts_twice_hidden_on_a_tty(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, dict[str, object]]] = []

    def fake_prompt(text: str, **kw: object) -> str:
        calls.append((text, kw))
        return "typed-value"

    monkeypatch.setattr(store_cmd, "_stdin_is_tty", lambda: True)
    monkeypatch.setattr(click, "prompt", fake_prompt)
    d = str(tmp_path / "s")
    res = invoke(runner, ["put", "a", "--store", d], stdin=b"ignored: stdin is a terminal")
    assert res.exit_code == 0, res.output
    assert calls == [("Value", {"hide_input": True, "confirmation_prompt": True})]
    monkeypatch.undo()
    assert invoke(runner, ["get", "a", "--store", d]).stdout_bytes == b"typed-value"


def test_wrong_key_fails_closed_without_value(runner: CliRunner, tmp_path: Path) -> None:
    d = str(tmp_path / "s")
    invoke(runner, ["put", "a", "--store", d], stdin=VALUE)
    res = invoke(runner, ["get", "a", "--store", d], env={"DEPTHGUARD_STORE_KEY": KEY_B64})
    assert isinstance(res.exception, UsageError)
    assert "failed authentication" in str(res.exception)
    assert b"s3cr3t" not in res.stdout_bytes and "s3cr3t" not in str(res.exception)
    # rm with the wrong key deletes nothing
    res = invoke(runner, ["rm", "a", "--store", d], env={"DEPTHGUARD_STORE_KEY": KEY_B64})
    assert isinstance(res.exception, UsageError)
    assert (tmp_path / "s" / "a.dgs").exists()


def test_key_file_option_and_permission_check(runner: CliRunner, tmp_path: Path) -> None:
    kf = tmp_path / "k"
    kf.write_text(KEY_B64 + "\n")
    os.chmod(kf, 0o644)
    d = str(tmp_path / "s")
    res = invoke(runner, ["put", "a", "--store", d, "--key-file", str(kf)], stdin=b"v")
    assert isinstance(res.exception, ConfigError) and "0600 or stricter" in str(res.exception)
    os.chmod(kf, 0o600)
    res = invoke(runner, ["put", "a", "--store", d, "--key-file", str(kf)], stdin=b"v")
    assert res.exit_code == 0 and "development only" not in res.stderr
    assert not (tmp_path / "s" / ".key").exists()
    res = invoke(runner, ["get", "a", "--store", d], env={"DEPTHGUARD_STORE_KEY": KEY_B64})
    assert res.stdout_bytes == b"v"


@pytest.mark.parametrize("name", ["a/b", "../escape", ".."])
def test_bad_names_refused(runner: CliRunner, tmp_path: Path, name: str) -> None:
    res = invoke(runner, ["put", name, "--store", str(tmp_path / "s")], stdin=b"v")
    assert isinstance(res.exception, UsageError) and "invalid secret name" in str(res.exception)
    assert not (tmp_path / "escape.dgs").exists()


def test_get_unknown_and_no_key(runner: CliRunner, tmp_path: Path) -> None:
    d = str(tmp_path / "s")
    res = invoke(runner, ["get", "a", "--store", d])
    assert isinstance(res.exception, ConfigError) and "no store key" in str(res.exception)
    invoke(runner, ["put", "b", "--store", d], stdin=b"v")
    res = invoke(runner, ["get", "a", "--store", d])
    assert isinstance(res.exception, UsageError) and "no secret named 'a'" in str(res.exception)


# -- real processes (needs the lead's ``app.add_command(store_cmd.app)`` in main.py) ------------------


def run(
    *args: str, stdin: bytes = b"", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    e = {k: v for k, v in os.environ.items() if k != "DEPTHGUARD_STORE_KEY"}
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "depthguard", *args], input=stdin,
                          capture_output=True, timeout=60, env=e)


@pytest.fixture(scope="module")
def registered() -> None:
    if run("store", "--help").returncode != 0:
        pytest.skip("'depthguard store' is not registered yet: add app.add_command(store_cmd.app) to main.py")


@pytest.mark.integration
@pytest.mark.usefixtures("registered")
def test_real_process_round_trip_and_errors(tmp_path: Path) -> None:
    d = str(tmp_path / "s")
    res = run("store", "put", "db", "--store", d, stdin=VALUE)
    assert res.returncode == 0, res.stderr
    assert b"development only" in res.stderr
    res = run("store", "get", "db", "--store", d)
    assert res.returncode == 0 and res.stdout == VALUE
    assert run("store", "list", "--store", d).stdout == b"db\t1\n"
    res = run("store", "get", "db", "--store", d, env={"DEPTHGUARD_STORE_KEY": KEY_B64})
    assert res.returncode == 2 and res.stdout == b""
    assert res.stderr.count(b"\n") == 1 and b"failed authentication" in res.stderr
    assert b"s3cr3t" not in res.stderr
    res = run("store", "put", "../x", "--store", d, stdin=b"v")
    assert res.returncode == 2 and b"invalid secret name" in res.stderr
    assert run("store", "rm", "db", "--store", d).returncode == 0
