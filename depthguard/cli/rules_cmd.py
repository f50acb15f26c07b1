"""``depthguard rules list|test``: inspect the rule pack and run its examples."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from scanners.engine import Engine
from scanners.rulepack import Rule, builtin_rules, check_unique, load_file
from scanners.ruletest import check_examples

app = typer.Typer(help="Inspect and test the detection rules.", no_args_is_help=True)

FileOpt = Annotated[
    list[Path] | None,
    typer.Option("--file", "-f", help="Rule file(s) to use instead of the built-in pack."),
]


def _load(files: list[Path] | None) -> list[Rule]:
    if not files:
        return builtin_rules()
    rules: list[Rule] = []
    for f in files:
        rules.extend(load_file(f))
    return check_unique(rules)


@app.command("list")
def list_rules(files: FileOpt = None) -> None:
    """Print every rule: id, severity and description."""
    for rule in _load(files):
        typer.echo(f"{rule.id:45} {rule.severity:9} {rule.description}")


@app.command("test")
def test_rules(
    files: FileOpt = None,
    rule: Annotated[list[str] | None, typer.Option("--rule", "-r", help="Only these rule ids.")] = None,
    engine: Annotated[str, typer.Option(help="auto, hyperscan or python.")] = "auto",
) -> None:
    """Run each rule's positive and negative examples through the full engine."""
    rules = _load(files)
    eng = Engine(rules, engine=engine)
    selected = [r for r in rules if not rule or r.id in rule]
    failures = check_examples(eng, selected)
    for f in failures:
        typer.echo(f.describe())
    n_examples = sum(len(r.positive) + len(r.negative) for r in selected)
    summary = f"{len(selected)} rules, {n_examples} examples, {len(failures)} failures"
    typer.echo(f"{summary} ({eng.backend} engine)")
    raise typer.Exit(1 if failures else 0)
