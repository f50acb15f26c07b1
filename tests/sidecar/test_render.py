"""``sidecar/render.py``: atomic, mode-first file rendering and the reload actions, on real files and
real processes."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.backends.interface import SecretValue
from depthguard.errors import ConfigError
from sidecar.config import RenderConfig
from sidecar.render import Renderer

VALUE = b"s3cr3t-\xff\xfe-\x00-not-in-logs"


def spec(path: Path, **kw: object) -> RenderConfig:
    return RenderConfig.model_validate({"path": str(path), **kw})


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def wait_for(pred: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(pred) and pred():
            return
        time.sleep(0.02)
    raise AssertionError("timed out waiting")


@pytest.fixture()
def out_dir(tmp_path: Path) -> Path:
    d = tmp_path / "secrets"
    d.mkdir(mode=0o750)
    return d


def test_writes_value_with_mode_and_leaves_no_temp_files(out_dir: Path) -> None:
    target = out_dir / "db.pw"
    r = Renderer("db", spec(target, mode="0440"))
    assert r.render(SecretValue(VALUE, version="1")) is True
    assert target.read_bytes() == VALUE  # default template: the exact bytes
    assert mode(target) == 0o440
    assert os.listdir(out_dir) == ["db.pw"]


def test_unchanged_content_is_not_rewritten(out_dir: Path) -> None:
    target = out_dir / "db.pw"
    r = Renderer("db", spec(target))
    assert r.render(SecretValue(VALUE, version="1"))
    before = target.stat()
    assert r.render(SecretValue(VALUE, version="2")) is False  # same bytes: nothing written
    after = target.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    # A fresh renderer (a restarted sidecar) compares with what is on disk, too.
    assert Renderer("db", spec(target)).render(SecretValue(VALUE)) is False


def test_changed_content_is_replaced_atomically(out_dir: Path) -> None:
    target = out_dir / "db.pw"
    r = Renderer("db", spec(target))
    r.render(SecretValue(b"old"))
    old_ino = target.stat().st_ino
    with open(target, "rb") as reader:  # an app holding the old file open keeps reading the old bytes
        assert r.render(SecretValue(b"new")) is True
        assert reader.read() == b"old"
    assert target.read_bytes() == b"new" and target.stat().st_ino != old_ino  # rename, not rewrite in place
    assert mode(target) == 0o400 and os.listdir(out_dir) == ["db.pw"]


def test_mode_change_alone_rewrites(out_dir: Path) -> None:
    target = out_dir / "db.pw"
    Renderer("db", spec(target, mode="0400")).render(SecretValue(b"x"))
    assert Renderer("db", spec(target, mode="0440")).render(SecretValue(b"x")) is True
    assert mode(target) == 0o440


def test_template_substitution(out_dir: Path) -> None:
    target = out_dir / "app.env"
    r = Renderer("db-password", spec(target, template="# ${name} v${version}\nPASSWORD=${value}\ncost=$$5\n"))
    r.render(SecretValue(b"p\xc3\xa4ss\xff", version="7"))  # valid UTF-8 plus an undecodable byte
    assert target.read_bytes() == b"# db-password v7\nPASSWORD=p\xc3\xa4ss\xff\ncost=$5\n"
    r.render(SecretValue(b"x"))  # no version: empty
    assert target.read_bytes() == b"# db-password v\nPASSWORD=x\ncost=$5\n"


def test_missing_directory_is_refused(tmp_path: Path) -> None:
    r = Renderer("db", spec(tmp_path / "absent" / "db"))
    with pytest.raises(ConfigError, match="does not exist") as err:
        r.render(SecretValue(b"x"))
    assert err.value.key == "secrets.db.render.path" and str(tmp_path / "absent") in str(err.value)


def test_world_writable_directory_is_refused_unless_sticky(tmp_path: Path) -> None:
    d = tmp_path / "open"
    d.mkdir()
    d.chmod(0o777)
    with pytest.raises(ConfigError, match="world-writable") as err:
        Renderer("db", spec(d / "db")).render(SecretValue(b"x"))
    assert str(d) in str(err.value)
    assert not (d / "db").exists()
    d.chmod(0o1777)
    assert Renderer("db", spec(d / "db")).render(SecretValue(b"x")) is True


def test_a_directory_at_the_target_path_is_refused(out_dir: Path) -> None:
    (out_dir / "db").mkdir()
    with pytest.raises(ConfigError, match="is a directory"):
        Renderer("db", spec(out_dir / "db")).render(SecretValue(b"x"))


def test_value_is_never_logged(out_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    r = Renderer("db", spec(out_dir / "db", reload={"pidfile": str(out_dir / "missing.pid")}))
    assert r.render(SecretValue(VALUE))
    assert caplog.records  # the reload warning was logged...
    assert b"s3cr3t" not in caplog.text.encode("utf-8", "surrogateescape")  # ...without the value


# ----------------------------------------------------------------------------------------- reload

HUP_CHILD = """
import os, signal, sys, time
out, pidfile = sys.argv[1], sys.argv[2]
def on_hup(signum, frame):
    with open(out, "a") as fh:
        fh.write("HUP\\n")
