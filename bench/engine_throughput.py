#!/usr/bin/env python3
"""In-process throughput of depthguard's detection engine, and where its time goes, per rule.

Why this exists: ``bench/scan_dir.py`` times whole CLI runs (walk, read, workers, report), which says
*how fast* but not *why*. This script takes I/O and process start-up out of the picture -- every file
of the tree is read into memory first -- and then:

1. times ``Engine.scan`` over all files (the real code path, untouched): MB/s per core, because the
   loop is single-threaded and CPU seconds are what a worker pool divides;
2. re-runs an *instrumented copy* of the scan loop that calls the real prefilter, counts Hyperscan
   match callbacks per rule (a Python call each: the usual hidden cost), and times the exact-regex
   confirmation (``finditer``) and the post-match checks (``_confirm``) per rule.

The engine is never edited or monkey-patched; the copy only reaches into a few private attributes of
the Hyperscan prefilter (``_db``, ``_rules``, ``_rule_kw_ids``) to count callbacks. If the engine's
internals change, the headline timing (step 1) stays right and step 2 says what it could not do.

A rule whose Hyperscan match ends far outnumber its regex matches ("ends per match") usually has an
open-ended trailing repetition (``[A-Za-z0-9]{20,}``, ``.*``) or no end boundary: Hyperscan reports
*every* end offset, so a 10 kB base64 blob costs thousands of Python callbacks. That is the first
thing to fix.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = REPO / "bench" / ".corpus" / "tree"


@dataclass
class RuleStats:
    """Per-rule counters of the instrumented pass (times in seconds)."""

    rule_id: str
    ends: int = 0
    """Hyperscan match callbacks for the rule's regex, over all files."""
    ends_gated: int = 0
    """Of those, callbacks in files where none of the rule's keywords occur (wasted work)."""
    files_with_ends: int = 0
    max_ends_in_file: int = 0
    max_ends_path: str = ""
    regions: int = 0
    region_bytes: int = 0
    regex_matches: int = 0
    confirmed: int = 0
    regex_s: float = 0.0
    confirm_s: float = 0.0

    @property
    def ends_per_match(self) -> float:
        return (self.ends - self.ends_gated) / max(1, self.regex_matches)


def load_tree(root: Path, max_files: int | None, max_file_mb: float) -> list[tuple[str, bytes]]:
    """Every regular file under ``root`` (symlinks not followed), read once, up front."""
    out: list[tuple[str, bytes]] = []
    limit = int(max_file_mb * 1024 * 1024)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            if os.path.getsize(path) > limit:
                continue
            with open(path, "rb") as fh:
                out.append((path, fh.read()))
            if max_files is not None and len(out) >= max_files:
                return out
    return out


