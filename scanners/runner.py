"""Run the engine over many files or chunks, in worker processes when that pays off.

Workers are forked after the engine is built, so the compiled rule pack (and the Hyperscan database)
is shared copy-on-write instead of being rebuilt per worker. Small trees are scanned in-process: per
the measurements in docs, a single process matches two on trees up to ~150 MB, because reading files
and Python per-file overhead dominate there and a pool only adds start-up and pickling costs.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace

from scanners.engine import Engine
from scanners.finding import Finding
from scanners.result import ScanStats
from scanners.sources.directory import FileRef, read_prepared
from scanners.sources.interface import Chunk

PARALLEL_MIN_BYTES = 96 * 1024 * 1024
BATCH_BYTES = 4 * 1024 * 1024
BATCH_FILES = 512

Progress = Callable[[int, int], None]
"""Called with (files done, bytes done)."""

_ENGINE: Engine | None = None  # set in the parent before forking; read by workers


def default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _scan_batch(batch: list[FileRef]) -> tuple[list[Finding], ScanStats]:
    assert _ENGINE is not None
    stats = ScanStats()
    found: list[Finding] = []
    for ref in batch:
        data = read_prepared(ref, stats.skip)
        if data is None:
            continue
        stats.files += 1
        stats.bytes += len(data)
        found.extend(_ENGINE.scan(data, ref.rel_path))
    return found, stats


def _batches(refs: Iterable[FileRef]) -> Iterator[list[FileRef]]:
    batch: list[FileRef] = []
    size = 0
    for ref in refs:
        batch.append(ref)
        size += ref.size
        if size >= BATCH_BYTES or len(batch) >= BATCH_FILES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def merge_stats(into: ScanStats, part: ScanStats) -> None:
    into.files += part.files
    into.bytes += part.bytes
    into.suppressed += part.suppressed
    for reason, n in part.skipped.items():
        into.skip(reason, n)


def scan_files(
    engine: Engine,
    refs: Iterable[FileRef],
    *,
    jobs: int = 0,
    progress: Progress | None = None,
) -> tuple[list[Finding], ScanStats]:
    """Scan files (read in the workers); ``jobs`` 0 means all cores.

    ``refs`` may be a lazy walk: files are buffered until they add up to ``PARALLEL_MIN_BYTES``; a
    smaller tree is scanned in-process, a larger one is handed to workers while the walk goes on.
    """
    global _ENGINE
    started = time.perf_counter()
    stats = ScanStats(rules=len(engine.rules), engine=engine.backend)
    findings: list[Finding] = []
    jobs = jobs or default_jobs()
    walk = iter(refs)
    head: list[FileRef] = []
    size = 0
    use_pool = jobs > 1 and "fork" in mp.get_all_start_methods()
    if use_pool:
        for ref in walk:
            head.append(ref)
            size += ref.size
            if size >= PARALLEL_MIN_BYTES:
                break
        else:
            use_pool = False
    batches = _batches(itertools.chain(head, walk))
    _ENGINE = engine
    done_files = done_bytes = 0
    try:
        if use_pool:
            with mp.get_context("fork").Pool(jobs) as pool:
                results: Iterable[tuple[list[Finding], ScanStats]] = pool.imap_unordered(_scan_batch, batches)
                for found, part in results:
                    findings.extend(found)
                    merge_stats(stats, part)
                    done_files, done_bytes = done_files + part.files, done_bytes + part.bytes
                    if progress:
                        progress(done_files, done_bytes)
        else:
            for found, part in map(_scan_batch, batches):
                findings.extend(found)
                merge_stats(stats, part)
                done_files, done_bytes = done_files + part.files, done_bytes + part.bytes
                if progress:
                    progress(done_files, done_bytes)
    finally:
        _ENGINE = None
    findings.sort(key=lambda f: (f.path, f.line, f.column, f.rule_id))
    stats.seconds = time.perf_counter() - started
    return findings, stats


def scan_chunks(engine: Engine, chunks: Iterable[Chunk]) -> tuple[list[Finding], ScanStats]:
    """Scan prepared chunks from any source in-process, attaching each chunk's location."""
    started = time.perf_counter()
    stats = ScanStats(rules=len(engine.rules), engine=engine.backend)
    findings: list[Finding] = []
    for chunk in chunks:
        stats.files += 1
        stats.bytes += len(chunk.data)
        loc = chunk.location
        for f in engine.scan(chunk.data, loc.path, loc.source):
            if loc.commit is not None or loc.layer is not None or loc.extra:
                f = replace(f, commit=loc.commit, layer=loc.layer, extra=dict(loc.extra))
            findings.append(f)
    stats.seconds = time.perf_counter() - started
    return findings, stats
