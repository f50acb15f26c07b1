"""``depthguard baseline create|update|audit``: record known findings so scans report only new ones.

The baseline stores fingerprints, never values; ``update`` keeps entries still present and adds new
ones, so a team can accept today's state and gate only on what changes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from depthguard.cli.scan_cmd import PathType, ScanOptions, scan_paths, write_output
from depthguard.errors import UsageError
from scanners.baseline import Baseline, update, write_baseline
from scanners.report import render

scan_args = [
    click.argument("paths", nargs=-1, required=True, type=PathType),
    click.option("--config", type=PathType, help="Config file (default: .depthguard.toml found upward)."),
    click.option("--jobs", "-j", type=click.IntRange(min=0), default=0, help="Worker processes."),
    click.option("--no-gitignore", is_flag=True, help="Also scan what .gitignore excludes."),
    click.option("--engine", type=click.Choice(["auto", "hyperscan", "python"]), default="auto"),
]


def _with_scan_args(fn: Callable[..., Any]) -> Callable[..., Any]:
    for decorator in reversed(scan_args):
        fn = decorator(fn)
    return fn


def _options(config: Path | None, jobs: int, engine: str) -> ScanOptions:
    opts = ScanOptions("baseline", None, config, None, False, True, jobs, False, engine)
    opts.validate()
    return opts


@click.group("baseline", no_args_is_help=True)
def app() -> None:
    """Create, update and inspect baselines of known findings."""


@app.command("create")
@_with_scan_args
@click.option("--output", "-o", type=PathType, default=Path(".depthguard-baseline.json"), show_default=True,
              help="Baseline file to write.")
@click.option("--detect-secrets", "detect_secrets", is_flag=True,
              help="Write detect-secrets' .secrets.baseline format.")
def create(paths: tuple[Path, ...], config: Path | None, jobs: int, no_gitignore: bool, engine: str,
           output: Path, detect_secrets: bool) -> None:
    """Scan and record every current finding as known."""
    result = scan_paths(list(paths), _options(config, jobs, engine), gitignore=not no_gitignore)
    if detect_secrets:
        text = render(result, "baseline", show_secrets=False)
    else:
        text = write_baseline(result.findings)
    write_output(text, output)
    click.echo(f"{output}: {len(result.findings)} finding(s) recorded", err=True)


@app.command("update")
@click.argument("baseline", type=PathType)
@_with_scan_args
def update_cmd(baseline: Path, paths: tuple[Path, ...], config: Path | None, jobs: int, no_gitignore: bool,
               engine: str) -> None:
    """Rescan: keep entries still found, add new findings, drop what is gone."""
    old = Baseline.load(baseline)
    result = scan_paths(list(paths), _options(config, jobs, engine), gitignore=not no_gitignore)
    write_output(update(old, result.findings), baseline)
    click.echo(f"{baseline}: {len(result.findings)} finding(s) recorded (was {len(old)})", err=True)


@app.command("audit")
@click.argument("baseline", type=PathType)
def audit(baseline: Path) -> None:
    """List what a baseline accepts (paths, rules and fingerprints; it holds no values)."""
    loaded = Baseline.load(baseline)
    if not len(loaded):
        raise UsageError(f"{baseline}: the baseline is empty")
    for entry in loaded.entries:
        click.echo(f"{entry.path}  {entry.rule_id}  {entry.fingerprint}")
    for filename, items in sorted(loaded.ds_results.items()):
        for item in items:
            audited = item.get("is_secret")
            label = "unaudited" if audited is None else ("secret" if audited else "false-positive")
            where = f"{filename}:{item.get('line_number', '?')}"
            click.echo(f"{where}  {item.get('type')}  sha1:{item.get('hashed_secret')}  {label}")
    click.echo(f"{len(loaded)} entr{'y' if len(loaded) == 1 else 'ies'} ({loaded.format} format)")