def time_full_scan(engine: Any, files: Sequence[tuple[str, bytes]]) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (this process) and findings of one pass of the real ``Engine.scan``."""
    findings = 0
    c0, w0 = time.process_time(), time.perf_counter()
    for path, data in files:
        findings += len(engine.scan(data, path))
    return time.perf_counter() - w0, time.process_time() - c0, findings


def instrumented_pass(engine: Any, files: Sequence[tuple[str, bytes]]) -> dict[str, Any]:
    """A copy of ``Engine.scan``'s loop with per-stage and per-rule timers and callback counters."""
    from scanners.engine import _Lines  # private helper, used exactly as Engine.scan does

    rules = engine.rules
    pf = engine.prefilter
    db = getattr(pf, "_db", None)
    rule_kw_ids: Sequence[frozenset[int]] | None = getattr(pf, "_rule_kw_ids", None)
    n_rules = len(rules)
    stats = [RuleStats(r.id) for r in rules]
    kw_names: list[str] = list(getattr(pf, "_keywords", []))
    kw_hits = [0] * len(kw_names)
    stage = {"prefilter_s": 0.0, "count_scan_s": 0.0, "regex_s": 0.0, "confirm_s": 0.0, "post_s": 0.0}
    total_ends = 0
    findings = 0
    for path, data in files:
        # 1. The real prefilter (Hyperscan scan + callbacks + region building), timed as a whole.
        t = time.perf_counter()
        regions = pf.regions(data)
        stage["prefilter_s"] += time.perf_counter() - t

        # 2. A second Hyperscan scan whose callback only counts, to attribute callbacks to rules.
        if db is not None:
            counts = [0] * (n_rules + len(kw_names))

            def on_match(
                ident: int, start: int, end: int, flags: int, ctx: object, c: list[int] = counts
            ) -> None:
                c[ident] += 1

            t = time.perf_counter()
            db.scan(data, match_event_handler=on_match)
            stage["count_scan_s"] += time.perf_counter() - t
            seen_kw = {i for i in range(n_rules, len(counts)) if counts[i]}
            for k in seen_kw:
                kw_hits[k - n_rules] += 1
            for i in range(n_rules):
                n = counts[i]
                if not n:
                    continue
                s = stats[i]
                total_ends += n
                s.ends += n
                s.files_with_ends += 1
                if n > s.max_ends_in_file:
                    s.max_ends_in_file, s.max_ends_path = n, path
                kws = rule_kw_ids[i] if rule_kw_ids is not None else frozenset()
                if kws and not (kws & seen_kw):
                    s.ends_gated += n

        # 3. Exact-regex confirmation per rule, then the post-match checks, as Engine.scan runs them.
        if not regions:
            continue
        lines = _Lines(data)
        hits = []
        for idx in sorted(regions):
            rule = rules[idx]
            s = stats[idx]
            for lo, hi, stop in regions[idx]:
                s.regions += 1
                s.region_bytes += hi - lo
                t = time.perf_counter()
                matches = []
                for m in rule.compiled.finditer(data, lo, hi):  # as the engine does
                    matches.append(m)
                    if m.end() >= stop:
                        break
                dt = time.perf_counter() - t
                s.regex_s += dt
                stage["regex_s"] += dt
                s.regex_matches += len(matches)
                for m in matches:
                    t = time.perf_counter()
                    hit = engine._confirm(rule, idx, m, data, lines, path)
                    dt = time.perf_counter() - t
                    s.confirm_s += dt
                    stage["confirm_s"] += dt
                    if hit is not None:
                        s.confirmed += 1
                        hits.append(hit)
        if hits:
            t = time.perf_counter()
            kept = engine._pair(engine._dedupe(hits), lines)
            findings += len([engine._finding(h, data, lines, path, "file") for h in kept])
            stage["post_s"] += time.perf_counter() - t
    return {
        "stages": stage,
        "callbacks_total": total_ends,
        "counted_callbacks": db is not None,
        "findings": findings,
        "rules": stats,
        "keyword_files": dict(sorted(zip(kw_names, kw_hits, strict=True), key=lambda kv: -kv[1])[:15]),
    }


def variable_tail(regex: str) -> str | None:
    """Why a regex may report many Hyperscan match ends per match, judged from its last element.

    Hyperscan reports *every* offset where a match can end. A regex whose last element is a repeat of
    variable length (``{20,}``, ``+``, ``{40,250}``) and is not followed by a boundary (``\b``, ``$``,
    a required non-word character) ends at each extra character of a long token, e.g. of a base64 blob.
    Uses the stdlib's private regex parser; returns None when the tail is fixed or it cannot tell.
    """
    try:
        import re._parser as sre  # type: ignore[import-not-found, unused-ignore]

        items = list(sre.parse(regex))
    except Exception:
        return None
    while items:
        op, av = items.pop()
        if op is sre.SUBPATTERN:
            items.extend(av[-1])
            continue
        if op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
            lo, hi = av[0], av[1]
            if hi == sre.MAXREPEAT:
                return f"ends in an unbounded repeat {{{lo},}}"
            if hi - lo >= 8:
                return f"ends in a variable repeat {{{lo},{hi}}}"
            if lo >= 16:
                return f"ends in a fixed repeat {{{lo}}} with no boundary (every offset of a longer run)"
            if lo == 0:  # optional tail such as ``={0,2}``: the element before it can end the match too
                continue
        return None
    return None


