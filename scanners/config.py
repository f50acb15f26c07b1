"""``.depthguard.toml``: per-repository scanner settings, found upward from the scan target.

Every key is checked: an unknown key or a wrong type is a ``ConfigError`` naming the file and the key
path, because a misspelt exclude that silently does nothing is worse than a refusal.

    [scan]
    exclude = ["tests/fixtures/**", "*.min.js"]   # gitignore-style, relative to the scanned root
    max_file_size = "10MB"
    gitignore = true

    [rules]
    disable = ["generic-password"]                 # rule ids
    filters_off = ["generic.uuid"]                 # filter ids (scanners/filters.py)
    files = ["ci/extra-rules.toml"]                # more rule files, relative to this config
    [[rules.custom]]                               # inline rules, same schema as the pack
    id = "acme-token" ...

    [allow]
    values = ["not-a-secret-but-looks-like-one"]
    regexes = ["^test_[a-z]+$"]
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from depthguard.errors import ConfigError, RuleError
from scanners.filters import FILTERS
from scanners.rulepack import Rule, load_file, parse_rule
from scanners.sources.directory import DEFAULT_MAX_FILE_SIZE

CONFIG_NAME = ".depthguard.toml"
_SCHEMA: dict[str, dict[str, type | tuple[type, ...]]] = {
    "scan": {"exclude": list, "max_file_size": (str, int), "gitignore": bool},
    "rules": {"disable": list, "filters_off": list, "files": list, "custom": list},
    "allow": {"values": list, "regexes": list},
}
_SIZE = re.compile(r"^\s*(\d+)\s*([kKmMgG]?)(i?[bB])?\s*$")


@dataclass
class ScanConfig:
    path: str | None = None
    exclude: list[str] = field(default_factory=list)
    max_file_size: int = DEFAULT_MAX_FILE_SIZE
    gitignore: bool = True
    disable: list[str] = field(default_factory=list)
    filters_off: list[str] = field(default_factory=list)
    custom_rules: list[Rule] = field(default_factory=list)
    allow_values: list[str] = field(default_factory=list)
    allow_regexes: list[str] = field(default_factory=list)


def parse_size(value: str | int, file: str = "", key: str = "") -> int:
    """``10MB``, ``512k``, ``1GiB`` or a plain byte count."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    m = _SIZE.match(str(value))
    if not m or int(m.group(1)) <= 0:
        raise ConfigError(file, key, f"not a size: {value!r} (use e.g. 10MB, 512k or a byte count)")
    factor = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[m.group(2).lower()]
    return int(m.group(1)) * factor


def find_config(start: Path) -> Path | None:
    """The nearest ``.depthguard.toml`` at or above ``start`` (a file's directory for a file)."""
    here = start.resolve()
    if here.is_file():
        here = here.parent
    for d in (here, *here.parents):
        candidate = d / CONFIG_NAME
        if candidate.is_file():
            return candidate
    return None


def _check_types(data: dict[str, Any], file: str) -> None:
    for section, value in data.items():
        if section not in _SCHEMA:
            raise ConfigError(file, section, f"unknown section (expected one of {sorted(_SCHEMA)})")
        if not isinstance(value, dict):
            raise ConfigError(file, section, "must be a table")
        for key, item in value.items():
            expected = _SCHEMA[section].get(key)
            if expected is None:
                known = sorted(_SCHEMA[section])
                raise ConfigError(file, f"{section}.{key}", f"unknown key (expected one of {known})")
            if not isinstance(item, expected):
                raise ConfigError(file, f"{section}.{key}", f"wrong type {type(item).__name__}")
            if isinstance(item, list) and key != "custom" and not all(isinstance(v, str) for v in item):
                raise ConfigError(file, f"{section}.{key}", "must be a list of strings")


def load_config(path: Path) -> ScanConfig:
    file = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(file, "", "no such file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(file, "", f"cannot read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, "", f"invalid TOML: {exc}") from exc
    _check_types(data, file)
    scan, rules, allow = data.get("scan", {}), data.get("rules", {}), data.get("allow", {})
    cfg = ScanConfig(path=file)
    cfg.exclude = list(scan.get("exclude", []))
    if "max_file_size" in scan:
        cfg.max_file_size = parse_size(scan["max_file_size"], file, "scan.max_file_size")
    cfg.gitignore = scan.get("gitignore", True)
    cfg.disable = list(rules.get("disable", []))
    cfg.filters_off = list(rules.get("filters_off", []))
    for fid in cfg.filters_off:
        if fid not in FILTERS and fid != "value.documented-example":
            raise ConfigError(file, "rules.filters_off", f"unknown filter {fid!r}")
    try:
        for rel in rules.get("files", []):
            cfg.custom_rules.extend(load_file(path.parent / rel))
        for i, table in enumerate(rules.get("custom", [])):
            if not isinstance(table, dict):
                raise ConfigError(file, f"rules.custom[{i}]", "must be a table")
            cfg.custom_rules.append(parse_rule(table, file))
    except RuleError as exc:
        raise ConfigError(file, "rules", str(exc)) from exc
    cfg.allow_values = list(allow.get("values", []))
    for i, rx in enumerate(allow.get("regexes", [])):
        try:
            re.compile(rx)
        except re.error as exc:
            raise ConfigError(file, f"allow.regexes[{i}]", f"invalid regex: {exc}") from exc
    cfg.allow_regexes = list(allow.get("regexes", []))
    return cfg