signal.signal(signal.SIGHUP, on_hup)
signal.signal(signal.SIGUSR1, lambda s, f: open(out, "a").write("USR1\\n"))
with open(pidfile + ".tmp", "w") as fh:
    fh.write(f"{os.getpid()}\\n")
os.replace(pidfile + ".tmp", pidfile)  # written only once the handlers are in place: readiness
time.sleep(60)
"""


@pytest.fixture()
def hup_child(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    log_file, pidfile = tmp_path / "signals.log", tmp_path / "app.pid"
    proc = subprocess.Popen([sys.executable, "-c", HUP_CHILD, str(log_file), str(pidfile)])
    try:
        wait_for(pidfile.exists)
        yield log_file, pidfile
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.integration
def test_reload_signals_the_pid_in_the_pidfile(out_dir: Path, hup_child: tuple[Path, Path]) -> None:
    log_file, pidfile = hup_child
    r = Renderer("tls", spec(out_dir / "tls.pem", reload={"pidfile": str(pidfile)}))
    assert r.render(SecretValue(b"cert-1")) is True and r.last_warning is None
    wait_for(lambda: log_file.exists() and log_file.read_text() == "HUP\n")
    assert r.render(SecretValue(b"cert-1")) is False  # unchanged: no reload either
    time.sleep(0.2)
    assert log_file.read_text() == "HUP\n"
    r2 = Renderer("tls", spec(out_dir / "tls.pem", reload={"pidfile": str(pidfile), "signal": "USR1"}))
    assert r2.render(SecretValue(b"cert-2")) is True
    wait_for(lambda: log_file.read_text() == "HUP\nUSR1\n")


@pytest.mark.integration
def test_reload_runs_a_command_without_a_shell(out_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "reloaded; touch pwned"
    cmd = [sys.executable, "-c", "import sys; open(sys.argv[1], 'a').write('ran\\n')", str(marker)]
    r = Renderer("tls", spec(out_dir / "tls.pem", reload={"command": cmd}))
    assert r.render(SecretValue(b"v1")) is True and r.last_warning is None
    assert marker.read_text() == "ran\n" and not (tmp_path / "pwned").exists()


@pytest.mark.integration
@pytest.mark.parametrize(
    ("reload", "warning"),
    [
        ({"pidfile": "PIDDIR/absent.pid"}, "does not exist"),
        ({"pidfile": "PIDDIR/zero.pid"}, "does not hold a process id"),
        ({"pidfile": "PIDDIR/junk.pid"}, "does not hold a process id"),
        ({"pidfile": "PIDDIR/dead.pid"}, "no process"),
        ({"command": [sys.executable, "-c", "raise SystemExit(3)"]}, "exited with 3"),
        ({"command": ["/nonexistent/reload-me"]}, "not found"),
    ],
)
def test_reload_problems_are_warnings(
    out_dir: Path, tmp_path: Path, reload: dict[str, object], warning: str
) -> None:
    (tmp_path / "zero.pid").write_text("0\n")
    (tmp_path / "junk.pid").write_text("not a pid\n")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "dead.pid").write_text(f"{dead.pid}\n")
    if "pidfile" in reload:
        reload = {"pidfile": str(reload["pidfile"]).replace("PIDDIR", str(tmp_path))}
    r = Renderer("db", spec(out_dir / "db", reload=reload))
    assert r.render(SecretValue(b"x")) is True  # the file is written regardless
    assert r.last_warning is not None and warning in r.last_warning
    assert (out_dir / "db").read_bytes() == b"x"


@pytest.mark.integration
def test_reload_command_timeout(out_dir: Path) -> None:
    cmd = [sys.executable, "-c", "import time; time.sleep(30)"]
    r = Renderer("db", spec(out_dir / "db", reload={"command": cmd}), reload_timeout=0.3)
    started = time.monotonic()
    assert r.render(SecretValue(b"x")) is True
    assert time.monotonic() - started < 10
    assert r.last_warning is not None and "did not finish within 0.3 s" in r.last_warning


def test_signal_is_not_sent_to_a_process_group(out_dir: Path, tmp_path: Path) -> None:
    """pid 0 / negative pids in a pidfile would signal a whole process group (or every process).
    SIGWINCH is ignored by default, so even a regression here cannot take the test run down."""
    for text in ("0", "-1", f"-{os.getpgrp()}"):
        (tmp_path / "bad.pid").write_text(text)
        reload = {"pidfile": str(tmp_path / "bad.pid"), "signal": "SIGWINCH"}
        r = Renderer("db", spec(out_dir / f"db{text}", reload=reload))
        assert r.render(SecretValue(b"x")) is True
        assert r.last_warning is not None and "does not hold a process id" in r.last_warning
