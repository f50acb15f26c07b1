"""``sidecar/envexec.py``: real local store, real child processes, real signals."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from broker.backends.local import ENV_KEY, LocalStore
from depthguard.errors import BackendUnavailable, UsageError
from sidecar.config import SidecarConfig, load_config
from sidecar.envexec import run_with_secrets

pytestmark = pytest.mark.integration

KEY = bytes(range(32))
DB_VALUE = b"db-pa$$word with spaces \xc3\xa4"
API_VALUE = b"sk_live_not_a_real_key_0123456789"

# Prints, for each requested variable, whether it is set and the sha256 of its bytes: never the value.
REPORT_CHILD = """
import hashlib, json, os, sys
out = {}
for name in sys.argv[2:]:
    raw = os.environb.get(name.encode())
    out[name] = None if raw is None else hashlib.sha256(raw).hexdigest()
out["PATH_KEPT"] = "PATH" in os.environ
open(sys.argv[1], "w").write(json.dumps(out))
"""


@pytest.fixture(autouse=True)
def _no_store_key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_KEY, raising=False)


@pytest.fixture()
def store(tmp_path: Path) -> LocalStore:
    s = LocalStore(tmp_path / "store", KEY)
    s.put("db-password", DB_VALUE)
    s.put("api", API_VALUE)
    return s


def config_file(tmp_path: Path, store: LocalStore, extra_secrets: str = "") -> Path:
    key_file = tmp_path / "store.key"
    key_file.write_bytes(base64.b64encode(KEY))
    key_file.chmod(0o600)
    path = tmp_path / "sidecar.yaml"
    path.write_text(f"""\
backends:
  local: {{type: local, path: {store.path}, key_file: {key_file}}}
secrets:
  db-password: {{ref: "local:db-password"}}
  api: {{ref: "local:api", env: STRIPE_API_KEY}}
{extra_secrets}""")
    return path


@pytest.fixture()
def cfg(tmp_path: Path, store: LocalStore) -> SidecarConfig:
    return load_config(config_file(tmp_path, store))


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def test_child_gets_every_secret_in_its_environment(
    cfg: SidecarConfig, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.json"
    argv = [sys.executable, "-c", REPORT_CHILD, str(out), "DB_PASSWORD", "STRIPE_API_KEY", "API"]
    code = run_with_secrets(cfg, argv)
    assert code == 0
    report = json.loads(out.read_text())
    assert report == {"DB_PASSWORD": sha(DB_VALUE), "STRIPE_API_KEY": sha(API_VALUE), "API": None,
                      "PATH_KEPT": True}
    captured = capfd.readouterr()
    assert "sk_live" not in captured.out + captured.err and "db-pa" not in captured.out + captured.err
    assert "STRIPE_API_KEY" not in os.environ  # the parent's environment is untouched


def test_exit_code_is_propagated(cfg: SidecarConfig) -> None:
    assert run_with_secrets(cfg, [sys.executable, "-c", "raise SystemExit(7)"]) == 7


def test_killed_by_signal_is_128_plus_n(cfg: SidecarConfig) -> None:
    child = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    assert run_with_secrets(cfg, [sys.executable, "-c", child]) == 128 + signal.SIGKILL


def test_missing_secret_times_out_naming_it(tmp_path: Path, store: LocalStore) -> None:
    cfg = load_config(config_file(tmp_path, store, '  later: {ref: "local:later"}\n'))
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as err:
        run_with_secrets(cfg, [sys.executable, "-c", "raise SystemExit(0)"], timeout=0.5)
    assert time.monotonic() - started < 5
    msg = str(err.value)
    assert "1 of 3 secrets not available after 0.5 s" in msg and "later (SecretNotFound" in msg
    assert "db-password" not in msg and "sk_live" not in msg


def test_waits_for_a_secret_that_appears(tmp_path: Path, store: LocalStore) -> None:
    cfg = load_config(config_file(tmp_path, store, '  later: {ref: "local:later"}\n'))
    timer = threading.Timer(0.5, store.put, ("later", b"arrived"))
    timer.start()
    out = tmp_path / "report.json"
    try:
        code = run_with_secrets(cfg, [sys.executable, "-c", REPORT_CHILD, str(out), "LATER"], timeout=20)
    finally:
        timer.cancel()
    assert code == 0 and json.loads(out.read_text())["LATER"] == sha(b"arrived")


def test_usage_errors(cfg: SidecarConfig) -> None:
    with pytest.raises(UsageError, match="no command"):
        run_with_secrets(cfg, [])
    with pytest.raises(UsageError, match="command not found: /nonexistent/app"):
        run_with_secrets(cfg, ["/nonexistent/app"])


def test_signal_handlers_are_restored(cfg: SidecarConfig) -> None:
    before = signal.getsignal(signal.SIGTERM)
    run_with_secrets(cfg, [sys.executable, "-c", "pass"])
    assert signal.getsignal(signal.SIGTERM) is before


RUNNER = """
import sys
from pathlib import Path
from sidecar.config import load_config
from sidecar.envexec import run_with_secrets
sys.exit(run_with_secrets(load_config(Path(sys.argv[1])), sys.argv[2:]))
"""

# Traps SIGTERM and exits 42; announces readiness (handler installed) through a file.
TRAP_CHILD = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, lambda s, f: os._exit(42))
open(sys.argv[1], "w").write(str(os.getpid()))
time.sleep(60)
os._exit(1)
"""


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 42), (signal.SIGINT, 128 + signal.SIGINT)])
def test_signals_are_forwarded_to_the_child(
    tmp_path: Path, store: LocalStore, sig: signal.Signals, code: int
) -> None:
    path = config_file(tmp_path, store)
    ready = tmp_path / "ready"
    runner = subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(path), sys.executable, "-c", TRAP_CHILD, str(ready)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        start_new_session=True,  # a signal meant for the runner must not reach pytest's group
    )
    try:
        deadline = time.monotonic() + 20
        while not ready.exists() and runner.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ready.exists(), f"child never started (runner exit {runner.poll()})"
        child_pid = int(ready.read_text())
        runner.send_signal(sig)  # to the runner only: it must pass it on
        assert runner.wait(timeout=20) == code
        with pytest.raises(ProcessLookupError):
            os.kill(child_pid, 0)  # the child is gone too (reaped by the runner)
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait()
