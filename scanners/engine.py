"""The detection engine: compile every rule once, prefilter, confirm with the exact regex, filter.

Works on bytes and decodes only the findings. The prefilter (Hyperscan or keywords) decides where the
exact regexes run; everything after that is shared, so both prefilters yield identical findings.
Never logs secret values.
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from scanners.allow import Allowlist, line_allows, previous_line_allows
from scanners.entropy import shannon
from scanners.filters import Candidate, first_match
from scanners.finding import Finding
from scanners.prefilter import Prefilter, make_prefilter
from scanners.rulepack import Rule, builtin_documented
from scanners.validators import VALIDATORS

_CONFIDENCE_RANK = {"high": 0, "medium": 1, "low": 2}


@dataclass(slots=True)
class _Hit:
    rule_index: int
    start: int
    end: int
    secret: str
    key: str
    entropy: float
    paired: bool = False


class _Lines:
    """Byte offset -> (line number, line bounds), computed lazily: most files have no findings."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._starts: list[int] | None = None
        self._allowed: dict[int, bool] = {}

    def _index(self) -> list[int]:
        if self._starts is None:
            # line start offsets, computed by C-level iterators (a Python loop over ``find`` cost
            # more than the Hyperscan pass on files with many lines)
            lengths = map((1).__add__, map(len, self._data.split(b"\n")))
            self._starts = list(itertools.accumulate(lengths, initial=0))[:-1]
        return self._starts

    def number(self, offset: int) -> int:
        return bisect.bisect_right(self._index(), offset)

    def bounds(self, offset: int) -> tuple[int, int]:
        """Start and end (exclusive of the newline) of the line holding ``offset``: a bisect on the
        index, so many candidates on one long (minified) line cost no rescans of that line."""
        starts = self._index()
        i = bisect.bisect_right(starts, offset)
        hi = starts[i] - 1 if i < len(starts) else len(self._data)
        return starts[i - 1], hi


    def allowed(self, offset: int) -> bool:
        """Whether an inline allow comment covers the line of ``offset`` (memoised per line: a
        minified file can put thousands of candidates on one line)."""
        lo, hi = self.bounds(offset)
        hit = self._allowed.get(lo)
        if hit is None:
            hit = line_allows(self._data[lo:hi])
            if not hit and lo > 0:
                prev_lo, prev_hi = self.bounds(lo - 1)
                hit = previous_line_allows(self._data[prev_lo:prev_hi])
            self._allowed[lo] = hit
        return hit


class _Columns:
    """Byte offset -> 1-based character column. Offsets arrive mostly in increasing order, so each
    line is decoded incrementally from the previous offset: many findings on one huge (minified or
    hostile) line then cost one pass over it, not one per finding."""

    def __init__(self, data: bytes, lines: _Lines) -> None:
        self._data = data
        self._lines = lines
        self._line_lo = -1
        self._pos = 0
        self._col = 1

    def at(self, offset: int, line_of: int) -> int:
        """Column of ``offset`` counted from the start of the line holding byte ``line_of`` (the
        first byte of a secret for its start; its last byte for its exclusive end)."""
        lo, _ = self._lines.bounds(line_of)
        if lo != self._line_lo or offset < self._pos:
            self._line_lo, self._pos, self._col = lo, lo, 1
        self._col += len(decode_value(self._data[self._pos : offset]))
        self._pos = offset
        return self._col


