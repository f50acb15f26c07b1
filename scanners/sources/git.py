"""Git repositories: whole history (each unique blob once), a commit range, or the staged changes.

History is scanned by content, not by commit: ``git rev-list --objects`` names every blob reachable
from the chosen refs exactly once, together with the commit that introduced it and its path there,
and ``git cat-file --batch`` streams them; only the few commits with findings are then looked up for
author and message. Reading ``git log -p`` instead would re-read the same content once per commit
that touches it.

Never writes to the repository; never logs blob contents.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO

from depthguard.errors import SourceError
from scanners.decode import prepare
from scanners.engine import Engine
from scanners.finding import Finding
from scanners.result import ScanStats
from scanners.runner import default_jobs, merge_stats, pool_worthwhile, run_batches

DEFAULT_MAX_BLOB_SIZE = 10 * 1024 * 1024
PARALLEL_MIN_BYTES = 64 * 1024 * 1024
_HUNK = re.compile(rb"^@@ -\d+(?:,\d+)? \+(\d+)(?:,(\d+))? @@")
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
BINARY_SUFFIXES = frozenset(
    b".png .jpg .jpeg .gif .ico .webp .gz .tgz .xz .zip .jar .war .whl .egg .7z .mo .pyc .pyo .class "
    b".so .dylib .dll .exe .o .a .wasm .woff .woff2 .ttf .otf .eot".split()
)
"""Formats whose own header puts a NUL byte in the first 8 KiB, so the content sniff would call
every one binary anyway: skipping them by name spares reading them out of the pack at all (gzip'd
fixtures and compiled catalogs were 6% of the bench repository's blob bytes)."""


def decode_path(raw: bytes) -> str:
    """Git paths are bytes; a non-UTF-8 name is shown with escapes rather than failing the scan."""
    return raw.decode("utf-8", "backslashreplace")


@dataclass(frozen=True, slots=True)
class Blob:
    sha: str
    path: str
    size: int


@dataclass(frozen=True, slots=True)
class CommitInfo:
    sha: str
    author: str
    email: str
    date: str
    message: str
    order: int = 0
    """Position in the oldest-first walk: a total order even when commit dates tie."""

    def to_dict(self) -> dict[str, str]:
        return {"sha": self.sha, "author": self.author, "email": self.email, "date": self.date,
                "message": self.message}


@dataclass
class GitScan:
    findings: list[Finding]
    stats: ScanStats
    warnings: list[str] = field(default_factory=list)


class Repo:
    """A thin, checked wrapper over the git command line for one repository."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise SourceError(f"{path}: no such file or directory")
        try:
            top = self.git("rev-parse", "--show-toplevel", check=False)
        except FileNotFoundError as exc:
            raise SourceError("git: command not found (depthguard scan git needs git on PATH)") from exc
        if top.returncode != 0:
            bare = self.git("rev-parse", "--is-bare-repository", check=False)
            if bare.returncode != 0 or bare.stdout.strip() != b"true":
                raise SourceError(f"{path}: not a git repository")

    def git(
        self, *args: str, check: bool = True, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        proc = subprocess.run(
            ["git", "-C", str(self.path), "-c", "core.quotePath=false", *args],
            input=stdin,
            capture_output=True,
        )
        if check and proc.returncode != 0:
            first = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            raise SourceError(f"git {args[0]}: {first[0] if first else 'failed'} (in {self.path})")
        return proc

    def has_commits(self) -> bool:
        return self.git("rev-parse", "--verify", "--quiet", "HEAD", check=False).returncode == 0

    def is_shallow(self) -> bool:
        return self.git("rev-parse", "--is-shallow-repository", check=False).stdout.strip() == b"true"

    def shallow_boundary(self) -> list[str]:
        git_dir = self.git("rev-parse", "--git-dir").stdout.decode().strip()
        shallow = Path(git_dir) if os.path.isabs(git_dir) else self.path / git_dir
        shallow = shallow / "shallow"
        try:
            return shallow.read_text().split()
        except OSError:
            return []

    def verify(self, rev: str, option: str) -> None:
        if self.git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False).returncode != 0:
            raise SourceError(f"{option}: unknown revision {rev!r}")


class GitHistorySource:
    """Unique blobs reachable from refs (all by default), or added by a commit range."""

    def __init__(
        self,
        repo: Repo,
        *,
        branch: str | None = None,
        rev_range: str | None = None,
        max_blob_size: int = DEFAULT_MAX_BLOB_SIZE,
    ) -> None:
        self.repo = repo
        self.branch = branch
        self.rev_range = rev_range
        self.max_blob_size = max_blob_size
        self.stats = ScanStats()
        self.warnings: list[str] = []
        self.origin: dict[str, tuple[str, int]] = {}
        """Blob id -> (introducing commit, its position in the oldest-first walk), filled as listed."""

    def _rev_args(self) -> list[str]:
        if self.rev_range:
            return [self.rev_range]
        if self.branch:
            return [self.branch]
        return ["--all"]

    def blobs(self) -> list[Blob]:
        return list(self.iter_blobs())

    def iter_blobs(self) -> Iterator[Blob]:
        """Every blob once, as the commit that introduced it saw it.

        ``rev-list --objects --in-commit-order --reverse`` walks commits oldest first and prints each
        tree and blob right after the first commit that references it, with its path there: the
        introducing commit and path come out of the walk that lists the blobs anyway, so history
        scanning needs no second ``git log`` pass to attribute findings. The walk pipes straight into
        ``cat-file --batch-check`` (``%(rest)`` carries the path), so Python parses one stream and
        scanning can start before the walk ends."""
        rev_list = subprocess.Popen(
            ["git", "-C", str(self.repo.path), "rev-list", "--objects", "--in-commit-order", "--reverse",
             "--missing=print", *self._rev_args(), "--"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        check = subprocess.Popen(
            ["git", "-C", str(self.repo.path), "cat-file",
             "--batch-check=%(objectname) %(objecttype) %(objectsize) %(rest)"],
            stdin=rev_list.stdout, stdout=subprocess.PIPE,
        )
        assert rev_list.stdout is not None and rev_list.stderr is not None and check.stdout is not None
        rev_list.stdout.close()  # cat-file owns it now
        origin = self.origin
        commit, order = "", -1
        try:
            for line in check.stdout:
                if line.startswith(b"tree ", line.find(b" ") + 1):  # most lines: skipped unsplit
                    continue
                parts = line.rstrip(b"\n").split(b" ", 3)
                kind = parts[1] if len(parts) >= 2 else b""
                if kind == b"commit":
                    commit, order = parts[0].decode(), order + 1
                    continue
                if kind == b"missing":
                    sha = parts[0].lstrip(b"?").decode()
                    self.warnings.append(f"missing object {sha} (corrupt or partial clone)")
                    continue
                if len(parts) < 4 or kind != b"blob":
                    continue
                size = int(parts[2])
                if size > self.max_blob_size:
                    self.stats.skip("too-large")
                    continue
                dot = parts[3].rfind(b".")
                if dot > parts[3].rfind(b"/") and parts[3][dot:].lower() in BINARY_SUFFIXES:
                    self.stats.skip("binary")
                    continue
                sha = parts[0].decode()
                origin[sha] = (commit, order)
                yield Blob(sha, decode_path(parts[3]), size)
        finally:
            check.stdout.close()
            check.wait()
            err = rev_list.stderr.read()
            if rev_list.wait() != 0:
                first = err.decode("utf-8", "replace").strip().splitlines()
                raise SourceError(f"git rev-list: {first[0] if first else 'failed'} (in {self.repo.path})")


def _read_exact(stream: IO[bytes], n: int) -> bytes:
    data = stream.read(n)
    if data is None or len(data) != n:
        raise EOFError
    return data


class CatFile:
    """One long-lived ``git cat-file --batch`` per process and repository.

    Restarting it for every shard threw away its delta-base cache, so each shard began by
    re-inflating whole delta chains: on the 15,000-commit bench repository the cat-file processes
    took 1.4 CPU-s that way against 0.6 s for one process that lives through the scan. A corrupt
    object ends the process; the next request starts a fresh one after it, so one bad object never
    ends the scan.
    """

    def __init__(self, repo_path: str) -> None:
        self.repo_path = repo_path
        self.pid = os.getpid()
        self._proc: subprocess.Popen[bytes] | None = None

    def _process(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen(
                ["git", "-C", self.repo_path, "cat-file", "--batch"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
        return self._proc

    def contents(self, shas: Sequence[str], warnings: list[str]) -> Iterator[tuple[str, bytes]]:
        pending = list(shas)
        while pending:
            proc = self._process()
            assert proc.stdin is not None and proc.stdout is not None

            def feed(items: list[str], pipe: IO[bytes]) -> None:  # a thread: a full pipe must not deadlock
                try:
                    pipe.write(b"".join(sha.encode() + b"\n" for sha in items))
                    pipe.flush()
                except (BrokenPipeError, ValueError):
                    pass

            feeder = threading.Thread(target=feed, args=(pending, proc.stdin), daemon=True)
            feeder.start()
            done, clean = 0, False
            try:
                for sha in pending:
                    header = proc.stdout.readline()
                    parts = header.split()
                    if not parts or parts[0] != sha.encode():
                        raise EOFError  # died, or out of step with our requests
                    done += 1
                    if parts[1] == b"missing":
                        warnings.append(f"missing object {sha}")
                        continue
                    data = _read_exact(proc.stdout, int(parts[2]))
                    _read_exact(proc.stdout, 1)  # the newline after each object
                    yield sha, data
                pending, clean = [], True
            except (EOFError, ValueError, IndexError):
                bad = pending[done] if done < len(pending) else "?"
                self.close()
                stderr = proc.stderr.read() if proc.stderr else b""
                err = stderr.decode("utf-8", "replace").strip().splitlines()
                warnings.append(f"cannot read object {bad}: {err[-1] if err else 'git cat-file failed'}")
                pending, clean = pending[done + 1 :], True
            finally:
                if not clean:  # the caller stopped early: unread answers would desynchronise the next call
                    self.close()
                feeder.join(timeout=5)

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait()


_CAT_FILES: dict[str, CatFile] = {}


def cat_file(repo_path: str) -> CatFile:
    """This process's cat-file for ``repo_path``; a forked worker never uses its parent's pipes."""
    current = _CAT_FILES.get(repo_path)
    if current is None or current.pid != os.getpid():
        current = _CAT_FILES[repo_path] = CatFile(repo_path)
    return current


def close_cat_files() -> None:
    for cf in list(_CAT_FILES.values()):
        if cf.pid == os.getpid():
            cf.close()
    _CAT_FILES.clear()


_JOB: tuple[Engine, str] | None = None  # (engine, repo path), set before fork
SHARD_BYTES = 8 * 1024 * 1024


def _scan_shard(shard: list[tuple[str, str]]) -> tuple[dict[str, list[Finding]], ScanStats, list[str]]:
    assert _JOB is not None
    engine, repo_path = _JOB
    stats = ScanStats()
    warnings: list[str] = []
    found = dict(_scan_contents(engine, repo_path, dict(shard), stats, warnings))
    return found, stats, warnings


def _scan_contents(
    engine: Engine, repo_path: str, paths: dict[str, str], stats: ScanStats, warnings: list[str]
) -> Iterator[tuple[str, list[Finding]]]:
    """(blob id, findings) for each text blob with findings; binaries and sizes go to ``stats``."""
    for sha, raw in cat_file(repo_path).contents(list(paths), warnings):
        data = prepare(raw)
        if data is None:
            stats.skip("binary")
            continue
        stats.files += 1
        stats.bytes += len(data)
        hits = engine.scan(data, paths[sha], "git")
        if hits:
            yield sha, hits


def _shards(blobs: Iterable[Blob]) -> Iterator[list[tuple[str, str]]]:
    """Contiguous runs in rev-list order: neighbouring blobs share delta bases in the pack, so each
    worker's cat-file keeps its delta cache warm (scattering blobs made two workers slower than one)."""
    shard: list[tuple[str, str]] = []
    size = 0
    for b in blobs:
        shard.append((b.sha, b.path))
        size += b.size
        if size >= SHARD_BYTES:
            yield shard
            shard, size = [], 0
    if shard:
        yield shard


def scan_blobs(
    engine: Engine, repo: Repo, blobs: Iterable[Blob], jobs: int = 0
) -> tuple[dict[str, list[Finding]], ScanStats, list[str]]:
    """Scan blob contents; past ``PARALLEL_MIN_BYTES`` the rest streams to forked workers, each with
    its own ``cat-file``, while the listing is still running."""
    global _JOB
    jobs = jobs or default_jobs()
    items, use_pool = pool_worthwhile(blobs, lambda b: b.size, jobs, PARALLEL_MIN_BYTES)
    _JOB = (engine, str(repo.path))
    stats = ScanStats()
    warnings: list[str] = []
    found: dict[str, list[Finding]] = {}
    try:
        for part_found, part_stats, part_warnings in run_batches(_scan_shard, _shards(items), jobs, use_pool):
            found.update(part_found)
            merge_stats(stats, part_stats)
            warnings.extend(part_warnings)
    finally:
        _JOB = None
        close_cat_files()
    return found, stats, warnings


def commit_infos(
    repo: Repo, found: Iterable[str], origin: dict[str, tuple[str, int]]
) -> dict[str, CommitInfo]:
    """Author, date and subject of the introducing commit of each blob with findings: one
    ``git log --no-walk`` over just those commits (the walk already said which they are)."""
    wanted = {sha: origin[sha] for sha in found if sha in origin and origin[sha][0]}
    commits = sorted({c for c, _ in wanted.values()})
    if not commits:
        return {}
    out = repo.git("log", "--no-walk=unsorted", "--stdin",
                   "--format=%x01%H%x00%an%x00%ae%x00%aI%x00%s",
                   stdin=b"".join(c.encode() + b"\n" for c in commits)).stdout
    meta: dict[str, list[bytes]] = {}
    for record in out.split(b"\x01")[1:]:
        fields = record.rstrip(b"\n").split(b"\x00")
        if len(fields) == 5:
            meta[fields[0].decode()] = fields
    infos: dict[str, CommitInfo] = {}
    for sha, (commit, order) in wanted.items():
        f = meta.get(commit)
        if f is not None:
            infos[sha] = CommitInfo(commit, decode_path(f[1]), decode_path(f[2]), f[3].decode(),
                                    decode_path(f[4]), order)
    return infos


def tree_blobs(repo: Repo, rev: str) -> set[str] | None:
    """Blob ids in the tree of ``rev``, or None when ``rev`` does not name a tree."""
    listing = repo.git("ls-tree", "-r", "-z", rev, check=False)
    if listing.returncode != 0:
        return None
    return {e.split(b"\t")[0].split()[2].decode() for e in listing.stdout.split(b"\0") if b" blob " in e}


def head_blobs(repo: Repo) -> set[str]:
    return (tree_blobs(repo, "HEAD") or set()) if repo.has_commits() else set()


def submodules(repo: Repo) -> list[str]:
    if not repo.has_commits():
        return []
    listing = repo.git("ls-tree", "-r", "-z", "HEAD").stdout
    return [decode_path(e.split(b"\t", 1)[1]) for e in listing.split(b"\0") if e.startswith(b"160000 ")]


def scan_history(
    engine: Engine,
    repo: Repo,
    *,
    branch: str | None = None,
    rev_range: str | None = None,
    max_blob_size: int = DEFAULT_MAX_BLOB_SIZE,
    jobs: int = 0,
    recurse_submodules: bool = False,
    prefix: str = "",
) -> GitScan:
    """Findings in history, one per (rule, secret, path), attributed to the introducing commit."""
    source = GitHistorySource(repo, branch=branch, rev_range=rev_range, max_blob_size=max_blob_size)
    warnings: list[str] = []
    if not repo.has_commits():
        warnings.append(f"{repo.path}: the repository has no commits yet")
        return GitScan([], source.stats, warnings)
    if repo.is_shallow():
        boundary = repo.shallow_boundary()
        warnings.append(
            f"shallow clone: history before {len(boundary)} boundary commit(s) "
            f"({', '.join(c[:12] for c in boundary[:5])}) was not reachable and not scanned"
        )
    found, stats, scan_warnings = scan_blobs(engine, repo, source.iter_blobs(), jobs)
    merge_stats(stats, source.stats)
    warnings.extend(source.warnings + scan_warnings)
    intro = commit_infos(repo, found, source.origin)
    at_head = head_blobs(repo)
    head_prints = {f.fingerprint for sha, fs in found.items() if sha in at_head for f in fs}
    best: dict[tuple[str, str, str], tuple[int, Finding]] = {}
    unknown = 1 << 62  # a blob the walk did not attribute sorts last
    for sha, fs in found.items():
        info = intro.get(sha)
        order = info.order if info else unknown
        for f in fs:
            path = prefix + f.path  # the path in the introducing commit: the walk listed it there
            f = replace(
                f,
                path=path,
                source="git",
                commit=info.to_dict() if info else None,
                extra={"present_at_head": f.fingerprint in head_prints, "blob": sha},
            )
            key = (f.rule_id, f.fingerprint, path)
            if key not in best or order < best[key][0]:
                best[key] = (order, f)
    findings = sorted((f for _, f in best.values()), key=lambda f: (f.path, f.line, f.rule_id))
    for sub in submodules(repo):
        if not recurse_submodules:
            warnings.append(f"submodule {sub} not scanned (use --recurse-submodules)")
            continue
        sub_path = repo.path / sub
        if not (sub_path / ".git").exists():
            warnings.append(f"submodule {sub} is not checked out: not scanned")
            continue
        inner = scan_history(engine, Repo(sub_path), max_blob_size=max_blob_size, jobs=jobs,
                             recurse_submodules=True, prefix=f"{prefix}{sub}/")
        findings.extend(inner.findings)
        merge_stats(stats, inner.stats)
        warnings.extend(inner.warnings)
    return GitScan(findings, stats, warnings)


def staged_added_lines(repo: Repo) -> dict[bytes, set[int]]:
    """Path -> line numbers (in the staged file) that the index adds relative to HEAD."""
    base = "HEAD" if repo.has_commits() else EMPTY_TREE
    diff = repo.git("diff", "--cached", "--no-color", "--no-ext-diff", "-U0", "--no-renames",
                    "--diff-filter=ACMRT", base, "--").stdout
    added: dict[bytes, set[int]] = {}
    current: bytes | None = None
    for line in diff.split(b"\n"):
        if line.startswith(b"+++ "):
            target = line[4:]
            current = target[2:] if target.startswith(b"b/") else None
            if current is not None:
                added.setdefault(current, set())
        elif line.startswith(b"@@") and current is not None:
            m = _HUNK.match(line)
            if m:
                start, count = int(m.group(1)), int(m.group(2) or b"1")
                added[current].update(range(start, start + count))
    return added


def scan_staged(engine: Engine, repo: Repo, max_blob_size: int = DEFAULT_MAX_BLOB_SIZE) -> GitScan:
    """Only what ``git commit`` would add: the staged version of each changed file is scanned whole
    (so multi-line secrets keep their context) and findings on unchanged lines are dropped."""
    stats = ScanStats()
    warnings: list[str] = []
    added = staged_added_lines(repo)
    if not added:
        return GitScan([], stats, warnings)
    index = repo.git("ls-files", "--stage", "-z").stdout
    staged: dict[bytes, str] = {}
    for entry in index.split(b"\0"):
        meta, _, path = entry.partition(b"\t")
        parts = meta.split()
        if len(parts) == 3 and parts[2] == b"0" and path in added:
            staged[path] = parts[1].decode()
    sizes = repo.git("cat-file", "--batch-check=%(objectname) %(objectsize)",
                     stdin=b"".join(s.encode() + b"\n" for s in staged.values())).stdout
    size_of = {p.split()[0].decode(): int(p.split()[1]) for p in sizes.splitlines() if len(p.split()) == 2}
    wanted = {sha: path for path, sha in staged.items() if size_of.get(sha, 0) <= max_blob_size}
    if len(staged) > len(wanted):
        stats.skip("too-large", len(staged) - len(wanted))
    findings: list[Finding] = []
    shown = {sha: decode_path(path) for sha, path in wanted.items()}
    try:
        for sha, hits in _scan_contents(engine, str(repo.path), shown, stats, warnings):
            lines = added[wanted[sha]]
            findings.extend(replace(f, extra={"staged": True}) for f in hits if f.line in lines)
    finally:
        close_cat_files()
    findings.sort(key=lambda f: (f.path, f.line, f.rule_id))
    return GitScan(findings, stats, warnings)


__all__ = [
    "DEFAULT_MAX_BLOB_SIZE",
    "Blob",
    "CommitInfo",
    "GitHistorySource",
    "GitScan",
    "Repo",
    "scan_history",
    "scan_staged",
]

