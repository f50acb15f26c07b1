"""Every rule's positive and negative examples, through the full engine, on both prefilters."""

from __future__ import annotations

from pathlib import Path

import pytest

from scanners.engine import Engine
from scanners.rulepack import builtin_rules, load_file
from scanners.ruletest import check_rule

RULES = builtin_rules()


@pytest.mark.parametrize("rule", RULES, ids=[r.id for r in RULES])
def test_rule_examples(engine: Engine, rule: object) -> None:
    failures = check_rule(engine, rule)  # type: ignore[arg-type]
    assert not failures, "\n".join(f.describe() for f in failures)


def test_shipped_pack_passes_the_strict_loader() -> None:
    """Start-up skips compiling the shipped regexes; this is where they are compiled and checked."""
    assert len(RULES) >= 200
    for path in sorted((Path(__file__).parents[2] / "scanners" / "rules").glob("*.toml")):
        load_file(path, compile_now=True)
    for rule in RULES:
        assert rule.positive and rule.negative, rule.id
        assert "secret" in rule.compiled.groupindex, rule.id
