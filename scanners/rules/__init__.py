"""Rule pack data files (``*.toml``), one rule per ``[[rule]]`` table; loaded by ``scanners.rulepack``."""