def decode_value(raw: bytes) -> str:
    """UTF-8 when it is, else latin-1 (every byte maps), so a finding never fails to decode."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class Engine:
    """Holds the compiled rule pack; ``scan`` is pure and safe to call from forked workers."""

    def __init__(
        self,
        rules: Sequence[Rule],
        *,
        engine: str = "auto",
        disabled_filters: frozenset[str] = frozenset(),
        allowlist: Allowlist | None = None,
        prefilter: Prefilter | None = None,
        documented: frozenset[str] | None = None,
    ) -> None:
        self.rules = list(rules)
        self.documented = builtin_documented() if documented is None else documented
        self.prefilter = prefilter or make_prefilter(self.rules, engine)
        self.disabled_filters = disabled_filters
        self.allowlist = allowlist or Allowlist()

    @property
    def backend(self) -> str:
        return self.prefilter.name

    def scan(self, data: bytes, path: str = "", source: str = "file") -> list[Finding]:
        """Findings in ``data`` (already transcoded to UTF-8 or left as raw bytes), in file order."""
        regions = self.prefilter.regions(data)
        if not regions:
            return []
        lines = _Lines(data)
        hits: list[_Hit] = []
        for idx in sorted(regions):
            rule = self.rules[idx]
            for lo, hi, stop in regions[idx]:
                for m in rule.compiled.finditer(data, lo, hi):
                    hit = self._confirm(rule, idx, m, data, lines, path)
                    if hit is not None:
                        hits.append(hit)
                    if m.end() >= stop:  # no match of this rule ends later in the window
                        break
        if not hits:
            return []
        # pairing first: an unpaired pair-only hit must not win a dedupe and then vanish
        hits = self._dedupe(self._pair(hits, lines))
        columns = _Columns(data, lines)
        return [self._finding(h, columns, lines, path, source) for h in hits]

    def _confirm(
        self, rule: Rule, idx: int, m: re.Match[bytes], data: bytes, lines: _Lines, path: str
    ) -> _Hit | None:
        raw = m.group("secret")
        if not raw:
            return None
        start, end = m.span("secret")
        secret = decode_value(raw)
        ent = -1.0  # computed lazily: most candidates die in the filters, most rules set no threshold
        if rule.entropy is not None:
            ent = shannon(secret)
            if ent < rule.entropy:
                return None
        if rule.validator is not None and not VALIDATORS[rule.validator](raw, m):
            return None
        lo, hi = lines.bounds(start)
        if lines.allowed(start) or (end > hi and lines.allowed(end - 1)):
            return None
        line = data[lo : min(hi, lo + 2000)]
        key = ""
        if "key" in rule.compiled.groupindex and m.group("key"):
            key = decode_value(m.group("key"))
        cand = Candidate(secret, decode_value(line), key, rule.generic, path)
        disabled = self.disabled_filters | frozenset(rule.filters_off)
        if "value.documented-example" not in disabled and secret in self.documented:
            return None
        if first_match(cand, disabled) is not None or self.allowlist.allows(secret):
            return None
        return _Hit(idx, start, end, secret, key, ent if ent >= 0 else shannon(secret))

    def _dedupe(self, hits: list[_Hit]) -> list[_Hit]:
        """One finding per secret: a provider rule beats a generic one on overlapping bytes, and among
        rules matching the same bytes the most confident wins, then the first listed (rule files
        set ``confidence`` to settle real overlaps explicitly)."""
        def rank(h: _Hit) -> tuple[int, int, int]:
            r = self.rules[h.rule_index]
            return (int(r.generic), _CONFIDENCE_RANK[r.confidence], h.rule_index)

        kept: list[_Hit] = []
        starts: list[int] = []  # kept hits never overlap each other: sorted by start, a bisect
        for h in sorted(hits, key=rank):  # finds the only two neighbours that could overlap
            i = bisect.bisect_left(starts, h.start)
            if i > 0 and kept[i - 1].end > h.start:
                continue
            if i < len(kept) and kept[i].start < h.end:
                continue
            starts.insert(i, h.start)
            kept.insert(i, h)
        return kept

    def _pair(self, hits: list[_Hit], lines: _Lines) -> list[_Hit]:
        by_rule: dict[str, list[int]] = {}
        for h in hits:
            by_rule.setdefault(self.rules[h.rule_index].id, []).append(lines.number(h.start))
        out = []
        for h in hits:
            rule = self.rules[h.rule_index]
            if rule.pair:
                here = lines.number(h.start)
                h.paired = any(abs(n - here) <= rule.pair_lines for n in by_rule.get(rule.pair, []))
                if rule.pair_required and not h.paired:
                    continue
            out.append(h)
        return out

    def _finding(self, h: _Hit, columns: _Columns, lines: _Lines, path: str, source: str) -> Finding:
        rule = self.rules[h.rule_index]
        column = columns.at(h.start, h.start)
        end_column = columns.at(h.end, h.end - 1)
        confidence = "high" if h.paired else rule.confidence
        return Finding(
            rule_id=rule.id,
            description=rule.description,
            severity=rule.severity,
            confidence=confidence,
            path=path,
            line=lines.number(h.start),
            column=column,
            end_column=end_column,
            secret=h.secret,
            entropy=h.entropy,
            source=source,
        )
