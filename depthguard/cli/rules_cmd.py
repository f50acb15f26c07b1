"""``depthguard rules list|test``: inspect the rule pack and run its examples."""

from __future__ import annotations

from pathlib import Path

import click

from scanners.engine import Engine
from scanners.rulepack import Rule, builtin_rules, check_unique, load_file
from scanners.ruletest import check_examples

files_option = click.option(
    "--file", "-f", "files", multiple=True, type=click.Path(path_type=Path),
    help="Rule file(s) to use instead of the built-in pack.",
)


def _load(files: tuple[Path, ...]) -> list[Rule]:
    if not files:
        return builtin_rules()
    rules: list[Rule] = []
    for f in files:
        rules.extend(load_file(f))
    return check_unique(rules)


@click.group("rules", no_args_is_help=True)
def app() -> None:
    """Inspect and test the detection rules."""


@app.command("list")
@files_option
def list_rules(files: tuple[Path, ...]) -> None:
    """Print every rule: id, severity and description."""
    for rule in _load(files):
        click.echo(f"{rule.id:45} {rule.severity:9} {rule.description}")


@app.command("test")
@files_option
@click.option("--rule", "-r", "rule_ids", multiple=True, help="Only these rule ids.")
@click.option("--engine", type=click.Choice(["auto", "hyperscan", "python"]), default="auto")
def test_rules(files: tuple[Path, ...], rule_ids: tuple[str, ...], engine: str) -> None:
    """Run each rule's positive and negative examples through the full engine."""
    rules = _load(files)
    eng = Engine(rules, engine=engine)
    selected = [r for r in rules if not rule_ids or r.id in rule_ids]
    failures = check_examples(eng, selected)
    for f in failures:
        click.echo(f.describe())
    n_examples = sum(len(r.positive) + len(r.negative) for r in selected)
    summary = f"{len(selected)} rules, {n_examples} examples, {len(failures)} failures"
    click.echo(f"{summary} ({eng.backend} engine)")
    raise click.exceptions.Exit(1 if failures else 0)
