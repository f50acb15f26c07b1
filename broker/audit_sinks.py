"""Where audit lines go: a local append-only file, and remote HTTP or syslog receivers with a disk spool.

Why the split: the local file is the authoritative, fsync'd copy the chain is resumed from; a remote
copy exists so that an attacker who owns the host cannot quietly rewrite history (the remote already
holds the records). A remote is allowed to be down: remote sinks never make the audit writer wait on
the network. Every batch handed to a remote sink is first written to a bounded on-disk spool and
delivered, oldest first, by the sink's own sender thread; delivered batches are deleted, failed ones
stay and are retried with backoff. So "spool while down, drain in order when back" is the ordinary
path, and undelivered batches survive a restart of the process.

The spool is bounded in bytes. When a new batch does not fit, the oldest spooled batches are deleted
and the number of records lost is reported through the callback the ``AuditLog`` binds; it writes
``spool.dropped`` records with the counts at the next heartbeat (not at once: the note itself would
land in the full spool and evict another record, forever). Loss is counted, never silent. The count
is conservative: a batch evicted while its delivery is in flight may still arrive. Drops caused by
the very last batch written at close appear only in the sink's ``dropped`` counter and a log warning.

Delivery is at-least-once: a batch whose POST timed out after the server processed it, or a syslog
batch that failed halfway, is sent again. Consumers deduplicate by ``seq``.

These sinks receive finished JSON lines; they never see secret values (the log records only HMAC
fingerprints), and they log sink names and error classes, never line contents.
"""

from __future__ import annotations

import fcntl
import http.client
import json
import logging
import mmap
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from depthguard.errors import ConfigError, DepthguardError

log = logging.getLogger(__name__)

DropReporter = Callable[[int], None]
"""Called with the number of records a sink had to drop (spool full); ``AuditLog`` binds it."""

DEFAULT_SPOOL_MAX_BYTES = 64 * 1024 * 1024


class AuditSink(ABC):
    """One destination for audit lines. ``write_batch`` is called from the audit writer thread only.

    A line is one complete JSON record, as bytes, without the trailing newline.
    """

    name: str = "sink"

    @abstractmethod
    def write_batch(self, lines: Sequence[bytes]) -> None:
        """Store or forward ``lines`` in order. Local sinks make them durable before returning."""

    def reverse_lines(self) -> Iterator[bytes] | None:
        """Lines already held, last first, if this sink can read them back (to resume the chain)."""
        return None

    def bind(self, report_drop: DropReporter) -> None:  # noqa: B027 - optional hook, no-op by default
        """Receive the callback used to report dropped records (sinks that never drop ignore it)."""

    def close(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """Release resources; remote sinks try to deliver what is spooled first (bounded wait)."""


# -- local file ----------------------------------------------------------------------------------------


_PAGE_SIZE = mmap.PAGESIZE
_DROP_EVERY = 16 * _PAGE_SIZE  # drop cached pages in runs of at least this much (fewer syscalls)


class FileSink(AuditSink):
    """Append-only local file: ``O_APPEND``, mode 0600, one ``fsync`` per batch.

    The file is locked (``flock``) for as long as the sink is open, so two processes cannot interleave
    two chains in one file. A torn last line left by a crash is terminated with a newline at open, so
    the next record starts on its own line (``verify`` then reports the torn line; the log is never
    truncated to hide it).

    ``drop_cache`` (default on, where ``posix_fadvise`` exists): once a batch is fsync'd, the whole
    pages written so far are dropped from the page cache (``POSIX_FADV_DONTNEED``, in runs of 16
    pages or more; the partly filled last page is kept, so an append never reads it back). This
    process never reads those pages again, a growing log then does not push useful data out of the
    cache, and appends reuse freed pages: on the benchmark VM, write + fsync of a 42 KB batch went
    from ~480 to ~150 µs of CPU. It is advice about caching only; what is on disk, and when, is
    unchanged.
    """

    def __init__(self, path: Path | str, *, drop_cache: bool = True) -> None:
        self.path = Path(path)
        self.name = f"file:{self.path}"
        self.drop_cache = drop_cache and hasattr(os, "posix_fadvise")
        self._size = 0  # the file's size whenever _torn is False (we hold the only writer: flock)
        self._dropped = 0  # pages before this offset were dropped from the page cache
        parent = self.path.parent
        try:
            if not parent.exists():
                parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # O_RDWR only so the last byte can be checked through this same fd (pread), not by name
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise ConfigError(str(self.path), "", f"cannot open the audit file: {exc.strerror}") from exc
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._fd)
            raise ConfigError(str(self.path), "", "the audit file is in use by another process") from exc
        self._lock = threading.Lock()
        self._torn = False  # a failed write may have left half a line
        self._terminate_torn_tail()

    def _terminate_torn_tail(self) -> None:
        size = self._size = os.fstat(self._fd).st_size
        if size == 0:
            return
        if os.pread(self._fd, 1, size - 1) != b"\n":
            log.warning("audit file %s ends with an incomplete line (crash?); starting a new line", self.path)
            self._write_all(b"\n")
            self._sync()
            self._size = size + 1

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    def write_batch(self, lines: Sequence[bytes]) -> None:
        if not lines:
            return
        data = b"\n".join(lines) + b"\n"
        with self._lock:
            if self._torn:
                self._terminate_torn_tail()  # never glue a record onto half of another
            self._torn = True
            self._write_all(data)
            self._sync()
            self._torn = False
            self._size += len(data)
            if self.drop_cache:
                self._drop_written_pages()

    def _sync(self) -> None:
        """Make what was written durable: one ``fsync`` per batch (a hook tests count through)."""
        os.fsync(self._fd)

    def _drop_written_pages(self) -> None:
        end = self._size - self._size % _PAGE_SIZE  # whole pages only: keep the one still being filled
        if end - self._dropped >= _DROP_EVERY:
            try:
                os.posix_fadvise(self._fd, self._dropped, end - self._dropped, os.POSIX_FADV_DONTNEED)
            except OSError:  # advice only: never fail a batch that is already durable
                self.drop_cache = False
                return
            self._dropped = end

    def reverse_lines(self) -> Iterator[bytes]:
        return _reverse_lines(self.path)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)  # also releases the flock
                self._fd = -1


