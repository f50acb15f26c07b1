"""Checks an audit file written by ``broker.audit``: chain, sequence and heartbeat.

Why: an audit trail is only worth something if tampering and silence are noticed. ``verify_file``
streams the file once (audit files grow to gigabytes; memory stays constant) and reports

* the **first** integrity problem, by line number and seq: a line that is not a record, a record not
  in canonical form, a hash-chain break, missing records (seq gap), reordered or duplicated records,
  a truncated last line. Everything after the first break is suspect, so later breaks are not listed.
* **every** heartbeat gap: consecutive records more than 2× the heartbeat interval apart (a clean
  ``stop`` → ``start`` restart excepted), and a log that ends without ``stop`` and has been silent
  for more than 2× the interval *now* (tail cut off, or the writer died).

Pinpointing an edit. Each line's own ``prev`` is not affected by editing that line; its *successor's*
``prev`` is. So a link break between line i-1 and line i means either line i-1 was altered, or line
i's ``prev`` field was. Line i+1 tells them apart: if it still chains to line i, line i is intact and
line i-1 is named; if it does not, line i changed and is named. Edits that alter ``seq`` (while
``prev`` still chains) or produce non-canonical JSON are caught on the line itself.

Documented limit: an edit of the **last** line of the file that keeps it a canonical record cannot be
detected, because nothing after it records its hash. A running log ends with a recent heartbeat and a
closed one with ``stop``, so in practice the exposed line is one of those; a remote sink's copy is the
defence for the tail.

This module reads names, seqs and times; it never prints a record's contents beyond those.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from broker.audit import GENESIS, encode_record, line_hash
from depthguard.errors import SourceError

_HEX64 = re.compile(r"[0-9a-f]{64}")
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


@dataclass
class VerifyReport:
    """The outcome of ``verify_file``; ``problems`` are human-readable, in file order."""

    ok: bool
    records: int
    """Lines that parsed as audit records."""
    problems: list[str] = field(default_factory=list)
    heartbeat: float | None = None
    """The interval used for gap checks (the option, else the file's last stated one); None: unchecked."""
    first_seq: int | None = None
    last_seq: int | None = None
    lines: int = 0


@dataclass(frozen=True)
class _Entry:
    line: int
    hash: str
    seq: int
    prev: str
    time: float
    event: str
    heartbeat: float | None


@dataclass(frozen=True)
class _PendingMissing:
    """A seq jump at ``line``: reordered if ``expected`` turns up later, else missing."""

    line: int
    seq: int
    expected: int
    prev_line: int


def verify_file(path: Path | str, *, heartbeat: float | None = None,
                now: float | None = None) -> VerifyReport:
    """Verify ``path``. ``heartbeat`` overrides the interval stated in the file; ``now`` (default: the
    current time) is what an unclosed log's final silence is measured against.

    Raises ``SourceError`` when the file cannot be read at all.
    """
    if heartbeat is not None and not heartbeat > 0:
        raise ValueError("heartbeat must be positive")
    verifier = _Verifier(heartbeat, time.time() if now is None else now)
    try:
        with open(path, "rb") as f:
            for number, raw in enumerate(f, 1):
                verifier.feed(number, raw)
    except OSError as exc:
        raise SourceError(f"{path}: cannot read the audit file: {exc.strerror or exc}") from exc
    return verifier.finish()


class _Verifier:
    def __init__(self, heartbeat: float | None, now: float) -> None:
        self.explicit_hb = heartbeat
        self.file_hb: float | None = None
        self.now = now
        self.problems: list[tuple[int, int, str]] = []  # (line, 0 integrity | 1 gap, message)
        self.broken = False  # the first integrity problem is found (or being resolved)
        self.prev_hash: str | None = None  # hash of the previous physical line
        self.prev_entry: _Entry | None = None
        self.last: _Entry | None = None  # last parseable record (for gaps)
        self.first_seq: int | None = None
        self.pending_link: tuple[_Entry, _Entry] | None = None
        self.pending_missing: _PendingMissing | None = None
        self.records = 0
        self.lines = 0
        self.last_terminated = True

    @property
    def hb(self) -> float | None:
        return self.explicit_hb if self.explicit_hb is not None else self.file_hb

    def add(self, line: int, message: str, kind: int = 0) -> None:
        self.problems.append((line, kind, message))

    # -- per line ----------------------------------------------------------------------------------------

    def feed(self, number: int, raw: bytes) -> None:
        terminated = raw.endswith(b"\n")
        body = raw[:-1] if terminated else raw
        digest = line_hash(body)
        entry, error = _parse(number, body, digest)

        pending = self.pending_missing
        if pending is not None and entry is not None and entry.seq == pending.expected:
            self.add(pending.line, f"line {pending.line} (seq {pending.seq}): reordered: expected seq "
                                   f"{pending.expected} after line {pending.prev_line}, "
                                   f"found at line {number}")
            self.pending_missing = None
        if self.pending_link is not None:
            self._resolve_link(entry)
        if not self.broken:
            self._check(number, body, digest, entry, error, terminated)

        if entry is not None:
            self._gap(entry)
            self.records += 1
            self.last = entry
            if self.first_seq is None:
                self.first_seq = entry.seq
            if entry.heartbeat is not None:
                self.file_hb = entry.heartbeat
        self.prev_hash = digest
        self.prev_entry = entry
        self.lines = number
        self.last_terminated = terminated

    def _check(self, n: int, body: bytes, digest: str, entry: _Entry | None, error: str,
               terminated: bool) -> None:
        if entry is None:
            if not terminated:
                self._broke(n, f"line {n}: truncated: the last line is incomplete")
            else:
                self._broke(n, f"line {n}{error}")
            return
        s = entry.seq
        if self.prev_hash is None:  # line 1
            if entry.prev == GENESIS:
                if s != 1:
                    self._broke(n, f"line 1 (seq {s}): altered record: a record with the genesis prev "
                                   f"must have seq 1")
            elif s == 1:
                self._broke(n, "line 1 (seq 1): hash chain broken: prev of the first record is not the "
                               "genesis value")
            else:
                self._broke(n, f"line 1 (seq {s}): records missing before it: the file starts at seq {s}")
            return
        pe = self.prev_entry
        if pe is None:  # unreachable: an unparseable previous line already set broken
            return
        prev_ok = entry.prev == self.prev_hash
        seq_ok = s == pe.seq + 1
        if prev_ok and seq_ok:
            if not terminated:
                self._broke(n, f"line {n} (seq {s}): truncated: the last line has no newline")
            return
        self.broken = True
        if prev_ok:
            self.add(n, f"line {n} (seq {s}): altered record: seq {s} does not follow seq {pe.seq} "
                        f"(line {n - 1}) although its prev chains to that line")
        elif seq_ok:
            self.pending_link = (pe, entry)  # which of the two lines changed: line n+1 decides
        elif s > pe.seq + 1:
            self.pending_missing = _PendingMissing(n, s, pe.seq + 1, n - 1)
        else:
            what = "duplicated" if s == pe.seq else "reordered"
            self.add(n, f"line {n} (seq {s}): {what}: seq {s} comes after seq {pe.seq} (line {n - 1})")

    def _broke(self, line: int, message: str) -> None:
        self.broken = True
        self.add(line, message)

    def _resolve_link(self, nxt: _Entry | None) -> None:
        assert self.pending_link is not None
        before, cur = self.pending_link
        self.pending_link = None
        if nxt is not None and nxt.prev == cur.hash:
            self.add(before.line, f"line {before.line} (seq {before.seq}): hash chain broken: record altered "
                                  f"(its hash does not match the prev of line {cur.line}, seq {cur.seq})")
        elif nxt is not None:
            self.add(cur.line, f"line {cur.line} (seq {cur.seq}): hash chain broken: record altered (its "
                               f"prev does not match line {before.line}, and line {nxt.line} does not "
                               f"chain to it)")
        else:
            self.add(before.line, f"line {before.line} (seq {before.seq}): hash chain broken: the prev of "
                                  f"line {cur.line} (seq {cur.seq}) does not match it (line {before.line} "
                                  f"was altered, or line {cur.line}'s prev was)")

    def _gap(self, entry: _Entry) -> None:
        last, hb = self.last, self.hb
        if last is None or hb is None:
            return
        if last.event == "stop" and entry.event == "start":
            return  # a clean restart: downtime was announced
        gap = entry.time - last.time
        if gap > 2 * hb:
            self.add(entry.line, f"silent for {gap:.1f} s between seq {last.seq} and {entry.seq} "
                                 f"(heartbeat {hb:g} s)", kind=1)

    # -- end ---------------------------------------------------------------------------------------------

    def finish(self) -> VerifyReport:
        if self.pending_link is not None:
            self._resolve_link(None)
        if self.pending_missing is not None:
            p = self.pending_missing
            missing = f"seq {p.expected}" if p.seq - p.expected == 1 else f"seq {p.expected}-{p.seq - 1}"
            self.add(p.line, f"line {p.line} (seq {p.seq}): missing record(s): {missing} absent "
                             f"(line {p.prev_line} has seq {p.expected - 1})")
        last, hb = self.last, self.hb
        if last is not None and hb is not None and last.event != "stop":
            silent = self.now - last.time
            if silent > 2 * hb:
                self.add(last.line + 1, f"silent for {silent:.1f} s since seq {last.seq} (line {last.line}), "
                                        f"the last record, which is not a stop record (heartbeat {hb:g} s)",
                         kind=1)
        if self.lines == 0:
            self.add(0, "the file holds no records (an audit log always begins with a start record)")
        ordered = [message for _, _, message in sorted(self.problems, key=lambda p: (p[0], p[1]))]
        return VerifyReport(ok=not ordered, records=self.records, problems=ordered, heartbeat=hb,
                            first_seq=self.first_seq, last_seq=last.seq if last else None, lines=self.lines)


def _parse(number: int, body: bytes, digest: str) -> tuple[_Entry | None, str]:
    """An entry, or (None, why this line is not a valid record: text to follow "line N")."""
    try:
        rec = json.loads(body)
    except (ValueError, RecursionError):
        return None, ": not a JSON record"
    if not isinstance(rec, dict):
        return None, ": not a JSON object"
    seq = rec.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        return None, ": malformed record: missing or invalid seq"
    where = f" (seq {seq}): "
    try:
        canonical = encode_record(rec) == body
    except ValueError:
        canonical = False
    if not canonical:
        return None, f"{where}altered record: not in canonical form"
    prev = rec.get("prev")
    if not isinstance(prev, str) or not _HEX64.fullmatch(prev):
        return None, f"{where}malformed record: missing or invalid prev"
    stamp = rec.get("time")
    try:
        if not isinstance(stamp, str):
            raise ValueError(stamp)
        t = datetime.strptime(stamp, _TIME_FORMAT).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None, f"{where}malformed record: missing or invalid time"
    event = rec.get("event")
    if not isinstance(event, str) or not event:
        return None, f"{where}malformed record: missing event"
    hb = rec.get("heartbeat")
    interval = (float(hb) if event in ("start", "heartbeat") and isinstance(hb, int | float)
                and not isinstance(hb, bool) and hb > 0 else None)
    return _Entry(number, digest, seq, prev, t, event, interval), ""
