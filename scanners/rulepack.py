"""Load and check the rule pack: TOML data files, one ``[[rule]]`` table per rule.

Rules are data so that adding a detector never needs code; code is only referenced (validators,
filters) by stable ids. Loading fails loudly, naming the file and rule, because a silently skipped
rule is a silent miss.
"""

from __future__ import annotations

import functools
import hashlib
import pickle
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from depthguard.errors import RuleError
from scanners.cache import cache_dir, write_atomic

SEVERITIES = ("critical", "high", "medium", "low")
CONFIDENCES = ("high", "medium", "low")
_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,79}$")
_KEYS = {
    "id", "description", "severity", "confidence", "regex", "keywords", "entropy", "validator",
    "generic", "span", "anchor", "second_pass", "pair", "pair_lines", "pair_required", "positive",
    "negative", "filters_off",
}
_REQUIRED = ("id", "description", "severity", "regex", "keywords", "positive", "negative")


@dataclass(frozen=True, slots=True)
class Rule:
    """One detector. The regex's ``secret`` group is the credential itself."""

    id: str
    description: str
    severity: str
    regex: str
    keywords: tuple[str, ...]
    """Lower-case byte strings; the rule runs on a file only if one occurs in it (case-insensitive).
    Empty means the rule always runs."""
    positive: tuple[str, ...]
    negative: tuple[str, ...]
    confidence: str = "high"
    entropy: float | None = None
    """Minimum Shannon entropy (bits per character) of the secret."""
    validator: str | None = None
    """Id of a structural check in ``scanners.validators`` (checksums, JSON/base64 structure)."""
    generic: bool = False
    """Generic assignment rule: hash/UUID/dummy/code-reference filters apply in addition."""
    span: int = 0
    """Bytes a multi-line match (PEM keys, JSON key files) may extend from a Hyperscan match end, in
    either direction; 0 means the match lies on one line."""
    anchor: str | None = None
    """A small regex given to Hyperscan instead of ``regex``. Every match of ``regex`` must contain an
    anchor match ending on the match's last line; ``re`` still decides. For rules whose full regex
    makes the combined Hyperscan database slow to compile (JWTs, PEM bodies, generic assignments)."""
    second_pass: bool = False
    """The regex has no literal Hyperscan can latch onto: scan it in a second, small database and only
    over files containing one of its keywords, so it does not slow the main pass for every file."""
    pair: str | None = None
    """Id of a companion rule (e.g. the AWS key id for the AWS secret) that raises confidence when near."""
    pair_lines: int = 5
    pair_required: bool = False
    """Report only when the companion rule matched within ``pair_lines`` lines."""
    filters_off: tuple[str, ...] = ()
    source: str = ""

    @property
    def compiled(self) -> re.Pattern[bytes]:
        """The exact regex, compiled on first use: most rules never match a given tree, and
        compiling all ~400 up front would double the start-up of a small scan."""
        return compile_regex(self.regex)


_COMPILED: dict[str, re.Pattern[bytes]] = {}


def compile_regex(regex: str) -> re.Pattern[bytes]:
    pattern = _COMPILED.get(regex)
    if pattern is None:
        pattern = _COMPILED[regex] = re.compile(regex.encode(), re.MULTILINE)
    return pattern


def _fail(source: str, rule_id: str, reason: str) -> RuleError:
    return RuleError(f"{source}: rule {rule_id!r}: {reason}")


def _str_list(raw: dict[str, Any], key: str, source: str, rid: str) -> tuple[str, ...]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(source, rid, f"{key} must be a list of strings")
    return tuple(value)


