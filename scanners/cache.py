"""The on-disk cache for derived data (compiled Hyperscan databases, the parsed rule pack).

Everything here is keyed by a hash of what it was derived from, so a stale file is never used; and
everything is best effort: an unwritable home costs a recompile, never a failed scan.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    """``$DEPTHGUARD_CACHE_DIR``, else ``$XDG_CACHE_HOME/depthguard``, else ``~/.cache/depthguard``."""
    explicit = os.environ.get("DEPTHGUARD_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "depthguard"


def write_atomic(path: Path, blob: bytes) -> None:
    """Write to a temp name and rename, so a concurrent reader never sees half a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
        os.replace(tmp, path)
    except OSError:
        pass
