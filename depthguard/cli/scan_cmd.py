"""``depthguard scan dir|…``: wire sources, engine, baseline and reports together.

Common options live in one place so every scan target behaves alike: same formats, same baseline,
same exit codes (0 clean, 1 findings, 2 usage/input error).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from depthguard.errors import ReportError, UsageError
from scanners.allow import Allowlist
from scanners.config import ScanConfig, find_config, load_config, parse_size
from scanners.engine import Engine
from scanners.result import ScanResult, ScanStats
from scanners.rulepack import builtin_rules, check_unique
from scanners.runner import merge_stats, scan_files
from scanners.sources.directory import DirectorySource

FORMAT_NAMES = ("text", "json", "jsonl", "sarif", "baseline")

PathType = click.Path(path_type=Path)


def common_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options every ``scan`` target shares (design.md's "common" line)."""
    for decorator in reversed(
        [
            click.option("--format", "-f", "fmt", type=click.Choice(FORMAT_NAMES), default="text",
                         show_default=True, help="Report format."),
            click.option("--output", "-o", type=PathType, help="Write the report here (atomically)."),
            click.option("--config", type=PathType,
                         help="Config file (default: .depthguard.toml found upward)."),
            click.option("--baseline", type=PathType, help="Suppress findings known in this baseline."),
            click.option("--show-secrets", is_flag=True, help="Print secret values (default: redacted)."),
            click.option("--exit-zero", is_flag=True, help="Exit 0 even when secrets are found."),
            click.option("--jobs", "-j", type=click.IntRange(min=0), default=0,
                         help="Worker processes (default: all cores)."),
            click.option("--no-progress", is_flag=True, help="Never show a progress bar."),
            click.option("--engine", type=click.Choice(["auto", "hyperscan", "python"]), default="auto",
                         help="Prefilter engine (identical findings; hyperscan is faster)."),
        ]
    ):
        fn = decorator(fn)
    return fn


def scan_options(kwargs: dict[str, Any]) -> ScanOptions:
    """Pop the common options out of a command's keyword arguments."""
    opts = ScanOptions(
        kwargs.pop("fmt"), kwargs.pop("output"), kwargs.pop("config"), kwargs.pop("baseline"),
        kwargs.pop("show_secrets"), kwargs.pop("exit_zero"), kwargs.pop("jobs"),
        not kwargs.pop("no_progress"), kwargs.pop("engine"),
    )
    opts.validate()
    return opts


@click.group("scan", no_args_is_help=True)
def app() -> None:
    """Scan for hardcoded secrets."""


@dataclass
class ScanOptions:
    fmt: str
    output: Path | None
    config: Path | None
    baseline: Path | None
    show_secrets: bool
    exit_zero: bool
    jobs: int
    progress: bool
    engine: str

    def validate(self) -> None:
        from scanners.report import FORMATS

        if self.fmt not in FORMATS:
            raise UsageError(f"--format: unknown format {self.fmt!r} (choose from {', '.join(FORMATS)})")
        if self.engine not in ("auto", "hyperscan", "python"):
            raise UsageError(f"--engine: unknown engine {self.engine!r} (auto, hyperscan or python)")
        if self.output is not None and self.output.is_dir():
            raise UsageError(f"--output: {self.output} is a directory")


def resolve_config(opts: ScanOptions, start: Path) -> ScanConfig:
    if opts.config is not None:
        return load_config(opts.config)
    found = find_config(start)
    return load_config(found) if found else ScanConfig()


def build_engine(cfg: ScanConfig, engine: str) -> Engine:
    disabled = set(cfg.disable)
    rules = [r for r in builtin_rules() if r.id not in disabled]
    rules = check_unique(rules + list(cfg.custom_rules))
    allow = Allowlist.build(cfg.allow_values, cfg.allow_regexes)
    try:
        return Engine(rules, engine=engine, disabled_filters=frozenset(cfg.filters_off), allowlist=allow)
    except RuntimeError as exc:  # e.g. --engine hyperscan where it is not installed
        raise UsageError(f"--engine: {exc}") from exc


