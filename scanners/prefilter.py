"""Multi-pattern prefilters: decide which rules run their exact regex on which byte ranges.

Both prefilters must lead to identical findings (a test proves it on the fixtures): the Hyperscan one
only narrows *where* the exact ``re`` regex runs (the lines around each match end), the keyword one
runs it over whole files. Hyperscan is an optional speed-up, never a different detector.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from scanners.cache import cache_dir as default_cache_dir
from scanners.cache import write_atomic
from scanners.rulepack import Rule

log = logging.getLogger(__name__)

Regions = dict[int, list[tuple[int, int, int]]]
"""Rule index -> sorted, disjoint windows ``(lo, hi, stop)``: run the rule's regex over
``data[lo:hi]`` and stop after a match ending at or past ``stop``; ``stop == hi`` when the prefilter
cannot tell where the last match ends."""

_hs: Any
try:  # Hyperscan wheels exist for Linux x86_64 and macOS; elsewhere the keyword prefilter serves
    import hyperscan as _hs
except ImportError:  # pragma: no cover - depends on the platform
    _hs = None


def hyperscan_available() -> bool:
    return _hs is not None


class Prefilter(Protocol):
    name: str

    def regions(self, data: bytes) -> Regions:
        """Map rule index -> the windows (see ``Regions``) on which to run that rule's regex."""
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
        whole = [(0, len(data), len(data))]
        return {i: whole for i, r in enumerate(self._rules) if _keywords_present(r, lowered, memo)}


def _literal(kw: str) -> bytes:
    return b"".join(b"\\x%02x" % c for c in kw.encode())


class _Database:
    """One compiled Hyperscan block-mode database, cached on disk by the hash of its contents."""

    def __init__(self, exprs: list[bytes], flags: list[int], ids: list[int], labels: list[str],
                 cache_dir: Path | None) -> None:
        self._exprs, self._flags, self._ids, self._labels = exprs, flags, ids, labels
        h = hashlib.sha256(_hs.__version__.encode() + b"\0relaxed-sidecar")
        for e, f, i in zip(exprs, flags, ids, strict=True):
            h.update(b"%d\0%d\0%s\n" % (i, f, e))
        path = (cache_dir if cache_dir is not None else default_cache_dir()) / f"hs-{h.hexdigest()[:32]}.db"
        relaxed_path = path.with_suffix(".relaxed")
        self.relaxed: frozenset[int] = frozenset(ids)  # until known: nothing is taken as exact
        loaded = self._load(path) if path.is_file() else None
        if loaded is not None:
            with contextlib.suppress(OSError, ValueError):
                self.relaxed = frozenset(int(i) for i in relaxed_path.read_text().split())
        else:
            self._relaxed_positions: frozenset[int] = frozenset()
            loaded = self._compile(frozenset())
            self.relaxed = frozenset(ids[i] for i in self._relaxed_positions)
            write_atomic(relaxed_path, "".join(f"{i}\n" for i in sorted(self.relaxed)).encode())
            write_atomic(path, _hs.dumpb(loaded))
        self.db: Any = loaded

    @staticmethod
    def _load(path: Path) -> Any:
        try:
            db = _hs.loadb(path.read_bytes(), _hs.HS_MODE_BLOCK)
            db.scratch = _hs.Scratch(db)  # loadb does not allocate one
            return db
        except Exception:  # a stale or foreign cache file: recompile
            log.debug("ignoring unusable hyperscan cache %s", path)
            return None

    def _compile(self, relaxed: frozenset[int]) -> Any:
        """Compile exactly where Hyperscan can; an expression it rejects (a bounded repeat too large,
        say) is compiled in prefilter mode, which reports a superset of match ends. Findings stay
        identical, because the exact ``re`` regex confirms every candidate window anyway."""
        flags = [f | (_hs.HS_FLAG_PREFILTER if i in relaxed else 0) for i, f in enumerate(self._flags)]
        db = _hs.Database(mode=_hs.HS_MODE_BLOCK)
        try:
            db.compile(expressions=self._exprs, ids=self._ids, elements=len(self._exprs), flags=flags)
            self._relaxed_positions = relaxed
            return db
        except _hs.error as exc:
            bad = self._uncompilable(flags)
            if not bad or bad <= relaxed:
                raise RuntimeError(f"hyperscan cannot compile the rule pack: {exc}") from exc
            for i in bad - relaxed:
                log.debug("%s compiled in hyperscan prefilter mode", self._labels[i])
            return self._compile(relaxed | bad)

    def _uncompilable(self, flags: list[int]) -> frozenset[int]:
        bad = set()
        for i, (e, f) in enumerate(zip(self._exprs, flags, strict=True)):
            probe = _hs.Database(mode=_hs.HS_MODE_BLOCK)
            try:
                probe.compile(expressions=[e], ids=[0], elements=1, flags=[f])
            except _hs.error:
                bad.add(i)
        return frozenset(bad)

    def scan(self, data: bytes, on_match: Any) -> None:
        self.db.scan(data, match_event_handler=on_match)


