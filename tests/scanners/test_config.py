"""``.depthguard.toml``: discovery upward, every key validated, errors name file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from depthguard.errors import ConfigError
from scanners.config import find_config, load_config, parse_size


def test_found_upward_and_parsed(tmp_path: Path) -> None:
    cfg_file = tmp_path / ".depthguard.toml"
    cfg_file.write_text(
        """
[scan]
exclude = ["fixtures/"]
max_file_size = "2MB"
gitignore = false
[rules]
disable = ["generic-password"]
filters_off = ["generic.uuid"]
[[rules.custom]]
id = "acme-token"
description = "ACME internal token"
severity = "high"
keywords = ["acme_"]
regex = '''\\b(?P<secret>acme_[a-z0-9]{24})\\b'''
positive = ["t = acme_0a1b2c3d4e5f6g7h8i9j0k1l"]
negative = ["t = acme_short"]
[allow]
values = ["harmless"]
regexes = ["^test_"]
"""
    )
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert find_config(deep) == cfg_file
    cfg = load_config(cfg_file)
    assert cfg.exclude == ["fixtures/"] and cfg.max_file_size == 2 * 1024 * 1024 and cfg.gitignore is False
    assert cfg.disable == ["generic-password"] and [r.id for r in cfg.custom_rules] == ["acme-token"]
    assert cfg.allow_values == ["harmless"] and cfg.allow_regexes == ["^test_"]


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("[scan]\nexlude = []\n", "scan.exlude"),
        ("[scna]\n", "scna"),
        ("[scan]\nmax_file_size = 'huge'\n", "scan.max_file_size"),
        ("[scan]\ngitignore = 'yes'\n", "scan.gitignore"),
        ("[rules]\nfilters_off = ['no.such.filter']\n", "rules.filters_off"),
        ("[allow]\nregexes = ['(unclosed']\n", "allow.regexes[0]"),
        ("[rules]\n[[rules.custom]]\nid = 'x-y'\n", "rules"),
        ("not toml at all [", "invalid TOML"),
    ],
)
def test_invalid_config_names_file_and_key(tmp_path: Path, text: str, where: str) -> None:
    f = tmp_path / ".depthguard.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(f)
    assert str(f) in str(err.value) and where in str(err.value)


def test_sizes() -> None:
    assert parse_size("10MB") == 10 * 1024**2
    assert parse_size("512k") == 512 * 1024
    assert parse_size(1000) == 1000
    with pytest.raises(ConfigError):
        parse_size("0")
