"""Registry of structural validators, referenced from rules by id.

Every module in this package may define ``VALIDATORS: dict[str, Validator]``; they are merged here, so
a rule family adds its checks by adding one module. Duplicate ids are an error, not an override.
"""

from __future__ import annotations

import importlib
import pkgutil

from scanners.validators.core import Validator, base62_crc32

VALIDATORS: dict[str, Validator] = {}

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    _module = importlib.import_module(f"{__name__}.{_info.name}")
    for _vid, _fn in getattr(_module, "VALIDATORS", {}).items():
        if _vid in VALIDATORS:
            raise RuntimeError(f"validator id {_vid!r} defined twice (second in {_info.name})")
        VALIDATORS[_vid] = _fn

__all__ = ["VALIDATORS", "Validator", "base62_crc32"]
