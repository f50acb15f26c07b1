"""``depthguard baseline create|update|audit``: record known findings so scans report only new ones.

The baseline stores fingerprints, never values; ``update`` keeps entries still present and adds new
ones, so a team can accept today's state and gate only on what changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from depthguard.cli.scan_cmd import (
    ConfigOpt,
    EngineOpt,
    JobsOpt,
    NoGitignoreOpt,
    ScanOptions,
    scan_paths,
    write_output,
)
from depthguard.errors import UsageError
from scanners.baseline import Baseline, update, write_baseline
from scanners.report import render

app = typer.Typer(help="Create, update and inspect baselines of known findings.", no_args_is_help=True)

PathsArg = Annotated[list[Path], typer.Argument(help="Files or directories to scan.")]


def _options(config: Path | None, jobs: int, engine: str) -> ScanOptions:
    opts = ScanOptions("baseline", None, config, None, False, True, jobs, False, engine)
    opts.validate()
    return opts


@app.command("create")
def create(
    paths: PathsArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Baseline file to write.")] = Path(
        ".depthguard-baseline.json"
    ),
    detect_secrets: Annotated[
        bool, typer.Option("--detect-secrets", help="Write detect-secrets' .secrets.baseline format.")
    ] = False,
    config: ConfigOpt = None,
    jobs: JobsOpt = 0,
    no_gitignore: NoGitignoreOpt = False,
    engine: EngineOpt = "auto",
) -> None:
    """Scan and record every current finding as known."""
    result = scan_paths(paths, _options(config, jobs, engine), gitignore=not no_gitignore)
    if detect_secrets:
        text = render(result, "baseline", show_secrets=False)
    else:
        text = write_baseline(result.findings)
    write_output(text, output)
    typer.echo(f"{output}: {len(result.findings)} finding(s) recorded", err=True)


@app.command("update")
def update_cmd(
    baseline: Annotated[Path, typer.Argument(help="Existing baseline (either format); rewritten in place.")],
    paths: PathsArg,
    config: ConfigOpt = None,
    jobs: JobsOpt = 0,
    no_gitignore: NoGitignoreOpt = False,
    engine: EngineOpt = "auto",
) -> None:
    """Rescan: keep entries still found, add new findings, drop what is gone."""
    old = Baseline.load(baseline)
    result = scan_paths(paths, _options(config, jobs, engine), gitignore=not no_gitignore)
    write_output(update(old, result.findings), baseline)
    typer.echo(f"{baseline}: {len(result.findings)} finding(s) recorded (was {len(old)})", err=True)


@app.command("audit")
def audit(baseline: Annotated[Path, typer.Argument(help="Baseline file (either format).")]) -> None:
    """List what a baseline accepts (paths, rules and fingerprints; it holds no values)."""
    loaded = Baseline.load(baseline)
    if not len(loaded):
        raise UsageError(f"{baseline}: the baseline is empty")
    for entry in loaded.entries:
        typer.echo(f"{entry.path}  {entry.rule_id}  {entry.fingerprint}")
    for filename, items in sorted(loaded.ds_results.items()):
        for item in items:
            audited = item.get("is_secret")
            label = "unaudited" if audited is None else ("secret" if audited else "false-positive")
            where = f"{filename}:{item.get('line_number', '?')}"
            typer.echo(f"{where}  {item.get('type')}  sha1:{item.get('hashed_secret')}  {label}")
    typer.echo(f"{len(loaded)} entr{'y' if len(loaded) == 1 else 'ies'} ({loaded.format} format)")

