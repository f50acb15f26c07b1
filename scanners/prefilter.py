"""Multi-pattern prefilters: decide which rules run their exact regex on which byte ranges.

Both prefilters must lead to identical findings (a test proves it on the fixtures): the Hyperscan one
only narrows *where* the exact ``re`` regex runs (the lines around each match end), the keyword one
runs it over whole files. Hyperscan is an optional speed-up, never a different detector.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from scanners.rulepack import Rule, pack_digest

log = logging.getLogger(__name__)

Regions = dict[int, list[tuple[int, int]]]

try:  # Hyperscan wheels exist for Linux x86_64 and macOS; elsewhere the keyword prefilter serves
    import hyperscan as _hs
except ImportError:  # pragma: no cover - depends on the platform
    _hs = None


def hyperscan_available() -> bool:
    return _hs is not None


class Prefilter(Protocol):
    name: str

    def regions(self, data: bytes) -> Regions:
        """Map rule index -> sorted, disjoint byte ranges on which to run that rule's regex."""
        ...


def _keywords_present(rule: Rule, lowered: bytes, memo: dict[str, bool]) -> bool:
    if not rule.keywords:
        return True
    for kw in rule.keywords:
        hit = memo.get(kw)
        if hit is None:
            hit = memo[kw] = kw.encode() in lowered
        if hit:
            return True
    return False


class KeywordPrefilter:
    """Pure Python: a rule runs over the whole file when one of its keywords occurs in it."""

    name = "keyword"

    def __init__(self, rules: Sequence[Rule]) -> None:
        self._rules = list(rules)

    def regions(self, data: bytes) -> Regions:
        lowered = data.lower()
        memo: dict[str, bool] = {}
        whole = [(0, len(data))]
        return {i: whole for i, r in enumerate(self._rules) if _keywords_present(r, lowered, memo)}


def _literal(kw: str) -> bytes:
    return b"".join(b"\\x%02x" % c for c in kw.encode())


class HyperscanPrefilter:
    """One Hyperscan block-mode database of every rule regex plus every keyword (as caseless literals).

    For each match end of a rule whose keyword occurred in the file, the exact regex re-runs on the
    line(s) around that end (``Rule.span`` bytes further back for multi-line rules).
    """

    name = "hyperscan"

    def __init__(self, rules: Sequence[Rule], cache_dir: Path | None = None) -> None:
        if _hs is None:
            raise RuntimeError("hyperscan is not installed")
        self._rules = list(rules)
        self._keywords = sorted({k for r in self._rules for k in r.keywords})
        self._kw_index = {k: len(self._rules) + i for i, k in enumerate(self._keywords)}
        self._rule_kw_ids = [frozenset(self._kw_index[k] for k in r.keywords) for r in self._rules]
        self._db = self._load_or_compile(cache_dir)

    def _expressions(self) -> tuple[list[bytes], list[int]]:
        exprs = [r.regex.encode() for r in self._rules] + [_literal(k) for k in self._keywords]
        flags = [_hs.HS_FLAG_MULTILINE] * len(self._rules) + [
            _hs.HS_FLAG_CASELESS | _hs.HS_FLAG_SINGLEMATCH
        ] * len(self._keywords)
        return exprs, flags

    def _load_or_compile(self, cache_dir: Path | None) -> Any:
        exprs, flags = self._expressions()
        key = hashlib.sha256(
            (pack_digest(self._rules) + "|" + "|".join(self._keywords) + "|" + _hs.__version__).encode()
        ).hexdigest()[:32]
        directory = cache_dir if cache_dir is not None else _default_cache_dir()
        path = directory / f"hs-{key}.db" if directory else None
        if path is not None and path.is_file():
            try:
                cached = _hs.loadb(path.read_bytes(), _hs.HS_MODE_BLOCK)
                cached.scratch = _hs.Scratch(cached)  # loadb does not allocate one
                return cached
            except Exception:  # a stale or foreign cache file: recompile below
                log.debug("ignoring unusable hyperscan cache %s", path)
        db = _hs.Database(mode=_hs.HS_MODE_BLOCK)
        try:
            db.compile(expressions=exprs, ids=list(range(len(exprs))), elements=len(exprs), flags=flags)
        except _hs.error as exc:
            bad = self._find_uncompilable(exprs, flags)
            raise RuntimeError(f"hyperscan cannot compile rule {bad}: {exc}") from exc
        if path is not None:
            _atomic_write(path, _hs.dumpb(db))
        return db

    def _find_uncompilable(self, exprs: list[bytes], flags: list[int]) -> str:
        for i, (e, f) in enumerate(zip(exprs, flags, strict=True)):
            probe = _hs.Database(mode=_hs.HS_MODE_BLOCK)
            try:
                probe.compile(expressions=[e], ids=[0], elements=1, flags=[f])
            except _hs.error:
                return self._rules[i].id if i < len(self._rules) else f"keyword {self._keywords[i]!r}"
        return "?"

    def regions(self, data: bytes) -> Regions:
        hits: list[tuple[int, int]] = []
        append = hits.append

        def on_match(ident: int, start: int, end: int, flags: int, ctx: object) -> None:
            append((ident, end))

        self._db.scan(data, match_event_handler=on_match)
        if not hits:
            return {}
        n_rules = len(self._rules)
        seen_kw = {i for i, _ in hits if i >= n_rules}
        ends: dict[int, list[int]] = {}
        for ident, end in hits:
            if ident < n_rules:
                ends.setdefault(ident, []).append(end)
        out: Regions = {}
        size = len(data)
        for ident, positions in ends.items():
            kws = self._rule_kw_ids[ident]
            if kws and not (kws & seen_kw):
                continue
            span = self._rules[ident].span
            positions.sort()
            ranges: list[tuple[int, int]] = []
            hi = -1
            for end in positions:
                if end <= hi:
                    continue
                lo = data.rfind(b"\n", 0, max(0, end - 1 - span)) + 1
                hi = data.find(b"\n", end)
                if hi < 0:
                    hi = size
                if ranges and lo <= ranges[-1][1]:
                    ranges[-1] = (ranges[-1][0], hi)
                else:
                    ranges.append((lo, hi))
            out[ident] = ranges
        return out


def _default_cache_dir() -> Path | None:
    base = os.environ.get("DEPTHGUARD_CACHE_DIR") or os.environ.get("XDG_CACHE_HOME")
    return Path(base) / "depthguard" if base else Path.home() / ".cache" / "depthguard"


def _atomic_write(path: Path, blob: bytes) -> None:
    """Best effort: a read-only home must not stop a scan, it only costs the compile next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".hs-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
        os.replace(tmp, path)
    except OSError as exc:
        log.debug("cannot cache hyperscan database: %s", exc)


def make_prefilter(rules: Sequence[Rule], engine: str = "auto") -> Prefilter:
    """``auto`` picks Hyperscan when it imports; ``hyperscan`` or ``python`` force one."""
    if engine not in ("auto", "hyperscan", "python"):
        raise ValueError(f"unknown engine {engine!r}")
    if engine == "python" or (engine == "auto" and _hs is None):
        return KeywordPrefilter(rules)
    return HyperscanPrefilter(rules)
