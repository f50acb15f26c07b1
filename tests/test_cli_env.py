"""``depthguard scan env`` as a user runs it: a real child process, this process, env-like files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.scanners.sources.test_env import wait_for_exec
from tests.secretgen import github_token

pytestmark = pytest.mark.integration


def depthguard(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "depthguard", *args], capture_output=True, text=True, timeout=120, env=env
    )


def test_pid_finds_a_secret_in_a_child_process_environment() -> None:
    token = github_token()
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        env={"PATH": os.environ.get("PATH", ""), "APP_TOKEN": token, "HOME": "/nonexistent"},
    )
    wait_for_exec(child.pid)
    try:
        proc = depthguard("scan", "env", "--pid", str(child.pid), "-f", "json", "--no-progress")
    finally:
        child.kill()
        child.wait()
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    (f,) = report["findings"]
    assert f["path"] == "env:APP_TOKEN" and f["pid"] == child.pid and f["source"] == "env"
    assert token not in proc.stdout + proc.stderr


def test_own_environment_is_the_default_and_text_output_names_the_variable() -> None:
    token = github_token()
    env = {**os.environ, "CI_DEPLOY_TOKEN": token}
    proc = depthguard("scan", "env", "--no-progress", env=env)
    assert proc.returncode == 1
    assert "env:CI_DEPLOY_TOKEN" in proc.stdout and token not in proc.stdout


def test_files_kubernetes_manifest_line_numbers(tmp_path: Path) -> None:
    token = github_token()
    manifest = tmp_path / "deploy.yaml"
    manifest.write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  template:\n    spec:\n"
        "      containers:\n      - name: app\n        env:\n        - name: GH_TOKEN\n"
        f"          value: {token}\n        - name: DB_PASSWORD\n"
        "          valueFrom: {secretKeyRef: {name: db, key: password}}\n"
    )
    proc = depthguard("scan", "env", "--file", str(manifest), "-f", "json", "--no-progress")
    assert proc.returncode == 1, proc.stderr
    (f,) = json.loads(proc.stdout)["findings"]
    assert (f["path"], f["line"], f["file"]) == ("env:GH_TOKEN", 11, str(manifest))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pid", "1", "--all-processes"], "mutually exclusive"),
        (["--pid", "4194304"], "--pid 4194304: no such process"),
        (["--file", "missing.env"], "missing.env: no such file or directory"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    proc = depthguard("scan", "env", *args)
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr
