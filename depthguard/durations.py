"""Durations as people write them in configs and on the command line: ``500ms``, ``30s``, ``10m``,
``1h``, ``2d`` or a plain number of seconds. One parser, so a value means the same in the sidecar's
YAML and in ``depthguard audit verify --heartbeat``."""

from __future__ import annotations

import math
import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_HINT = "use 500ms, 30s, 10m, 1h, 2d or a number of seconds"


def parse_duration(value: object) -> float:
    """Seconds (>= 0); ValueError with a hint otherwise. Long input is not echoed back (it may be a
    mistyped secret)."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration ({_HINT})")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m[1]) * _UNITS[m[2]]
    else:
        shown = f" {value!r}" if isinstance(value, str) and len(value) <= 40 else ""
        raise ValueError(f"not a duration{shown} ({_HINT})")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError("a duration must be a finite number >= 0")
    return seconds
