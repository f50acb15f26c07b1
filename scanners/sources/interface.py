"""What every source hands the engine: bytes plus where they came from.

Sources never decide what is a secret; they only find bytes and describe their location, so that
every target (directory, git history, image layer, environment) shares one detector.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from scanners.result import ScanStats


@dataclass(frozen=True, slots=True)
class Location:
    path: str
    """Relative to the scanned root (for env: ``env:NAME``)."""
    source: str = "file"
    commit: dict[str, Any] | None = None
    layer: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Chunk:
    location: Location
    data: bytes
    """Already prepared for scanning (binary skipped, UTF-16 transcoded)."""


class Source(ABC):
    """A scan target. ``stats`` collects what was skipped and why; skipping is never fatal."""

    def __init__(self) -> None:
        self.stats = ScanStats()

    @abstractmethod
    def chunks(self) -> Iterator[Chunk]:
        """Yield every piece of content to scan."""