def write_output(text: str, output: Path | None) -> None:
    """stdout, or a file written to a temp name and renamed: never a half-written report."""
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    parent = output.parent if str(output.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{output.name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, output)
    except OSError as exc:
        raise ReportError(f"--output: cannot write {output}: {exc.strerror or exc}") from exc


def finish(result: ScanResult, opts: ScanOptions) -> None:
    """Apply the baseline, render, write, and exit with the contract's code."""
    from scanners.baseline import Baseline
    from scanners.report import render

    if opts.baseline is not None:
        baseline = Baseline.load(opts.baseline)
        kept = [f for f in result.findings if not baseline.suppresses(f)]
        result.stats.suppressed += len(result.findings) - len(kept)
        result.findings = kept
    color = opts.output is None and sys.stdout.isatty()
    text = render(result, opts.fmt, show_secrets=opts.show_secrets, color=color)
    write_output(text, opts.output)
    if opts.fmt != "text" or opts.output is not None:  # the text report on stdout already lists them
        for warning in result.warnings:
            print(f"depthguard: warning: {warning}", file=sys.stderr)
    raise click.exceptions.Exit(1 if result.findings and not opts.exit_zero else 0)


class _ProgressBar:
    """A rich progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, total_bytes: int) -> None:
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        self._bar = Progress(
            TextColumn("scanning"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), transient=True
        )
        self._task = self._bar.add_task("scan", total=total_bytes)

    def __enter__(self) -> _ProgressBar:
        self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.__exit__(None, None, None)

    def update(self, files: int, done: int) -> None:
        self._bar.update(self._task, completed=done)


def scan_paths(
    paths: list[Path],
    opts: ScanOptions,
    *,
    gitignore: bool = True,
    max_file_size: str | None = None,
) -> ScanResult:
    """Scan files and trees with the config found for the first path (no baseline applied)."""
    for p in paths:
        if not p.exists():
            raise UsageError(f"{p}: no such file or directory")
    cfg = resolve_config(opts, paths[0])
    size_limit = parse_size(max_file_size, "", "--max-file-size") if max_file_size else cfg.max_file_size
    eng = build_engine(cfg, opts.engine)
    stats = ScanStats(rules=len(eng.rules), engine=eng.backend)
    result = ScanResult([], stats, roots=[str(p) for p in paths])
    for root in paths:
        source = DirectorySource(
            root, gitignore=cfg.gitignore and gitignore, excludes=cfg.exclude, max_file_size=size_limit
        )
        if opts.progress and sys.stderr.isatty():
            refs = list(source.files())  # the bar needs the total up front
            with _ProgressBar(sum(r.size for r in refs)) as bar:
                found, part = scan_files(eng, refs, jobs=opts.jobs, progress=bar.update)
        else:
            found, part = scan_files(eng, source.files(), jobs=opts.jobs)
        if len(paths) > 1 and root.is_dir():
            found = [f.with_location(path=os.path.normpath(os.path.join(str(root), f.path))) for f in found]
        result.findings.extend(found)
        merge_stats(result.stats, part)
        merge_stats(result.stats, source.stats)
        result.stats.seconds += part.seconds
    return result


@app.command("dir")
@click.argument("paths", nargs=-1, required=True, type=PathType)
@common_options
@click.option("--no-gitignore", is_flag=True, help="Also scan what .gitignore excludes.")
@click.option("--max-file-size", help="Skip larger files (e.g. 10MB; default 10MB).")
def scan_dir(paths: tuple[Path, ...], no_gitignore: bool, max_file_size: str | None, **common: Any) -> None:
    """Scan files and directory trees."""
    opts = scan_options(common)
    result = scan_paths(list(paths), opts, gitignore=not no_gitignore, max_file_size=max_file_size)
    finish(result, opts)


@app.command("git")
@click.argument("repo", required=False, default=".", type=PathType)
@common_options
@click.option("--staged", is_flag=True, help="Only what the index adds relative to HEAD (pre-commit).")
@click.option("--since", "since", metavar="REV", help="Only commits after REV (REV..HEAD).")
@click.option("--range", "rev_range", metavar="A..B", help="Only commits in the range A..B.")
@click.option("--branch", metavar="REF", help="Only history reachable from REF (default: all refs).")
@click.option("--recurse-submodules", is_flag=True, help="Also scan checked-out submodules' history.")
@click.option("--max-file-size", help="Skip larger blobs (e.g. 10MB; default 10MB).")
def scan_git(
    repo: Path,
    staged: bool,
    since: str | None,
    rev_range: str | None,
    branch: str | None,
    recurse_submodules: bool,
    max_file_size: str | None,
    **common: Any,
) -> None:
    """Scan a git repository: every unique blob in history (default), a range, or the staged changes."""
    from scanners.sources.git import Repo, scan_history, scan_staged

    opts = scan_options(common)
    if sum(bool(x) for x in (staged, since, rev_range)) > 1:
        raise UsageError("--staged, --since and --range are mutually exclusive")
    if rev_range is not None and ".." not in rev_range:
        raise UsageError(f"--range: expected A..B, got {rev_range!r}")
    git_repo = Repo(repo)
    cfg = resolve_config(opts, repo)
    size_limit = parse_size(max_file_size, "", "--max-file-size") if max_file_size else cfg.max_file_size
    eng = build_engine(cfg, opts.engine)
    if since is not None:
        git_repo.verify(since, "--since")
        rev_range = f"{since}..HEAD"
    elif rev_range is not None:
        for end, option in zip(rev_range.split("..", 1), ("--range (start)", "--range (end)"), strict=True):
            if end:
                git_repo.verify(end, option)
    if branch is not None:
        git_repo.verify(branch, "--branch")
    started = time.perf_counter()
    if staged:
        scan = scan_staged(eng, git_repo, max_blob_size=size_limit)
    else:
        scan = scan_history(eng, git_repo, branch=branch, rev_range=rev_range, max_blob_size=size_limit,
                            jobs=opts.jobs, recurse_submodules=recurse_submodules)
    scan.stats.rules, scan.stats.engine = len(eng.rules), eng.backend
    scan.stats.seconds = time.perf_counter() - started
    excluded = _excluder(cfg.exclude)
    findings = [f for f in scan.findings if not excluded(f.path)]
    finish(ScanResult(findings, scan.stats, roots=[str(repo)], warnings=scan.warnings), opts)


def _excluder(patterns: list[str]) -> Callable[[str], bool]:
    """Config excludes apply to history paths as they do to directory trees."""
    if not patterns:
        return lambda path: False
    import pathspec

    spec = pathspec.GitIgnoreSpec.from_lines(patterns)
    return lambda path: bool(spec.match_file(path))


@app.command("image")
@click.argument("target")
@common_options
@click.option("--max-file-size", help="Skip larger files inside layers (e.g. 10MB; default 10MB).")
@click.option("--max-image-size", help="Stop reading after this many uncompressed bytes (default 4GB).")
@click.option("--archive-depth", type=click.IntRange(min=0), default=None,
              help="How deep to open archives nested in layers (default 3; 0: never).")
def scan_image_cmd(
    target: str,
    max_file_size: str | None,
    max_image_size: str | None,
    archive_depth: int | None,
    **common: Any,
) -> None:
    """Scan a container image: every layer (deleted files too), its config and its history.

    TARGET is a `docker save` tarball, an OCI image layout directory, an OCI archive, or
    docker://NAME[:TAG] (exported with the docker CLI)."""
    from dataclasses import replace

    from scanners.sources.image import ImageLimits, scan_image

    opts = scan_options(common)
    local = Path(target)
    cfg = resolve_config(opts, local if not target.startswith("docker://") and local.exists() else Path.cwd())
    size_limit = parse_size(max_file_size, "", "--max-file-size") if max_file_size else cfg.max_file_size
    limits = ImageLimits()
    if max_image_size:
        limits = replace(limits, max_total_bytes=parse_size(max_image_size, "", "--max-image-size"))
    if archive_depth is not None:
        limits = replace(limits, max_depth=archive_depth)
    eng = build_engine(cfg, opts.engine)
    started = time.perf_counter()
    scan = scan_image(eng, target, max_file_size=size_limit, limits=limits)
    scan.stats.rules, scan.stats.engine = len(eng.rules), eng.backend
    scan.stats.seconds = time.perf_counter() - started
    excluded = _excluder(cfg.exclude)
    findings = [f for f in scan.findings if not excluded(f.path)]
    finish(ScanResult(findings, scan.stats, roots=[target], warnings=scan.warnings), opts)


@app.command("env")
@common_options
@click.option("--pid", type=click.IntRange(min=1), help="Scan process N's environment (/proc/N/environ).")
@click.option("--all-processes", is_flag=True, help="Scan every process whose environment is readable.")
@click.option("--file", "files", multiple=True, type=PathType, metavar="FILE",
              help="Scan a .env file, Kubernetes manifest, Helm values or docker-compose file (repeatable).")
def scan_env_cmd(pid: int | None, all_processes: bool, files: tuple[Path, ...], **common: Any) -> None:
    """Scan environment variables: this process's (default), another process's, or env-like files."""
    from scanners.sources.env import scan_all_processes, scan_env_files, scan_own_env, scan_pid

    opts = scan_options(common)
    if sum(bool(x) for x in (pid, all_processes, files)) > 1:
        raise UsageError("--pid, --all-processes and --file are mutually exclusive")
    cfg = resolve_config(opts, Path.cwd())
    eng = build_engine(cfg, opts.engine)
    started = time.perf_counter()
    if pid is not None:
        scan, roots = scan_pid(eng, pid), [f"pid:{pid}"]
    elif all_processes:
        scan, roots = scan_all_processes(eng), ["/proc"]
    elif files:
        scan, roots = scan_env_files(eng, list(files)), [str(f) for f in files]
    else:
        scan, roots = scan_own_env(eng), ["env"]
    scan.stats.rules, scan.stats.engine = len(eng.rules), eng.backend
    scan.stats.seconds = time.perf_counter() - started
    finish(ScanResult(scan.findings, scan.stats, roots=roots, warnings=scan.warnings), opts)
