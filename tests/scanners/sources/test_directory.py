"""Directory walking: .gitignore semantics, excludes, symlinks, size limits, unreadable files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from depthguard.errors import SourceError
from scanners.sources.directory import DirectorySource, FileRef, read_prepared


def make_tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def rels(src: DirectorySource) -> list[str]:
    return [f.rel_path for f in src.files()]


def test_gitignore_nested_and_negated(tmp_path: Path) -> None:
    make_tree(
        tmp_path,
        {
            ".gitignore": "*.log\nbuild/\n",
            "app.py": "",
            "debug.log": "",
            "build/out.js": "",
            "sub/.gitignore": "!keep.log\n*.tmp\n",
            "sub/keep.log": "",
            "sub/other.log": "",
            "sub/x.tmp": "",
            "sub/deep/y.tmp": "",
            ".git/config": "",
        },
    )
    assert rels(DirectorySource(tmp_path)) == [".gitignore", "app.py", "sub/.gitignore", "sub/keep.log"]
    everything = rels(DirectorySource(tmp_path, gitignore=False))
    assert "debug.log" in everything and "build/out.js" in everything and "sub/deep/y.tmp" in everything
    assert not any(r.startswith(".git/") for r in everything)


def test_excludes_are_gitignore_patterns(tmp_path: Path) -> None:
    make_tree(tmp_path, {"a/fixtures/k.txt": "", "a/src.py": "", "vendor.min.js": ""})
    src = DirectorySource(tmp_path, excludes=["fixtures/", "*.min.js"])
    assert rels(src) == ["a/src.py"]
    assert src.stats.skipped["excluded"] == 2


def test_symlinks_are_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("x")
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(outside)
    (root / "file-link").symlink_to(outside / "secret.txt")
    src = DirectorySource(root)
    assert rels(src) == []
    assert src.stats.skipped["symlink"] == 2


def test_size_limit_and_single_file(tmp_path: Path) -> None:
    make_tree(tmp_path, {"small.txt": "x" * 10, "big.txt": "x" * 5000})
    src = DirectorySource(tmp_path, max_file_size=1000)
    assert rels(src) == ["small.txt"] and src.stats.skipped["too-large"] == 1
    single = DirectorySource(tmp_path / "small.txt")
    assert [f.size for f in single.files()] == [10]


def test_missing_root_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        DirectorySource(tmp_path / "nope")


def test_unreadable_file_is_counted_not_fatal(tmp_path: Path) -> None:
    skipped: list[str] = []
    gone = FileRef(os.fspath(tmp_path / "vanished.txt"), "vanished.txt", 3)
    assert read_prepared(gone, skipped.append) is None
    assert skipped == ["unreadable"]