class HyperscanPrefilter:
    """Hyperscan finds candidate lines; the exact ``re`` regex then runs only there.

    The main database holds every rule regex (or its ``anchor``) plus every keyword as a caseless
    literal. Two kinds of rule stay out of it, because a pattern with no literal to latch onto slows
    the whole pass several-fold: ``second_pass`` rules go into a small second database scanned only
    over files that contain one of their keywords, and ``pair_required`` rules are run only on the
    lines around their partner rule's matches, the only place they can be reported.
    """

    name = "hyperscan"

    def __init__(self, rules: Sequence[Rule], cache_dir: Path | None = None) -> None:
        if _hs is None:
            raise RuntimeError("hyperscan is not installed")
        self._rules = list(rules)
        n = len(self._rules)
        self._keywords = sorted({k for r in self._rules for k in r.keywords})
        kw_id = {k: n + i for i, k in enumerate(self._keywords)}
        self._rule_kw_ids = [frozenset(kw_id[k] for k in r.keywords) for r in self._rules]
        index = {r.id: i for i, r in enumerate(self._rules)}
        self._paired = [
            (i, index[r.pair]) for i, r in enumerate(self._rules) if r.pair_required and r.pair in index
        ]
        paired = {i for i, _ in self._paired}
        second = [i for i, r in enumerate(self._rules) if r.second_pass and i not in paired]
        main = [i for i in range(n) if i not in paired and i not in second]
        line = _hs.HS_FLAG_MULTILINE
        self._main = _Database(
            [(self._rules[i].anchor or self._rules[i].regex).encode() for i in main]
            + [_literal(k) for k in self._keywords],
            [line] * len(main) + [_hs.HS_FLAG_CASELESS | _hs.HS_FLAG_SINGLEMATCH] * len(self._keywords),
            main + [kw_id[k] for k in self._keywords],
            [f"rule {self._rules[i].id}" for i in main] + [f"keyword {k!r}" for k in self._keywords],
            cache_dir,
        )
        self._second = (
            _Database(
                [(self._rules[i].anchor or self._rules[i].regex).encode() for i in second],
                [line] * len(second),
                second,
                [f"rule {self._rules[i].id}" for i in second],
                cache_dir,
            )
            if second
            else None
        )
        relaxed = self._main.relaxed | (self._second.relaxed if self._second is not None else frozenset())
        self._exact = frozenset(
            i for i in main + second
            if not self._rules[i].anchor and not self._rules[i].span and i not in relaxed
        )
        """Rules whose Hyperscan pattern is their own regex, compiled exactly, on single-line windows:
        Hyperscan reports every offset where a match of theirs ends, so ``re`` can stop after the
        last one instead of searching the rest of a long line (the cost on minified files)."""
        self._second_kw: frozenset[int] = frozenset().union(*(self._rule_kw_ids[i] for i in second))
        self._second_always = any(not self._rules[i].keywords for i in second)

    def regions(self, data: bytes) -> Regions:
        hits: list[tuple[int, int]] = []
        append = hits.append

        def on_match(ident: int, start: int, end: int, flags: int, ctx: object) -> None:
            append((ident, end))

        self._main.scan(data, on_match)
        n_rules = len(self._rules)
        seen_kw = {i for i, _ in hits if i >= n_rules}
        if self._second is not None and (self._second_always or self._second_kw & seen_kw):
            self._second.scan(data, on_match)
        if not hits:
            return {}
        ends: dict[int, list[int]] = {}
        for ident, end in hits:
            if ident < n_rules:
                kws = self._rule_kw_ids[ident]
                if not kws or kws & seen_kw:
                    ends.setdefault(ident, []).append(end)
        exact = self._exact
        out: Regions = {
            i: self._windows(data, pos, self._rules[i].span, i in exact) for i, pos in ends.items()
        }
        for ident, partner in self._paired:
            kws = self._rule_kw_ids[ident]
            if partner in ends and (not kws or kws & seen_kw):
                out[ident] = self._around(data, ends[partner], self._rules[ident].pair_lines)
        return out

    @staticmethod
    def _windows(
        data: bytes, positions: list[int], span: int, exact: bool
    ) -> list[tuple[int, int, int]]:
        """The line(s) around each match end, merged; ``span`` widens multi-line rules both ways.
        With ``exact`` ends, a window's stop is the last end in it, else its own end."""
        positions.sort()
        size = len(data)
        ranges: list[tuple[int, int, int]] = []
        hi = -1
        for end in positions:
            if end <= hi:
                if exact:
                    ranges[-1] = (ranges[-1][0], hi, end)
                continue
            lo = data.rfind(b"\n", 0, max(0, end - 1 - span)) + 1
            hi = data.find(b"\n", end + span)  # multi-line: the anchor may be the first line
            if hi < 0:
                hi = size
            if ranges and lo <= ranges[-1][1]:
                ranges[-1] = (ranges[-1][0], hi, end if exact else hi)
            else:
                ranges.append((lo, hi, end if exact else hi))
        return ranges

    @staticmethod
    def _around(data: bytes, positions: list[int], lines: int) -> list[tuple[int, int, int]]:
        """``lines`` whole lines before and after the line of each partner match, merged."""
        ranges: list[tuple[int, int, int]] = []
        for end in sorted(positions):
            lo = data.rfind(b"\n", 0, max(0, end - 1)) + 1
            for _ in range(lines):
                if lo == 0:
                    break
                lo = data.rfind(b"\n", 0, lo - 1) + 1
            hi, pos = len(data), end
            for _ in range(lines + 1):  # to the end of the partner's line, then ``lines`` more
                nxt = data.find(b"\n", pos)
                if nxt < 0:
                    hi = len(data)
                    break
                hi, pos = nxt, nxt + 1
            if ranges and lo <= ranges[-1][1]:
                top = max(hi, ranges[-1][1])
                ranges[-1] = (ranges[-1][0], top, top)
            else:
                ranges.append((lo, hi, hi))
        return ranges


def make_prefilter(rules: Sequence[Rule], engine: str = "auto") -> Prefilter:
    """``auto`` picks Hyperscan when it imports; ``hyperscan`` or ``python`` force one."""
    if engine not in ("auto", "hyperscan", "python"):
        raise ValueError(f"unknown engine {engine!r}")
    if engine == "python" or (engine == "auto" and _hs is None):
        return KeywordPrefilter(rules)
    return HyperscanPrefilter(rules)
