"""Directory trees: walk, honour ``.gitignore`` and configured excludes, hand out files to scan.

Symlinks are never followed (a link can point anywhere, including outside the tree), ``.git``
directories are skipped (history has its own source), and nothing unreadable is fatal: it is counted
in the stats and the walk goes on.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pathspec

from depthguard.errors import SourceError
from scanners.decode import SNIFF, is_binary, prepare
from scanners.sources.interface import Chunk, Location, Source

DEFAULT_MAX_FILE_SIZE = 10 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class FileRef:
    """A file to scan: where to read it and how to name it in reports."""

    abs_path: str
    rel_path: str
    size: int


def _load_ignore(path: str) -> pathspec.GitIgnoreSpec | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    return pathspec.GitIgnoreSpec.from_lines(lines) if lines else None


class _Ignores:
    """The stack of ``.gitignore`` specs on the way down; deeper files win, as in git."""

    def __init__(self) -> None:
        self._stack: list[tuple[str, pathspec.GitIgnoreSpec]] = []

    def push(self, base: str, spec: pathspec.GitIgnoreSpec) -> None:
        self._stack.append((base, spec))

    def pop(self) -> None:
        self._stack.pop()

    def ignored(self, rel: str, is_dir: bool) -> bool:
        for base, spec in reversed(self._stack):
            sub = rel[len(base) :] if base else rel
            res = spec.check_file(sub + "/" if is_dir else sub)
            if res.include is not None:
                return bool(res.include)
        return False


class DirectorySource(Source):
    """Files under one root (or a single file). Paths are reported relative to the root."""

    def __init__(
        self,
        root: str | Path,
        *,
        gitignore: bool = True,
        excludes: Sequence[str] = (),
        max_file_size: int = DEFAULT_MAX_FILE_SIZE,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        if not self.root.exists():
            raise SourceError(f"{root}: no such file or directory")
        if not os.access(self.root, os.R_OK):
            raise SourceError(f"{root}: permission denied")
        self.gitignore = gitignore
        self.excludes = pathspec.GitIgnoreSpec.from_lines(list(excludes)) if excludes else None
        self.max_file_size = max_file_size

    def files(self) -> Iterator[FileRef]:
        """Every regular file to scan, in a stable (sorted) order."""
        if self.root.is_file():
            size = self.root.stat().st_size
            if self._size_ok(size):
                yield FileRef(str(self.root), str(self.root), size)
            return
        ignores = _Ignores()
        if self.gitignore:
            for extra in (".git/info/exclude", ".gitignore"):
                spec = _load_ignore(str(self.root / extra))
                if spec:
                    ignores.push("", spec)
        yield from self._walk(str(self.root), "", ignores)

    def _size_ok(self, size: int) -> bool:
        if size > self.max_file_size:
            self.stats.skip("too-large")
            return False
        return True

    def _excluded(self, rel: str, is_dir: bool) -> bool:
        return self.excludes is not None and self.excludes.match_file(rel + "/" if is_dir else rel)

    def _walk(self, abs_dir: str, rel_dir: str, ignores: _Ignores) -> Iterator[FileRef]:
        try:
            with os.scandir(abs_dir) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            self.stats.skip("unreadable")
            return
        pushed = False
        if self.gitignore and rel_dir:
            spec = _load_ignore(os.path.join(abs_dir, ".gitignore"))
            if spec:
                ignores.push(rel_dir, spec)
                pushed = True
        try:
            for entry in entries:
                rel = rel_dir + entry.name
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    self.stats.skip("unreadable")
                    continue
                if stat.S_ISLNK(st.st_mode):
                    self.stats.skip("symlink")
                    continue
                is_dir = stat.S_ISDIR(st.st_mode)
                if is_dir and entry.name == ".git":
                    continue
                if self._excluded(rel, is_dir) or (self.gitignore and ignores.ignored(rel, is_dir)):
                    self.stats.skip("excluded")
                    continue
                if is_dir:
                    yield from self._walk(entry.path, rel + "/", ignores)
                elif stat.S_ISREG(st.st_mode) and self._size_ok(st.st_size):
                    yield FileRef(entry.path, rel, st.st_size)
        finally:
            if pushed:
                ignores.pop()

    def chunks(self) -> Iterator[Chunk]:
        for ref in self.files():
            data = read_prepared(ref, self.stats.skip)
            if data is not None:
                yield Chunk(Location(ref.rel_path), data)


def read_prepared(ref: FileRef, skip: object) -> bytes | None:
    """Read and prepare one file; counts (via ``skip(reason)``) instead of raising.

    Binary files are recognised from their first block, so a tree full of images and archives costs
    one small read per file, not a full one."""
    try:
        with open(ref.abs_path, "rb") as fh:
            head = fh.read(SNIFF)
            if is_binary(head):
                if callable(skip):
                    skip("binary")
                return None
            raw = head + fh.read() if len(head) == SNIFF else head
    except OSError:
        if callable(skip):
            skip("unreadable")
        return None
    data = prepare(raw)
    if data is None and callable(skip):
        skip("binary")
    return data
