"""Run every rule's positive and negative examples through the full engine.

Examples go through the same prefilter, regex, validators and filters as real files, so an example
passing here means the shipped detector really finds (or really ignores) it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from scanners.engine import Engine
from scanners.rulepack import Rule


@dataclass(frozen=True, slots=True)
class ExampleFailure:
    rule_id: str
    kind: str
    """``positive`` (missed) or ``negative`` (falsely reported)."""
    index: int
    reported_as: tuple[str, ...]
    """Rule ids the engine reported for that example instead."""

    def describe(self) -> str:
        what = "missed positive" if self.kind == "positive" else "reported negative"
        other = f" (engine reported: {', '.join(self.reported_as)})" if self.reported_as else ""
        return f"{self.rule_id}: {what} example #{self.index + 1}{other}"


def check_rule(engine: Engine, rule: Rule) -> list[ExampleFailure]:
    failures = []
    for kind, examples in (("positive", rule.positive), ("negative", rule.negative)):
        for i, text in enumerate(examples):
            ids = tuple(f.rule_id for f in engine.scan(text.encode("utf-8"), path="example"))
            found = rule.id in ids
            if found != (kind == "positive"):
                failures.append(ExampleFailure(rule.id, kind, i, ids))
    return failures


def check_examples(engine: Engine, rules: Sequence[Rule] | None = None) -> list[ExampleFailure]:
    out: list[ExampleFailure] = []
    for rule in rules if rules is not None else engine.rules:
        out.extend(check_rule(engine, rule))
    return out
