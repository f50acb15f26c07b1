"""The broker's tamper-evident audit trail: who read which secret, who was refused, and proof of life.

Why it exists: the sidecar's other layers decide; this one lets somebody check afterwards what was
decided, and notice when the record was edited, cut short or stopped. Every event becomes one JSON
line; each line carries a sequence number and the SHA-256 of the previous line's bytes, so editing,
deleting, inserting or reordering a line breaks the chain at that line (``broker.audit_verify``). A
``heartbeat`` record every ``heartbeat`` seconds makes silence visible: a gap longer than twice the
interval means the writer was stopped, stuck or its records were removed.

Record format (format version 1, stated in every ``start`` record): one line of JSON, keys sorted,
compact separators, ASCII only::

    {"decision":"allow","event":"secret.read","exe":"/usr/bin/python3.11",
     "fingerprint":"hmac-sha256:5f1c…","gid":1000,"instance":"web-7f9c","pid":4242,
     "prev":"9b3e…(64 hex)","reason":"","role":"web","secret":"db-password","seq":42,
     "time":"2024-05-01T12:00:00.123456Z","uid":1000}

The first record of a new file has ``prev`` = 64 zeros; appending to an existing file continues its
``seq`` and chain (the last line is read back at open). ``start`` and ``heartbeat`` records carry
``heartbeat`` (the interval in seconds) so a verifier needs no configuration.

What it must never do: write a secret value. ``record(value=…)`` keeps only an HMAC-SHA256
fingerprint, keyed per process (random) unless a key is configured, so equal values can be matched
across records without the log becoming a dictionary-attack target. Extra fields are the caller's
responsibility: pass names, codes and numbers, never values.

Why the queue: ``record`` runs on the request path and must not wait for a disk or a network. It
appends to a bounded in-memory queue; one writer thread assigns ``seq`` and ``prev`` (so the chain is
serial even with many callers), writes batches to every sink and fsyncs once per batch. When the queue
is full the record is dropped and counted, and an ``audit.dropped`` record saying how many follows as
soon as there is room: the log can lose records under overload, but never without saying so. Remote
sinks whose spool overflows report their losses the same way, as ``spool.dropped`` records written
with the next heartbeat.

Limit: the chain is keyless, so someone who can rewrite the whole file can recompute it; the remote
sinks (``broker.audit_sinks``) are what protects against that, by holding a copy off the host.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from broker.audit_sinks import AuditSink

log = logging.getLogger(__name__)

FORMAT_VERSION: Final = 1
GENESIS: Final = "0" * 64
"""``prev`` of the very first record of a file."""

EVENTS: Final = frozenset({
    "start", "stop", "heartbeat", "token.issue", "token.revoke", "secret.read", "access.denied",
    "lease.renew", "backend.error", "config.reload", "rate.limited", "audit.dropped", "spool.dropped",
})
"""Known event names (others are accepted: the set documents, it does not restrict)."""

DECISIONS: Final = frozenset({"allow", "deny", "info"})

RESERVED: Final = frozenset({
    "seq", "time", "event", "decision", "reason", "uid", "gid", "pid", "exe", "role", "secret",
    "fingerprint", "prev", "instance", "value",
})
"""Keys ``record(**fields)`` may not use: they belong to the fixed part of every record."""

FieldValue = str | int | float | bool | None


@dataclass(frozen=True)
class Peer:
    """The process on the other end of the socket, as the kernel reported it (``SO_PEERCRED``)."""

    uid: int
    gid: int
    pid: int
    exe: str | None = None
    """``/proc/PID/exe`` at connection time when readable; informative only (pids are reused)."""


def fingerprint(key: bytes, value: bytes) -> str:
    """``hmac-sha256:<hex>``: lets records about the same value be matched without revealing it."""
    return "hmac-sha256:" + hmac.new(key, value, hashlib.sha256).hexdigest()


def format_time(t: float) -> str:
    """RFC 3339, UTC, microseconds: sortable as text and unambiguous across hosts."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def encode_record(rec: dict[str, Any]) -> bytes:
    """The one canonical encoding (the verifier re-encodes and compares, so it must stay stable)."""
    return json.dumps(rec, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def line_hash(line: bytes) -> str:
    """What the next record's ``prev`` holds: SHA-256 of the line's bytes without its newline."""
    return hashlib.sha256(line).hexdigest()


class AuditLog:
    """Thread-safe audit writer. ``record`` never blocks on I/O; ``start``/``close`` bracket its life.

    ``now`` is injectable for tests (record times); the heartbeat timer itself runs on the monotonic
    clock. ``max_queue`` bounds memory under overload; ``max_batch`` bounds one write+fsync.
    """

    def __init__(self, sinks: Sequence[AuditSink], *, heartbeat: float = 30.0, hmac_key: bytes | None = None,
                 instance: str = "", now: Callable[[], float] = time.time, max_queue: int = 10000,
                 max_batch: int = 1000) -> None:
        if not heartbeat > 0:
            raise ValueError("heartbeat must be a positive number of seconds")
        if max_queue < 1 or max_batch < 1:
            raise ValueError("max_queue and max_batch must be at least 1")
        self.sinks = list(sinks)
        self.heartbeat = float(heartbeat)
        self.instance = instance
        self._key = hmac_key if hmac_key is not None else os.urandom(32)
        self._now = now
        self._max_queue = max_queue
        self._max_batch = max_batch
        self._cond = threading.Condition()
        self._queue: deque[dict[str, Any]] = deque()
        self._pending_drops = 0  # dropped since the last audit.dropped note
        self._sink_drops: dict[str, int] = {}  # per sink, since the last spool.dropped notes
        self.dropped = 0
        """Records lost because the queue was full (each reported by an ``audit.dropped`` record)."""
        self.write_errors = 0
        """Batches a sink failed to take (a local file then shows a seq gap that verify reports)."""
        self._started = False
        self._closing = False
        self._thread: threading.Thread | None = None
        # Owned by the writer thread once started (order-dependent: seq and prev advance together).
        self._seq, self._prev = self._resume()
        for sink in self.sinks:
            sink.bind(self._drop_reporter(sink))

    # -- chain -------------------------------------------------------------------------------------------

    def _resume(self) -> tuple[int, str]:
        """(last seq, hash of the last line) from the first sink that can read its lines back."""
        for sink in self.sinks:
            lines = sink.reverse_lines()
            if lines is None:
                continue
            prev: str | None = None
            for line in lines:
                if prev is None:
                    prev = line_hash(line)  # the physically last line, even if damaged: keep it chained
                seq = _seq_of(line)
                if seq is not None:
                    return seq, prev
            if prev is not None:
                log.warning("audit sink %s holds no readable record; restarting seq at 1", sink.name)
                return 0, prev
            return 0, GENESIS
        return 0, GENESIS

    def _seal(self, rec: dict[str, Any]) -> bytes:
        self._seq += 1
        rec["seq"] = self._seq
        rec["prev"] = self._prev
        rec["time"] = format_time(rec["time"])
        line = encode_record(rec)
        self._prev = line_hash(line)
        return line

    # -- API ---------------------------------------------------------------------------------------------

    def record(self, event: str, decision: str, *, reason: str = "", peer: Peer | None = None,
               role: str | None = None, secret: str | None = None, value: bytes | None = None,
               **fields: FieldValue) -> None:
        """Queue one record. ``value`` is reduced to its HMAC fingerprint here, before queueing."""
        if not event or not isinstance(event, str):
            raise ValueError("event must be a non-empty string")
        if decision not in DECISIONS:
            raise ValueError(f"decision must be one of {sorted(DECISIONS)}, not {decision!r}")
        for key, val in fields.items():
            if key in RESERVED:
                raise ValueError(f"field {key!r} is reserved")
            if val is not None and not isinstance(val, str | int | float | bool):
                raise TypeError(f"field {key!r} must be str, int, float, bool or None")
            if isinstance(val, float) and not math.isfinite(val):
                raise ValueError(f"field {key!r} must be finite")
        rec: dict[str, Any] = {
            "event": event, "decision": decision, "reason": reason,
            "uid": peer.uid if peer else None, "gid": peer.gid if peer else None,
            "pid": peer.pid if peer else None, "exe": peer.exe if peer else None,
            "role": role, "secret": secret,
            "fingerprint": fingerprint(self._key, value) if value is not None else None,
            "instance": self.instance,
            **fields,
        }
        with self._cond:
            if self._closing:
                log.warning("audit record %r after close: not written", event)
                return
            self._enqueue(rec)

    def _enqueue(self, rec: dict[str, Any]) -> None:
        # Caller holds self._cond. Time is taken under the lock so times are in seq order.
        rec["time"] = self._now()
        if len(self._queue) >= self._max_queue:
            self._pending_drops += 1
            self.dropped += 1
            return
        self._queue.append(rec)
        self._cond.notify()

    def start(self) -> None:
        """Write the ``start`` record and start the writer thread (which also emits heartbeats)."""
        with self._cond:
            if self._started or self._closing:
                return
            self._started = True
            # First in the queue even if record() was called earlier: a file's run begins with start.
            self._queue.appendleft(self._note("start", "", self._now(), heartbeat=self.heartbeat,
                                              format=FORMAT_VERSION))
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Flush everything queued, write ``stop`` (fsync'd), close the sinks. Idempotent."""
        with self._cond:
            if self._closing:
                return
            stop = self._note("stop", "", self._now(), dropped_total=self.dropped)
            self._queue.append(stop)  # past the bound on purpose: stop is always written
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()
        else:
            self._run()  # never started: flush in the caller's thread
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:
                log.exception("audit sink %s failed to close", sink.name)

    def __enter__(self) -> AuditLog:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def seq(self) -> int:
        """The last sequence number written (for tests and metrics)."""
        return self._seq

    # -- writer ------------------------------------------------------------------------------------------

    def _drop_reporter(self, sink: AuditSink) -> Callable[[int], None]:
        def report(count: int) -> None:
            # Only counted here; written at the next heartbeat (or close). Recording at once would loop:
            # the note itself goes to the full spool, evicts another record, triggers another note...
            with self._cond:
                self._sink_drops[sink.name] = self._sink_drops.get(sink.name, 0) + count
        return report

    def _run(self) -> None:
        next_beat = time.monotonic() + self.heartbeat
        while True:
            with self._cond:
                while not self._queue and not self._pending_drops and not self._closing:
                    remaining = next_beat - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                beat = not self._closing and time.monotonic() >= next_beat
                if beat:
                    self._enqueue(self._heartbeat_record())
                    next_beat = time.monotonic() + self.heartbeat
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), self._max_batch))]
                notes: list[dict[str, Any]] = []
                if self._pending_drops:
                    notes.append(self._note("audit.dropped", "queue_full", self._now(),
                                            dropped=self._pending_drops))
                    self._pending_drops = 0
                if self._sink_drops and (beat or self._closing):
                    t = self._now()
                    notes += [self._note("spool.dropped", "spool_full", t, sink=name, dropped=count)
                              for name, count in sorted(self._sink_drops.items())]
                    self._sink_drops = {}
                done = self._closing and not self._queue
            if notes:
                # order-dependent: notes must precede a final stop record
                at = len(batch) - 1 if batch and batch[-1]["event"] == "stop" else len(batch)
                batch[at:at] = notes
            if batch:
                self._emit([self._seal(rec) for rec in batch])
            if done:
                return

    def _heartbeat_record(self) -> dict[str, Any]:
        return self._note("heartbeat", "", 0.0, heartbeat=self.heartbeat)  # time set by _enqueue

    def _note(self, event: str, reason: str, t: float, **fields: FieldValue) -> dict[str, Any]:
        return {"event": event, "decision": "info", "reason": reason, "uid": None, "gid": None,
                "pid": None, "exe": None, "role": None, "secret": None, "fingerprint": None,
                "instance": self.instance, "time": t, **fields}

    def _emit(self, lines: list[bytes]) -> None:
        for sink in self.sinks:
            try:
                sink.write_batch(lines)
            except Exception:  # the writer thread must survive a full disk; the gap stays visible
                self.write_errors += 1
                log.exception("audit sink %s failed to write %d record(s)", sink.name, len(lines))


def _seq_of(line: bytes) -> int | None:
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    if isinstance(rec, dict):
        seq = rec.get("seq")
        if isinstance(seq, int) and not isinstance(seq, bool) and seq >= 0:
            return seq
    return None