def compile_profile(rules: Sequence[Any], top: int, files: Sequence[tuple[str, bytes]]) -> dict[str, Any]:
    """Cold Hyperscan compile of the whole pack, cache load, and the slowest rules compiled alone.

    The compiled database is cached on disk keyed by the pack digest, so every rule edit pays a cold
    compile on every machine (CI included). The combined compile can be far slower than the sum of
    single-rule compiles; the per-rule list shows which regexes (big bounded repeats) to look at.
    """
    import tempfile

    import hyperscan as hs

    from scanners.prefilter import HyperscanPrefilter

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="dg-hs-") as tmp:
        t = time.perf_counter()
        HyperscanPrefilter(rules, cache_dir=Path(tmp))
        out["cold_compile_s"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        HyperscanPrefilter(rules, cache_dir=Path(tmp))
        out["cache_load_s"] = round(time.perf_counter() - t, 3)
        out["db_bytes"] = sum(f.stat().st_size for f in Path(tmp).iterdir())
    # a ~16 MB sample (every k-th file) to scan each single-rule database over
    step = max(1, int(sum(len(d) for _, d in files) / 16e6))
    sample: list[bytes] = [d for _, d in files[::step]]
    sample_mb = sum(len(d) for d in sample) / 1e6
    singles: list[tuple[float, str]] = []
    scans: list[tuple[float, str]] = []

    def on_match(ident: int, start: int, end: int, flags: int, ctx: object) -> None:
        return None

    for r in rules:
        db = hs.Database(mode=hs.HS_MODE_BLOCK)
        t = time.perf_counter()
        try:
            db.compile(expressions=[r.regex.encode()], ids=[0], elements=1, flags=[hs.HS_FLAG_MULTILINE])
        except hs.error:
            continue
        singles.append((time.perf_counter() - t, r.id))
        c = time.process_time()
        for d in sample:
            db.scan(d, match_event_handler=on_match)
        scans.append((time.process_time() - c, r.id))
    singles.sort(reverse=True)
    scans.sort(reverse=True)
    out["single_compile_sum_s"] = round(sum(d for d, _ in singles), 2)
    out["slowest_single_compiles"] = {rid: round(d, 3) for d, rid in singles[:top]}
    out["single_scan_sample_mb"] = round(sample_mb, 1)
    out["slowest_single_scans_mb_s"] = {rid: round(sample_mb / max(d, 1e-6)) for d, rid in scans[:top]}
    return out


def _rule_row(s: RuleStats) -> str:
    return (
        f"  {s.rule_id:<40} ends={s.ends:>9,} gated={s.ends_gated:>9,} files={s.files_with_ends:>5} "
        f"maxfile={s.max_ends_in_file:>7,} regions={s.regions:>7,} regionMB={s.region_bytes / 1e6:7.2f} "
        f"matches={s.regex_matches:>6,} kept={s.confirmed:>5} ends/match={s.ends_per_match:9.1f} "
        f"regex={s.regex_s * 1000:8.1f}ms confirm={s.confirm_s * 1000:7.1f}ms"
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="tree to read (default: %(default)s)")
    ap.add_argument("--engine", default="hyperscan", choices=("hyperscan", "python", "auto"))
    ap.add_argument("--rules", type=Path, nargs="*", default=[], help="extra rule files (TOML) to add")
    ap.add_argument("--repeat", type=int, default=3, help="timed passes of Engine.scan (median is reported)")
    ap.add_argument("--max-files", type=int, default=None, help="only the first N files (quick runs)")
    ap.add_argument("--max-file-mb", type=float, default=50.0, help="skip larger files")
    ap.add_argument("--top", type=int, default=12, help="rules listed per ranking")
    ap.add_argument("--no-breakdown", action="store_true", help="skip the instrumented per-rule pass")
    ap.add_argument(
        "--compile-profile",
        action="store_true",
        help="also time a cold Hyperscan compile of the pack and each rule alone (slow)",
    )
    ap.add_argument("--json", action="store_true", help="print machine-readable results only")
    args = ap.parse_args(argv)

    sys.path.insert(0, str(REPO))
    t = time.perf_counter()
    from scanners.engine import Engine
    from scanners.rulepack import builtin_rules, check_unique, load_file

    import_s = time.perf_counter() - t

    if not args.corpus.is_dir():
        print(
            f"corpus {args.corpus} not found: run bench/scan_dir.py once to build it, or pass --corpus",
            file=sys.stderr,
        )
        return 2
    t = time.perf_counter()
    rules = list(builtin_rules())
    for extra in args.rules:
        rules.extend(load_file(extra))
    rules = check_unique(rules)
    rules_s = time.perf_counter() - t
    t = time.perf_counter()
    try:
        engine = Engine(rules, engine=args.engine)
    except RuntimeError as exc:  # e.g. a rule Hyperscan cannot compile: the engine's message names it
        print(f"cannot build the {args.engine} engine: {exc}", file=sys.stderr)
        return 2
    build_s = time.perf_counter() - t

    t = time.perf_counter()
    files = load_tree(args.corpus, args.max_files, args.max_file_mb)
    read_s = time.perf_counter() - t
    total = sum(len(d) for _, d in files)
    time_full_scan(engine, files[: min(len(files), 200)])  # warm caches (regex, allocator)

    walls, cpus, findings = [], [], 0
    for _ in range(max(1, args.repeat)):
        w, c, findings = time_full_scan(engine, files)
        walls.append(w)
        cpus.append(c)
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    result: dict[str, Any] = {
        "corpus": str(args.corpus),
        "files": len(files),
        "bytes": total,
        "rules": len(rules),
        "backend": engine.backend,
        "import_s": round(import_s, 3),
        "rules_load_s": round(rules_s, 3),
        "engine_build_s": round(build_s, 3),
        "read_s": round(read_s, 3),
        "scan_wall_s": round(wall, 3),
        "scan_cpu_s": round(cpu, 3),
        "scan_wall_runs": [round(w, 3) for w in walls],
        "mb_per_s_per_core": round(total / 1e6 / cpu, 1) if cpu else None,
        "findings": findings,
    }
    breakdown: dict[str, Any] | None = None
    if not args.no_breakdown:
        breakdown = instrumented_pass(engine, files)
        rs: list[RuleStats] = breakdown["rules"]
        result["stages_s"] = {k: round(v, 3) for k, v in breakdown["stages"].items()}
        result["callbacks_total"] = breakdown["callbacks_total"]
        result["keyword_files"] = breakdown["keyword_files"]
        result["per_rule"] = [
            asdict(s) | {"ends_per_match": round(s.ends_per_match, 1)}
            for s in rs
            if s.ends or s.regex_matches or s.regions
        ]

    tails = {r.id: why for r in rules if (why := variable_tail(r.regex))}
    result["variable_tail_rules"] = tails
    if args.compile_profile and engine.backend == "hyperscan":
        result["compile"] = compile_profile(rules, args.top, files)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"corpus    {result['corpus']}: {len(files):,} files, {total / 1e6:.1f} MB "
        f"(read in {read_s:.1f}s, not timed below)"
    )
    print(
        f"engine    {engine.backend}, {len(rules)} rules; start-up: import {import_s:.2f}s, "
        f"rules load+compile {rules_s:.2f}s, engine build (prefilter db/cache) {build_s:.2f}s"
    )
    print(
        f"scan      median of {len(walls)}: {wall:.2f}s wall, {cpu:.2f}s CPU -> "
        f"{result['mb_per_s_per_core']} MB/s per core; {findings} findings "
        f"(runs: {', '.join(f'{w:.2f}' for w in walls)})"
    )
    if breakdown is not None:
        st = breakdown["stages"]
        print(
            f"stages    prefilter (real regions(): hs scan + callbacks + ranges) "
            f"{st['prefilter_s']:.2f}s | "
            f"count-only hs scan {st['count_scan_s']:.2f}s | regex finditer {st['regex_s']:.2f}s | "
            f"_confirm {st['confirm_s']:.2f}s | dedupe/pair/finding {st['post_s']:.2f}s"
        )
        print(
            f"callbacks {breakdown['callbacks_total']:,} Hyperscan rule-match callbacks "
            f"({breakdown['callbacks_total'] / max(1, total) * 1e6:.0f} per MB)"
        )
        rs = breakdown["rules"]
        for title, key in (
            ("by Hyperscan match ends (callbacks)", lambda s: s.ends),
            ("by exact-regex (finditer) time", lambda s: s.regex_s),
            ("by _confirm time", lambda s: s.confirm_s),
        ):
            ranked = [s for s in sorted(rs, key=key, reverse=True) if key(s)][: args.top]
            print(f"top rules {title}:")
            for s in ranked:
                print(_rule_row(s))
            if not ranked:
                print("  (none)")
        if tails:
            print(
                f"static    {len(tails)} rule(s) whose regex ends in a variable-length repeat without a "
                "boundary (one Hyperscan end per extra character on long tokens):"
            )
            for rid, why in sorted(tails.items()):
                print(f"  {rid}: {why}")
        suspects = [s for s in rs if s.ends >= 1000 and s.ends_per_match >= 10]
        if suspects:
            print("suspects  many match ends per regex match -> unbounded tail / missing end boundary:")
            for s in sorted(suspects, key=lambda s: -s.ends):
                print(
                    f"  {s.rule_id}: {s.ends:,} ends for {s.regex_matches:,} regex matches "
                    f"(worst file {s.max_ends_path}: {s.max_ends_in_file:,})"
                )
    if "compile" in result:
        c = result["compile"]
        print(
            f"compile   cold {c['cold_compile_s']}s for the whole pack ({c['db_bytes'] / 1e6:.1f} MB db), "
            f"cache load {c['cache_load_s']}s; rules compiled alone sum to {c['single_compile_sum_s']}s; "
            "slowest alone: " + ", ".join(f"{k} {v}s" for k, v in c["slowest_single_compiles"].items())
        )
        print(
            f"hs scan   slowest rules scanned alone over a {c['single_scan_sample_mb']} MB sample "
            "(MB/s/core; "
            "a rule without a good literal factor drags the whole database): "
            + ", ".join(f"{k} {v}" for k, v in c["slowest_single_scans_mb_s"].items())
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
