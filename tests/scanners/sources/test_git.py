"""Git scanning against real repositories built in temp dirs: history, staged, ranges, robustness."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.secretgen import github_token

pytestmark = pytest.mark.integration


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def commit(repo: Path, files: dict[str, str | bytes], message: str) -> str:
    for rel, content in files.items():
        p = repo / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
        git(repo, "add", "--", rel)
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "repo"
    r.mkdir()
    git(r, "init", "-q", "-b", "main")
    git(r, "config", "user.name", "Alice Example")
    git(r, "config", "user.email", "alice@example.org")
    git(r, "config", "commit.gpgsign", "false")
    return r


def scan(repo: Path, *args: str) -> tuple[int, dict[str, object], str]:
    proc = subprocess.run(
        [sys.executable, "-m", "depthguard", "scan", "git", str(repo), "-f", "json", "--no-progress", *args],
        capture_output=True, text=True, timeout=120,
    )
    report = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else {}
    return proc.returncode, report, proc.stderr


def findings(report: dict[str, object]) -> list[dict[str, object]]:
    return report["findings"]  # type: ignore[return-value]


def test_deleted_secret_is_attributed_to_its_introducing_commit(repo: Path) -> None:
    token = github_token()
    commit(repo, {"app.py": "print('hi')\n"}, "init")
    sha = commit(repo, {"config/settings.py": f"DEBUG = 1\nTOKEN = '{token}'\n"}, "add settings")
    git(repo, "rm", "-q", "config/settings.py")
    git(repo, "commit", "-q", "-m", "remove settings")
    rc, report, _ = scan(repo)
    assert rc == 1
    (f,) = findings(report)
    assert f["path"] == "config/settings.py" and f["line"] == 2
    assert f["present_at_head"] is False
    assert f["commit"] == {
        "sha": sha, "author": "Alice Example", "email": "alice@example.org",
        "date": f["commit"]["date"], "message": "add settings",  # type: ignore[index]
    }
    assert token not in json.dumps(report)


def test_secret_in_many_versions_reported_once_at_first_commit(repo: Path) -> None:
    token = github_token()
    first = commit(repo, {"s.py": f"T = '{token}'\n"}, "v1")
    commit(repo, {"s.py": f"# edited\nT = '{token}'\n"}, "v2")
    commit(repo, {"s.py": f"# edited again\nT = '{token}'\n"}, "v3")
    _, report, _ = scan(repo)
    (f,) = findings(report)
    assert f["commit"]["sha"] == first and f["present_at_head"] is True  # type: ignore[index]


def test_secret_added_in_a_merge_resolution_is_attributed_to_the_merge(repo: Path) -> None:
    """Content written while resolving a merge exists in no parent: the merge commit introduced it
    (a diff-based ``git log`` pass, which shows no merge diffs, would miss or misplace it)."""
    token = github_token()
    commit(repo, {"conf.py": "MODE = 'a'\n"}, "base")
    git(repo, "checkout", "-q", "-b", "side")
    commit(repo, {"conf.py": "MODE = 'side'\n"}, "side")
    git(repo, "checkout", "-q", "main")
    commit(repo, {"conf.py": "MODE = 'main'\n"}, "main")
    subprocess.run(["git", "-C", str(repo), "merge", "-q", "side"], capture_output=True)  # conflicts
    (repo / "conf.py").write_text(f"MODE = 'both'\nTOKEN = '{token}'\n")
    git(repo, "add", "conf.py")
    git(repo, "commit", "-q", "--no-edit")
    merge = git(repo, "rev-parse", "HEAD")
    (f,) = findings(scan(repo)[1])
    assert f["commit"]["sha"] == merge and f["line"] == 2  # type: ignore[index]


def test_renamed_file_keeps_its_original_commit_and_path(repo: Path) -> None:
    token = github_token()
    first = commit(repo, {"old/keys.py": f"T = '{token}'\n"}, "add keys")
    git(repo, "mv", "old/keys.py", "new_keys.py")
    git(repo, "commit", "-q", "-m", "move keys")
    (f,) = findings(scan(repo)[1])
    assert (f["path"], f["commit"]["sha"], f["present_at_head"]) == ("old/keys.py", first, True)  # type: ignore[index]


def test_staged_only_reports_added_lines(repo: Path) -> None:
    old, new = github_token(), github_token()
    commit(repo, {"a.py": f"OLD = '{old}'\n"}, "old secret, accepted long ago")
    (repo / "a.py").write_text(f"OLD = '{old}'\nNEW = '{new}'\n")
    git(repo, "add", "a.py")
    (repo / "unstaged.py").write_text(f"X = '{github_token()}'\n")
    rc, report, _ = scan(repo, "--staged")
    assert rc == 1
    assert [(f["path"], f["line"]) for f in findings(report)] == [("a.py", 2)]


def test_staged_in_repo_without_commits(repo: Path) -> None:
    (repo / "first.py").write_text(f"T = '{github_token()}'\n")
    git(repo, "add", "first.py")
    rc, report, _ = scan(repo, "--staged")
    assert rc == 1 and findings(report)[0]["path"] == "first.py"
    rc, report, err = scan(repo)
    assert rc == 0 and "no commits" in err


def test_range_and_since_see_only_their_commits(repo: Path) -> None:
    commit(repo, {"old.py": f"T = '{github_token()}'\n"}, "old")
    base = commit(repo, {"x.py": "x = 1\n"}, "base")
    commit(repo, {"new.py": f"T = '{github_token('gho')}'\n"}, "new")
    for args in (["--range", f"{base}..HEAD"], ["--since", base]):
        _, report, _ = scan(repo, *args)
        assert [f["path"] for f in findings(report)] == ["new.py"], args
    _, everything, _ = scan(repo)
    assert sorted(f["path"] for f in findings(everything)) == ["new.py", "old.py"]


def test_branch_narrows_and_all_refs_by_default(repo: Path) -> None:
    commit(repo, {"a.py": "a = 1\n"}, "init")
    git(repo, "checkout", "-q", "-b", "feature")
    commit(repo, {"f.py": f"T = '{github_token()}'\n"}, "feature work")
    git(repo, "checkout", "-q", "main")
    assert [f["path"] for f in findings(scan(repo)[1])] == ["f.py"]
    assert findings(scan(repo, "--branch", "main")[1]) == []


def test_baseline_applies_to_history(repo: Path, tmp_path: Path) -> None:
    commit(repo, {"s.py": f"T = '{github_token()}'\n"}, "secret")
    base = tmp_path / "base.json"
    subprocess.run([sys.executable, "-m", "depthguard", "baseline", "create", str(repo), "-o", str(base)],
                   check=True, capture_output=True)
    rc, report, _ = scan(repo, "--baseline", str(base))
    assert rc == 0 and report["stats"]["suppressed"] == 1  # type: ignore[index]


def test_binary_huge_renamed_and_non_utf8_paths(repo: Path) -> None:
    token = github_token()
    blobs: dict[str, str | bytes] = {"img.bin": b"\x00\x01" + token.encode(), "big.txt": "x" * 4096 + token}
    commit(repo, blobs, "blobs")
    commit(repo, {"orig.py": f"T = '{github_token('gho')}'\n"}, "orig")
    git(repo, "mv", "orig.py", "renamed.py")
    git(repo, "commit", "-q", "-m", "rename")
    weird = os.fsdecode(b"caf\xe9.py")
    (repo / weird).write_text(f"T = '{github_token('ghu')}'\n")
    git(repo, "add", "--", weird)
    git(repo, "commit", "-q", "-m", "latin-1 name")
    _, report, _ = scan(repo, "--max-file-size", "1000")
    paths = sorted(str(f["path"]) for f in findings(report))
    assert paths == ["caf\\xe9.py", "orig.py"]
    assert report["stats"]["skipped"] == {"binary": 1, "too-large": 1}  # type: ignore[index]


def test_binary_formats_are_skipped_by_name_without_being_read(repo: Path) -> None:
    """PNG, gzip and compiled catalogs always start with a NUL-bearing header, so their blobs are
    never read out of the pack; a text file merely named like one is not scanned (the trade-off)."""
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + github_token().encode()
    commit(repo, {"logo.png": png, "Data.GZ": f"T = '{github_token()}'\n",
                  "app.py": f"T = '{github_token('gho')}'\n"}, "assets")
    _, report, _ = scan(repo)
    assert [f["path"] for f in findings(report)] == ["app.py"]
    assert report["stats"]["skipped"] == {"binary": 2}  # type: ignore[index]
    assert report["stats"]["files"] == 1  # type: ignore[index]


def test_not_a_repository_and_bad_revisions(tmp_path: Path, repo: Path) -> None:
    rc, _, err = scan(tmp_path)
    assert rc == 2 and err.strip().endswith("not a git repository") and len(err.strip().splitlines()) == 1
    commit(repo, {"a.py": "a = 1\n"}, "init")
    rc, _, err = scan(repo, "--since", "nope")
    assert rc == 2 and "--since" in err
    rc, _, err = scan(repo, "--range", "HEAD")
    assert rc == 2 and "--range" in err


def test_shallow_clone_says_what_was_not_reachable(repo: Path, tmp_path: Path) -> None:
    for i in range(3):
        commit(repo, {f"f{i}.py": f"v = {i}\n"}, f"c{i}")
    clone = tmp_path / "shallow"
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{repo}", str(clone)], check=True)
    rc, _, err = scan(clone)
    assert rc == 0 and "shallow clone" in err


def test_submodules_are_listed_not_followed(repo: Path, tmp_path: Path) -> None:
    inner = tmp_path / "inner"
    inner.mkdir()
    git(inner, "init", "-q")
    git(inner, "config", "user.name", "B")
    git(inner, "config", "user.email", "b@example.org")
    commit(inner, {"k.py": f"T = '{github_token()}'\n"}, "inner secret")
    commit(repo, {"a.py": "a = 1\n"}, "init")
    subprocess.run(["git", "-C", str(repo), "-c", "protocol.file.allow=always", "submodule", "add", "-q",
                    str(inner), "vendor/inner"], check=True, capture_output=True)
    git(repo, "commit", "-q", "-m", "add submodule")
    rc, _, err = scan(repo)
    assert rc == 0 and "submodule vendor/inner not scanned" in err
    rc, report, _ = scan(repo, "--recurse-submodules")
    assert [f["path"] for f in findings(report)] == ["vendor/inner/k.py"]


def test_corrupt_object_is_reported_and_scan_continues(repo: Path) -> None:
    commit(repo, {"good.py": f"T = '{github_token()}'\n"}, "good")
    commit(repo, {"bad.py": "will be corrupted\n"}, "bad")
    bad_sha = git(repo, "rev-parse", "HEAD:bad.py")
    obj = repo / ".git" / "objects" / bad_sha[:2] / bad_sha[2:]
    obj.chmod(0o644)
    obj.write_bytes(b"this is not a zlib stream")
    rc, report, err = scan(repo)
    assert rc == 1 and [f["path"] for f in findings(report)] == ["good.py"]
    assert bad_sha in err
