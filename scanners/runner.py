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
from typing import TypeVar

from scanners.engine import Engine
from scanners.finding import Finding
from scanners.result import ScanStats
from scanners.sources.directory import FileRef, read_prepared
from scanners.sources.interface import Chunk

PARALLEL_MIN_BYTES = 96 * 1024 * 1024
BATCH_BYTES = 4 * 1024 * 1024
BATCH_FILES = 512

T = TypeVar("T")
B = TypeVar("B")
R = TypeVar("R")

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


def pool_worthwhile(
    items: Iterable[T], size: Callable[[T], int], jobs: int, threshold: int
) -> tuple[Iterator[T], bool]:
    """Buffer a (possibly lazy) stream until its sizes add up to ``threshold``: a smaller input is
    cheaper in-process than with a pool's start-up; a larger one goes to workers while the rest of
    the stream (a directory walk, a git listing) is still being produced."""
    stream = iter(items)
    head: list[T] = []
    if jobs <= 1 or "fork" not in mp.get_all_start_methods():
        return stream, False
    total = 0
    for item in stream:
        head.append(item)
        total += size(item)
        if total >= threshold:
            return itertools.chain(head, stream), True
    return iter(head), False


def run_batches(fn: Callable[[B], R], batches: Iterable[B], jobs: int, use_pool: bool) -> Iterator[R]:
    """``fn`` over the batches, in forked workers (results as they finish) or in-process."""
    if not use_pool:
        yield from map(fn, batches)
        return
    with mp.get_context("fork").Pool(jobs) as pool:
        yield from pool.imap_unordered(fn, batches, chunksize=1)


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
    items, use_pool = pool_worthwhile(refs, lambda r: r.size, jobs, PARALLEL_MIN_BYTES)
    _ENGINE = engine
    done_files = done_bytes = 0
    try:
        for found, part in run_batches(_scan_batch, _batches(items), jobs, use_pool):
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