def parse_rule(raw: dict[str, Any], source: str, *, compile_now: bool = True) -> Rule:
    """Validate one ``[[rule]]`` table. ``compile_now`` also compiles the regexes (as bytes: the
    engine works on bytes); the shipped pack skips that at start-up because the test-suite compiles
    and exercises every shipped rule."""
    rid = str(raw.get("id", "?"))
    unknown = set(raw) - _KEYS
    if unknown:
        raise _fail(source, rid, f"unknown key(s) {sorted(unknown)}")
    for key in _REQUIRED:
        if key not in raw:
            raise _fail(source, rid, f"missing required key {key!r}")
    if not _ID.match(rid):
        raise _fail(source, rid, "id must be lower-case letters, digits and dashes")
    if raw["severity"] not in SEVERITIES:
        raise _fail(source, rid, f"severity must be one of {SEVERITIES}")
    confidence = raw.get("confidence", "medium" if raw.get("generic") else "high")
    if confidence not in CONFIDENCES:
        raise _fail(source, rid, f"confidence must be one of {CONFIDENCES}")
    keywords = _str_list(raw, "keywords", source, rid)
    if any(k != k.lower() or not k.isascii() or not k for k in keywords):
        raise _fail(source, rid, "keywords must be non-empty lower-case ASCII")
    positive = _str_list(raw, "positive", source, rid)
    negative = _str_list(raw, "negative", source, rid)
    if not positive or not negative:
        raise _fail(source, rid, "needs at least one positive and one negative example")
    if not isinstance(raw["regex"], str):
        raise _fail(source, rid, "regex must be a string")
    anchor = raw.get("anchor")
    if compile_now:
        try:
            compiled = compile_regex(raw["regex"])
        except re.error as exc:
            raise _fail(source, rid, f"regex does not compile: {exc}") from exc
        if "secret" not in compiled.groupindex:
            raise _fail(source, rid, "regex needs a named group (?P<secret>...)")
        if anchor is not None:
            try:
                re.compile(str(anchor).encode(), re.MULTILINE)
            except re.error as exc:
                raise _fail(source, rid, f"anchor does not compile: {exc}") from exc
    entropy = raw.get("entropy")
    if entropy is not None and not isinstance(entropy, (int, float)):
        raise _fail(source, rid, "entropy must be a number")
    from scanners.validators import VALIDATORS  # local: validators import nothing from here

    validator = raw.get("validator")
    if validator is not None and validator not in VALIDATORS:
        raise _fail(source, rid, f"unknown validator {validator!r}")
    return Rule(
        id=rid,
        description=str(raw["description"]),
        severity=raw["severity"],
        confidence=confidence,
        regex=raw["regex"],
        keywords=keywords,
        entropy=float(entropy) if entropy is not None else None,
        validator=validator,
        generic=bool(raw.get("generic", False)),
        span=int(raw.get("span", 0)),
        anchor=str(anchor) if anchor is not None else None,
        second_pass=bool(raw.get("second_pass", False)),
        pair=raw.get("pair"),
        pair_lines=int(raw.get("pair_lines", 5)),
        pair_required=bool(raw.get("pair_required", False)),
        positive=positive,
        negative=negative,
        filters_off=_str_list(raw, "filters_off", source, rid),
        source=source,
    )


def load_file(path: Path | str, text: str | None = None, *, compile_now: bool = True) -> list[Rule]:
    """Parse one rule file; ``text`` lets packaged resources be read without a filesystem path."""
    source = str(path)
    try:
        data = tomllib.loads(text if text is not None else Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleError(f"{source}: cannot read rule file: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise RuleError(f"{source}: invalid TOML: {exc}") from exc
    unknown = set(data) - {"rule", "documented_examples"}
    if unknown:
        raise RuleError(f"{source}: unknown top-level key(s) {sorted(unknown)}")
    tables = data.get("rule", [])
    if not isinstance(tables, list):
        raise RuleError(f"{source}: 'rule' must be an array of tables ([[rule]])")
    return [parse_rule(t, source, compile_now=compile_now) for t in tables]


def load_documented(path: Path | str, text: str | None = None) -> set[str]:
    """Top-level ``documented_examples``: vendor-published sample values that are never findings."""
    raw = text if text is not None else Path(path).read_text(encoding="utf-8")
    values = tomllib.loads(raw).get("documented_examples", [])
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise RuleError(f"{path}: documented_examples must be a list of strings")
    return set(values)


def check_unique(rules: Iterable[Rule]) -> list[Rule]:
    """Reject duplicate ids and dangling ``pair`` references across all loaded rules."""
    seen: dict[str, Rule] = {}
    out = list(rules)
    for rule in out:
        if rule.id in seen:
            raise RuleError(f"{rule.source}: rule {rule.id!r} already defined in {seen[rule.id].source}")
        seen[rule.id] = rule
    for rule in out:
        if rule.pair and rule.pair not in seen:
            raise _fail(rule.source, rule.id, f"pair names unknown rule {rule.pair!r}")
    return out


def _builtin_texts() -> list[tuple[str, str]]:
    pkg = resources.files("scanners.rules")
    return [
        (f"scanners/rules/{e.name}", e.read_text(encoding="utf-8"))
        for e in sorted(pkg.iterdir(), key=lambda p: p.name)
        if e.name.endswith(".toml")
    ]


@functools.cache
def _builtin_pack() -> tuple[list[Rule], frozenset[str]]:
    """Parse the shipped TOML once per process; a pickled copy keyed by the files' hash makes later
    start-ups skip TOML parsing (half of a small scan's start-up otherwise)."""
    texts = _builtin_texts()
    digest = hashlib.sha256("\0".join(f"{n}\0{t}" for n, t in texts).encode()).hexdigest()[:32]
    path = cache_dir() / f"rules-{digest}.pickle"
    if path.is_file():
        try:
            cached_rules, cached_documented = pickle.loads(path.read_bytes())
            return list(cached_rules), frozenset(cached_documented)
        except Exception:  # unreadable or from another version: parse again
            pass
    rules: list[Rule] = []
    documented: set[str] = set()
    for name, text in texts:
        rules.extend(load_file(name, text, compile_now=False))
        documented |= load_documented(name, text)
    pack = (check_unique(rules), frozenset(documented))
    write_atomic(path, pickle.dumps(pack))
    return pack


def builtin_rules() -> list[Rule]:
    """The shipped rule pack, in a stable order (file name, then position)."""
    return list(_builtin_pack()[0])


def builtin_documented() -> frozenset[str]:
    """Every shipped file's ``documented_examples``, merged."""
    return _builtin_pack()[1]
