"""Small file-system helpers shared by the store, the token keys and rendered secret files."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Flush a directory entry (a rename or link into it) to disk: without it, a crash right after
    ``os.replace`` can lose the new name even though the file's data was synced."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