def _reverse_lines(path: Path, block: int = 65536) -> Iterator[bytes]:
    """Yield the lines of ``path`` last first, reading backwards in blocks (audit files grow large)."""
    with open(path, "rb") as f:
        pos = size = f.seek(0, os.SEEK_END)
        rest = b""
        first = True
        while pos > 0:
            step = min(block, pos)
            pos -= step
            f.seek(pos)
            rest = f.read(step) + rest
            parts = rest.split(b"\n")
            rest = parts[0]
            tail = parts[1:]
            if first:
                first = False
                if tail and tail[-1] == b"":
                    tail.pop()  # the file's final newline
            yield from reversed(tail)
        if size:
            yield rest  # the first line (possibly empty)


# -- spool ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _SpoolFile:
    name: str
    size: int
    records: int


class DiskSpool:
    """A directory of batch files ``<counter>-<records>.ndjson``, oldest first, bounded in bytes.

    Files are written to a temporary name and renamed, so a reader never sees half a batch. The
    record count is in the name so eviction can report how many records it lost without reading.
    Not fsync'd: the local audit file is the durable copy; the spool only bridges remote outages.
    """

    def __init__(self, directory: Path | str, max_bytes: int = DEFAULT_SPOOL_MAX_BYTES) -> None:
        if max_bytes <= 0:
            raise ValueError("spool max_bytes must be positive")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._files: OrderedDict[str, _SpoolFile] = OrderedDict()
        self._bytes = 0
        self._counter = 0
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            entries = sorted(os.listdir(self.directory))
        except OSError as exc:
            raise ConfigError(str(self.directory), "", f"cannot use the audit spool: {exc.strerror}") from exc
        for entry in entries:
            path = self.directory / entry
            if entry.endswith(".tmp"):
                path.unlink(missing_ok=True)  # a batch interrupted while being written
                continue
            parsed = _parse_spool_name(entry)
            if parsed is None:
                continue
            counter, records = parsed
            size = path.stat().st_size
            self._files[entry] = _SpoolFile(entry, size, records)
            self._bytes += size
            self._counter = max(self._counter, counter)

    @property
    def size(self) -> int:
        """Bytes currently spooled."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._files)

    def append(self, lines: Sequence[bytes]) -> int:
        """Spool one batch; returns how many records were dropped to respect the bound."""
        data = b"".join(line + b"\n" for line in lines)
        if not data:
            return 0
        if len(data) > self.max_bytes:
            return len(lines)  # can never fit: drop it whole, counted
        dropped = 0
        with self._lock:
            while self._files and self._bytes + len(data) > self.max_bytes:
                _, old = self._files.popitem(last=False)
                (self.directory / old.name).unlink(missing_ok=True)
                self._bytes -= old.size
                dropped += old.records
            self._counter += 1
            name = f"{self._counter:016d}-{len(lines)}.ndjson"
            tmp = self.directory / (name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            os.replace(tmp, self.directory / name)
            self._files[name] = _SpoolFile(name, len(data), len(lines))
            self._bytes += len(data)
        return dropped

    def oldest(self, max_bytes: int) -> list[tuple[str, bytes]]:
        """The oldest batches, in order, up to ``max_bytes`` together (always at least one)."""
        with self._lock:
            names = list(self._files.values())
        out: list[tuple[str, bytes]] = []
        total = 0
        for item in names:
            if out and total + item.size > max_bytes:
                break
            try:
                data = (self.directory / item.name).read_bytes()
            except FileNotFoundError:  # evicted meanwhile
                continue
            out.append((item.name, data))
            total += len(data)
        return out

    def remove(self, names: Sequence[str]) -> None:
        with self._lock:
            for name in names:
                item = self._files.pop(name, None)
                if item is not None:
                    (self.directory / name).unlink(missing_ok=True)
                    self._bytes -= item.size


def _parse_spool_name(entry: str) -> tuple[int, int] | None:
    if not entry.endswith(".ndjson"):
        return None
    stem = entry[: -len(".ndjson")]
    counter, sep, records = stem.partition("-")
    if not sep or not counter.isdigit() or not records.isdigit():
        return None
    return int(counter), int(records)


class DeliveryError(DepthguardError):
    """A remote refused or could not take a batch (internal to the sinks: triggers a retry)."""


class SpooledSink(AuditSink):
    """Base of the remote sinks: batches go to a ``DiskSpool``; a sender thread delivers them in order.

    ``_deliver`` raises ``OSError``/``DeliveryError`` when the remote is down; the batch then stays
    spooled and is retried after ``retry_min`` doubling up to ``retry_max`` seconds. ``close`` keeps
    delivering for at most ``close_timeout`` seconds; what is left stays on disk for the next start.
    """

    def __init__(self, name: str, spool_dir: Path | str, spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES,
                 *, retry_min: float = 0.5, retry_max: float = 30.0, close_timeout: float = 5.0,
                 max_send_bytes: int = 1024 * 1024) -> None:
        self.name = name
        self.spool = DiskSpool(spool_dir, spool_max_bytes)
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.close_timeout = close_timeout
        self.max_send_bytes = max_send_bytes
        self.dropped = 0
        """Records dropped because the spool was full (reported through the bound callback too)."""
        self.delivered = 0
        self.failures = 0
        self._report_drop: DropReporter | None = None
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._deadline = float("inf")
        self._thread = threading.Thread(target=self._run, name=f"audit-{name}", daemon=True)
        self._thread.start()

    def bind(self, report_drop: DropReporter) -> None:
        self._report_drop = report_drop

    def write_batch(self, lines: Sequence[bytes]) -> None:
        dropped = self.spool.append(lines)
        if dropped:
            self.dropped += dropped
            log.warning("audit sink %s: spool full, dropped %d oldest record(s)", self.name, dropped)
            if self._report_drop is not None:
                self._report_drop(dropped)
        self._wake.set()

    @abstractmethod
    def _deliver(self, lines: list[bytes]) -> None:
        """Send ``lines`` (in order) to the remote; raise ``OSError`` or ``DeliveryError`` on failure."""

    def _run(self) -> None:
        delay = 0.0
        while True:
            if self._closing.is_set() and (not len(self.spool) or time.monotonic() >= self._deadline):
                return
            batch = self.spool.oldest(self.max_send_bytes)
            if not batch:
                self._wake.wait()  # close() sets it too
                self._wake.clear()
                continue
            lines = [line for _, data in batch for line in data.split(b"\n") if line]
            try:
                self._deliver(lines)
            except (OSError, DeliveryError, http.client.HTTPException) as exc:
                self.failures += 1
                if self._closing.is_set():
                    return  # leave it spooled for the next start
                delay = min(self.retry_max, max(self.retry_min, delay * 2))
                log.warning("audit sink %s: delivery failed (%s); retrying in %.1f s",
                            self.name, type(exc).__name__, delay)
                self._closing.wait(delay)
                continue
            delay = 0.0
            self.spool.remove([name for name, _ in batch])
            self.delivered += len(lines)

    def close(self) -> None:
        if self._closing.is_set():
            return
        self._deadline = time.monotonic() + self.close_timeout
        self._closing.set()
        self._wake.set()
        self._thread.join(self.close_timeout + 1.0)
        self._close_transport()

    def _close_transport(self) -> None:
        """Subclasses release sockets here."""


# -- HTTP -----------------------------------------------------------------------------------------------


class HttpSink(SpooledSink):
    """POSTs batches as ``application/x-ndjson`` with urllib (no extra dependency).

    Any status other than 2xx counts as a failure and is retried (a receiver that rejects a batch for
    good therefore holds the queue until the spool bound evicts it, which is then counted). Proxy
    environment variables are ignored on purpose: audit records go straight to the configured URL.
    """

    def __init__(self, url: str, spool_dir: Path | str, spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES,
                 *, timeout: float = 3.0, headers: Mapping[str, str] | None = None,
                 retry_min: float = 0.5, retry_max: float = 30.0, close_timeout: float = 5.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError("", "audit.remote.url", f"not an http(s) URL: {url!r}")
        self.url = url
        self.timeout = timeout
        self.headers = {"Content-Type": "application/x-ndjson", **(headers or {})}
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        super().__init__(f"http:{url}", spool_dir, spool_max_bytes, retry_min=retry_min,
                         retry_max=retry_max, close_timeout=close_timeout)

    def _deliver(self, lines: list[bytes]) -> None:
        body = b"".join(line + b"\n" for line in lines)
        req = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                resp.read()
                status = resp.status
        except urllib.error.HTTPError as exc:  # non-2xx
            raise DeliveryError(f"HTTP {exc.code}") from exc
        if not 200 <= status < 300:
            raise DeliveryError(f"HTTP {status}")


# -- syslog ---------------------------------------------------------------------------------------------

FACILITY_AUTHPRIV = 10
_SEVERITY_ERR, _SEVERITY_WARNING, _SEVERITY_INFO = 3, 4, 6


class SyslogSink(SpooledSink):
    """RFC 5424 messages, one datagram per record, to ``host:port`` (UDP) or a Unix datagram socket path.

    The MSG part is the record's JSON line unchanged, so a receiver can still check the chain.
    UDP gives no delivery receipt: a datagram sent while nothing listens is lost, and only the *next*
    send learns of it (ICMP port unreachable); use the Unix socket or the HTTP sink when every record
    must arrive. A Unix socket whose receiver is gone fails at once, and the batch stays spooled.
    """

    def __init__(self, address: str, spool_dir: Path | str, spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES,
                 *, facility: int = FACILITY_AUTHPRIV, app_name: str = "depthguard",
                 hostname: str | None = None, retry_min: float = 0.5, retry_max: float = 30.0,
                 close_timeout: float = 5.0) -> None:
        self.address = address
        self._target: str | tuple[str, int]
        if address.startswith("/"):
            self._family = socket.AF_UNIX
            self._target = address
        else:
            host, sep, port = address.rpartition(":")
            if not sep or not port.isdigit() or not host:
                raise ConfigError("", "audit.remote.address",
                                  f"expected host:port or a socket path: {address!r}")
            host = host.strip("[]")
            self._family = socket.AF_INET6 if ":" in host else socket.AF_INET
            self._target = (host, int(port))
        self.facility = facility
        self.app_name = _printable(app_name, 48)
        self.hostname = _printable(hostname or socket.gethostname(), 255)
        self.procid = str(os.getpid())
        self._sock: socket.socket | None = None
        super().__init__(f"syslog:{address}", spool_dir, spool_max_bytes, retry_min=retry_min,
                         retry_max=retry_max, close_timeout=close_timeout)

    def format(self, line: bytes) -> bytes:
        """One RFC 5424 message: ``<PRI>1 TIMESTAMP HOST APP PROCID MSGID - MSG``."""
        try:
            rec = json.loads(line)
        except ValueError:
            rec = {}
        if not isinstance(rec, dict):
            rec = {}
        event = str(rec.get("event") or "-")
        if rec.get("decision") == "deny":
            severity = _SEVERITY_WARNING
        elif event.endswith(".dropped") or event == "backend.error":
            severity = _SEVERITY_ERR
        else:
            severity = _SEVERITY_INFO
        stamp = rec.get("time")
        if not isinstance(stamp, str) or not stamp:
            stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        header = (f"<{self.facility * 8 + severity}>1 {_printable(stamp, 64)} {self.hostname} "
                  f"{self.app_name} {self.procid} {_printable(event, 32)} - ")
        return header.encode("ascii") + line

    def _connect(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(self._family, socket.SOCK_DGRAM)
            try:
                sock.settimeout(2.0)
                sock.connect(self._target)  # connected: errors (ICMP refused, ENOENT) surface on send
            except OSError:
                sock.close()
                raise
            self._sock = sock
        return self._sock

    def _deliver(self, lines: list[bytes]) -> None:
        try:
            sock = self._connect()
            for line in lines:
                sock.send(self.format(line))
        except OSError:
            self._close_transport()  # reconnect next time (the receiver may have been restarted)
            raise

    def _close_transport(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _printable(text: str, limit: int) -> str:
    """RFC 5424 header fields: printable US-ASCII without spaces, bounded, ``-`` when empty."""
    cleaned = "".join(ch for ch in text if 33 <= ord(ch) <= 126)[:limit]
    return cleaned or "-"
