"""Commit hooks: ``depthguard hook install|uninstall`` and the pre-commit framework manifest.

Every test uses a real git repository in a temp dir, with git's global and system config shut out
(a developer's ``core.hooksPath`` or ``init.templateDir`` must not leak in) and no inherited
``GIT_*`` variables (pytest may itself be running from a hook).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from depthguard.cli.hook_cmd import BACKUP_NAME, MARKER, render_hook
from tests.secretgen import github_token

ROOT = Path(__file__).resolve().parent.parent
TOKEN = github_token()

# Runs the real console entry point (so exit codes and one-line errors are main.py's), registering
# the hook group first in case main.py does not yet.
_CLI = (
    "import importlib\n"
    "m = importlib.import_module('depthguard.cli.main')\n"
    "from depthguard.cli import hook_cmd\n"
    "if 'hook' not in m.app.commands:\n"
    "    m.app.add_command(hook_cmd.app)\n"
    "m.main()\n"
)


def _scan_git_staged_available() -> bool:
    try:
        res = subprocess.run(
            [sys.executable, "-m", "depthguard", "scan", "git", "--help"],
            capture_output=True, text=True, timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0 and "--staged" in res.stdout


needs_scan_git = pytest.mark.skipif(
    not _scan_git_staged_available(),
    reason="'depthguard scan git --staged' is not available yet (the hook runs it)",
)


@pytest.fixture()
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """An environment for git and depthguard: no user/system git config, no GIT_* from outside."""
    empty = tmp_path / "empty.gitconfig"
    empty.write_text("")
    e = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    e.update(
        GIT_CONFIG_GLOBAL=str(empty),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CEILING_DIRECTORIES=str(tmp_path),  # never discover a repository above the test's
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    )
    yield e


def git(repo: Path, env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, env=env, check=check, timeout=120
    )


def dg(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _CLI, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )


@pytest.fixture()
def repo(tmp_path: Path, env: dict[str, str]) -> Path:
    r = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", "-b", "main", str(r)], check=True, env=env, timeout=60)
    git(r, env, "config", "user.name", "Depthguard Test")
    git(r, env, "config", "user.email", "test@example.invalid")
    git(r, env, "config", "commit.gpgsign", "false")
    return r


def hook_path(repo: Path) -> Path:
    return repo / ".git" / "hooks" / "pre-commit"


def assert_one_line_error(res: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("depthguard: "), res.stderr
    assert "Traceback" not in res.stderr
    for needle in needles:
        assert needle in lines[0]


FOREIGN = "#!/bin/sh\n# someone else's hook\nexit 0\n"


def write_foreign(repo: Path) -> Path:
    hook = hook_path(repo)
    hook.parent.mkdir(parents=True, exist_ok=True)
    hook.write_text(FOREIGN)
    hook.chmod(0o750)
    return hook


# --- install -------------------------------------------------------------------------------------


def test_install_writes_executable_posix_hook_with_marker(repo: Path, env: dict[str, str]) -> None:
    res = dg(env, "hook", "install", "--repo", str(repo))
    assert res.returncode == 0, res.stderr
    hook = hook_path(repo)
    assert str(hook) in res.stdout
    text = hook.read_text()
    assert text.startswith("#!/bin/sh\n") and MARKER in text
    assert "scan git --staged --no-progress" in text and "--show-secrets" not in text
    assert "python" in text and "-m depthguard" in text  # fallback when not on PATH
    assert stat.S_IMODE(hook.stat().st_mode) == 0o755
    assert subprocess.run(["sh", "-n", str(hook)], capture_output=True).returncode == 0
    # Atomic write: no temp file left behind next to the hook.
    assert sorted(p.name for p in hook.parent.iterdir() if p.name.startswith(".")) == []


def test_install_from_subdirectory_and_reinstall_updates_own_hook(repo: Path, env: dict[str, str]) -> None:
    sub = repo / "src" / "pkg"
    sub.mkdir(parents=True)
    assert dg(env, "hook", "install", cwd=sub).returncode == 0
    assert MARKER in hook_path(repo).read_text()
    res = dg(env, "hook", "install", "--repo", str(repo))  # ours: replaced without --force
    assert res.returncode == 0, res.stderr
    assert not (hook_path(repo).parent / BACKUP_NAME).exists()


def test_refuses_to_overwrite_foreign_hook(repo: Path, env: dict[str, str]) -> None:
    hook = write_foreign(repo)
    res = dg(env, "hook", "install", "--repo", str(repo))
    assert_one_line_error(res, "not written by depthguard", "--force")
    assert hook.read_text() == FOREIGN


def test_refuses_pre_commit_framework_hook_with_pointer(repo: Path, env: dict[str, str]) -> None:
    hook = hook_path(repo)
    hook.parent.mkdir(parents=True, exist_ok=True)
    hook.write_text("#!/usr/bin/env bash\n# File generated by pre-commit: https://pre-commit.com\n")
    res = dg(env, "hook", "install", "--repo", str(repo))
    assert_one_line_error(res, "pre-commit framework", ".pre-commit-config.yaml")


def test_force_backs_up_foreign_hook_and_uninstall_restores_it(repo: Path, env: dict[str, str]) -> None:
    hook = write_foreign(repo)
    res = dg(env, "hook", "install", "--repo", str(repo), "--force")
    assert res.returncode == 0, res.stderr
    backup = hook.parent / BACKUP_NAME
    assert backup.read_text() == FOREIGN and stat.S_IMODE(backup.stat().st_mode) == 0o750
    assert MARKER in hook.read_text()
    assert BACKUP_NAME in res.stdout

    res = dg(env, "hook", "uninstall", "--repo", str(repo))
    assert res.returncode == 0, res.stderr
    assert hook.read_text() == FOREIGN and not backup.exists()


def test_force_never_clobbers_an_earlier_backup(repo: Path, env: dict[str, str]) -> None:
    hook = write_foreign(repo)
    backup = hook.parent / BACKUP_NAME
    backup.write_text("#!/bin/sh\n# an older backup\n")
    res = dg(env, "hook", "install", "--repo", str(repo), "--force")
    assert_one_line_error(res, BACKUP_NAME)
    assert hook.read_text() == FOREIGN and "older backup" in backup.read_text()


def test_core_hooks_path_is_honoured(repo: Path, env: dict[str, str]) -> None:
    git(repo, env, "config", "core.hooksPath", "ci/hooks")  # relative: to the worktree root
    assert dg(env, "hook", "install", "--repo", str(repo)).returncode == 0
    assert MARKER in (repo / "ci" / "hooks" / "pre-commit").read_text()
    assert not hook_path(repo).exists()


def test_linked_worktree_uses_the_shared_hooks_dir(repo: Path, env: dict[str, str], tmp_path: Path) -> None:
    (repo / "README").write_text("hello\n")
    git(repo, env, "add", "README")
    git(repo, env, "commit", "-q", "-m", "init")
    wt = tmp_path / "wt"
    git(repo, env, "worktree", "add", "-q", str(wt))
    assert dg(env, "hook", "install", "--repo", str(wt)).returncode == 0
    assert MARKER in hook_path(repo).read_text()  # git runs $GIT_COMMON_DIR/hooks for worktrees


def test_baseline_option_is_embedded_relative_to_root(repo: Path, env: dict[str, str]) -> None:
    (repo / "dg-baseline.json").write_text("{}\n")
    sub = repo / "sub"
    sub.mkdir()
    res = dg(env, "hook", "install", "--baseline", "../dg-baseline.json", cwd=sub)
    assert res.returncode == 0, res.stderr
    assert "scan git --staged --no-progress --baseline dg-baseline.json\n" in hook_path(repo).read_text()
    missing = dg(env, "hook", "install", "--repo", str(repo), "--baseline", str(repo / "nope.json"))
    assert_one_line_error(missing, "--baseline", "nope.json")


# --- errors --------------------------------------------------------------------------------------


def test_not_a_repository_is_exit_2_one_line(tmp_path: Path, env: dict[str, str]) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    assert_one_line_error(dg(env, "hook", "install", "--repo", str(plain)), "not a git repository")
    assert_one_line_error(dg(env, "hook", "uninstall", "--repo", str(plain)), "not a git repository")
    assert_one_line_error(dg(env, "hook", "install", "--repo", str(tmp_path / "missing")), "missing")


def test_unwritable_hooks_dir_is_exit_2_one_line(repo: Path, env: dict[str, str]) -> None:
    # A regular file where the hooks directory should be: fails for root too (unlike chmod).
    (repo / "blocker").write_text("")
    git(repo, env, "config", "core.hooksPath", "blocker")
    assert_one_line_error(dg(env, "hook", "install", "--repo", str(repo)), "blocker")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores directory modes")
def test_read_only_hooks_dir_is_exit_2_one_line(repo: Path, env: dict[str, str]) -> None:
    hooks = hook_path(repo).parent
    hooks.chmod(0o555)
    try:
        assert_one_line_error(dg(env, "hook", "install", "--repo", str(repo)), "cannot", str(hooks))
    finally:
        hooks.chmod(0o755)


# --- uninstall -----------------------------------------------------------------------------------


def test_uninstall_removes_only_depthguards_hook(repo: Path, env: dict[str, str]) -> None:
    assert dg(env, "hook", "install", "--repo", str(repo)).returncode == 0
    assert dg(env, "hook", "uninstall", "--repo", str(repo)).returncode == 0
    assert not hook_path(repo).exists()
    # Nothing installed: a no-op, not an error.
    res = dg(env, "hook", "uninstall", "--repo", str(repo))
    assert res.returncode == 0 and "nothing to do" in res.stdout
    hook = write_foreign(repo)
    assert_one_line_error(dg(env, "hook", "uninstall", "--repo", str(repo)), "not written by depthguard")
    assert hook.read_text() == FOREIGN


# --- the hook script itself ----------------------------------------------------------------------


def test_hook_fails_closed_when_depthguard_cannot_be_found(tmp_path: Path) -> None:
    """With no depthguard on PATH and no interpreter that imports it, the commit is blocked."""
    script = tmp_path / "pre-commit"
    script.write_text(render_hook(python=str(tmp_path / "no-such-python")))
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    sh = shutil.which("sh") or "/bin/sh"
    res = subprocess.run([sh, str(script)], capture_output=True, text=True, env={"PATH": str(empty_bin)},
                         timeout=60)
    assert res.returncode == 1
    assert "not found" in res.stderr and "--no-verify" in res.stderr


def test_hook_quotes_paths_for_the_shell(tmp_path: Path) -> None:
    text = render_hook(python="/opt/my python/bin/python3", baseline="base line's $HOME.json")
    assert "'/opt/my python/bin/python3'" in text
    assert "--baseline 'base line'\"'\"'s $HOME.json'" in text
    assert subprocess.run(["sh", "-n", "-c", text], capture_output=True).returncode == 0


# --- end to end ----------------------------------------------------------------------------------


def commit_count(repo: Path, env: dict[str, str]) -> int:
    res = git(repo, env, "rev-list", "--count", "HEAD", check=False)
    return int(res.stdout) if res.returncode == 0 else 0


@needs_scan_git
def test_installed_hook_blocks_a_leaking_commit_and_lets_clean_ones_through(
    repo: Path, env: dict[str, str]
) -> None:
    assert dg(env, "hook", "install", "--repo", str(repo)).returncode == 0

    # First commit (no HEAD yet) is clean and goes through.
    (repo / "README.md").write_text("# demo\n")
    git(repo, env, "add", "README.md")
    res = git(repo, env, "commit", "-m", "clean start", check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert commit_count(repo, env) == 1

    (repo / "src").mkdir()
    (repo / "src" / "settings.py").write_text(f"DEBUG = False\nGITHUB_TOKEN = '{TOKEN}'\n")
    git(repo, env, "add", "src/settings.py")
    res = git(repo, env, "commit", "-m", "add settings", check=False)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert commit_count(repo, env) == 1  # no commit was created
    assert "src/settings.py" in out and "github-pat-classic" in out
    assert TOKEN not in out and TOKEN[4:-4] not in out  # never the value, not even most of it
    assert "depthguard:allow" in out and "--no-verify" in out

    # Take the secret out again: the next commit goes through.
    (repo / "src" / "settings.py").write_text("DEBUG = False\nGITHUB_TOKEN = os.environ['GITHUB_TOKEN']\n")
    git(repo, env, "add", "src/settings.py")
    res = git(repo, env, "commit", "-m", "settings from env", check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert commit_count(repo, env) == 2


@needs_scan_git
def test_inline_allow_comment_lets_the_commit_through(repo: Path, env: dict[str, str]) -> None:
    assert dg(env, "hook", "install", "--repo", str(repo)).returncode == 0
    (repo / "fixture.py").write_text(f"EXAMPLE = '{TOKEN}'  # depthguard:allow\n")
    git(repo, env, "add", "fixture.py")
    res = git(repo, env, "commit", "-m", "test fixture", check=False)
    assert res.returncode == 0, res.stdout + res.stderr


# --- the pre-commit framework manifest -----------------------------------------------------------

# Keys pre-commit's manifest schema accepts (pre_commit/clientlib.py, MANIFEST_HOOK_DICT).
_MANIFEST_KEYS = {
    "id", "name", "entry", "language", "alias", "files", "exclude", "types", "types_or",
    "exclude_types", "additional_dependencies", "args", "always_run", "fail_fast", "pass_filenames",
    "description", "language_version", "log_file", "minimum_pre_commit_version", "require_serial",
    "stages", "verbose",
}


def test_pre_commit_hooks_manifest() -> None:
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    by_id = {h["id"]: h for h in hooks}
    for h in hooks:
        assert {"id", "name", "entry", "language"} <= set(h) <= _MANIFEST_KEYS, h
        assert isinstance(h.get("minimum_pre_commit_version", "0"), str)  # a number would be rejected
        assert "--show-secrets" not in h["entry"]
    main = by_id["depthguard"]
    assert main["entry"] == "depthguard scan git --staged --no-progress"
    assert main["language"] == "python" and main["pass_filenames"] is False and main["always_run"] is True
    assert main["stages"] == ["pre-commit"]
    files = by_id["depthguard-dir"]
    assert files["entry"] == "depthguard scan dir --no-progress" and files["pass_filenames"] is True
