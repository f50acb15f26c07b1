"""Reading untrusted archives in bounded memory: tar streams, gzip, and zips/tars nested in them.

Container layers come from strangers, so everything here streams: a tar is read header by header in
tarfile's stream mode (no seeking, no member list kept), gzip is inflated in small chunks under a
ratio limit, and per nesting level at most one regular member (``max_file_size``) or one nested zip
(``max_nested_size``: zip needs random access) is held in memory. Image-wide limits (bytes, members)
live in one :class:`Budget` shared by every reader.

Never writes to disk, never uses a member name as a filesystem path (names are only normalised for
reporting), never logs member contents.
"""

from __future__ import annotations

import hashlib
import io
import lzma
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Self

from scanners.decode import SNIFF, is_binary, prepare
from scanners.result import ScanStats

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

CHUNK = 64 * 1024
RATIO_FLOOR = 1024 * 1024
"""Output below this is never called a bomb, whatever its ratio: a few KiB of zeros compress 1000:1."""
MAX_TAR_METADATA = 1024 * 1024
"""Largest pax or GNU long-name header accepted: tarfile reads such headers whole into memory."""
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
_TAR_METADATA_TYPES = frozenset(
    (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE,
     tarfile.SOLARIS_XHDTYPE)
)

FORMAT_ERRORS: tuple[type[Exception], ...] = (
    tarfile.TarError, zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError, ValueError,
    NotImplementedError,
)
"""What the stdlib raises on corrupt, truncated or unsupported archive data (zipfile reports an
unknown compression method as NotImplementedError, bz2 corruption as OSError)."""


class BudgetExceeded(Exception):
    """An image-wide limit ran out: the whole scan stops here and keeps what it found so far."""


class ArchiveError(Exception):
    """One archive (a layer or a nested archive) cannot be read any further.

    ``scope`` identifies that archive, so that an error surfacing through a nested archive's parser
    (a truncated layer read while a jar inside it is open) is reported against the archive it
    belongs to, not against the innermost one that happened to be reading."""

    def __init__(self, message: str, scope: object) -> None:
        super().__init__(message)
        self.scope = scope


@dataclass(slots=True)
class Budget:
    """Image-wide limits and how much of them is used; one instance is shared by every reader."""

    max_total_bytes: int
    max_members: int
    max_ratio: float
    max_depth: int
    max_nested_size: int
    max_file_size: int
    bytes_read: int = 0
    """Uncompressed bytes read so far, nested archives included."""
    members: int = 0
    """Tar and zip members met so far, nested archives included."""

    def take_bytes(self, n: int) -> None:
        self.bytes_read += n
        if self.bytes_read > self.max_total_bytes:
            raise BudgetExceeded(f"read limit of {self.max_total_bytes} uncompressed bytes reached")

    def take_member(self) -> None:
        self.members += 1
        if self.members > self.max_members:
            raise BudgetExceeded(f"limit of {self.max_members} archive members reached")

    def inflate_allowance(self, compressed: int) -> int:
        """Most bytes a stream of ``compressed`` bytes may inflate to before it counts as a bomb."""
        return max(int(self.max_ratio * compressed), RATIO_FLOOR)


def describe(exc: BaseException) -> str:
    """A one-line reason for a stdlib archive error (their messages never include content)."""
    if isinstance(exc, ArchiveError):
        return str(exc)
    if isinstance(exc, tarfile.TarError):
        return f"corrupt or truncated tar ({exc})"
    if isinstance(exc, zipfile.BadZipFile):
        return f"corrupt zip ({exc})"
    if isinstance(exc, zlib.error | lzma.LZMAError):
        return f"corrupt compressed data ({exc})"
    if isinstance(exc, EOFError):
        return "truncated data (unexpected end of file)"
    if isinstance(exc, NotImplementedError):
        return f"unsupported format ({exc})"
    return f"{type(exc).__name__}: {exc}"


def normalize(name: str) -> tuple[str, bool]:
    """``(path, escaped)``: ``name`` without ``.``/empty parts, ``..`` resolved so that it cannot
    climb above the root, no leading ``/``. ``escaped`` says the name was absolute or tried to climb
    out: harmless here (nothing is extracted) but a sign of a hostile archive worth a warning."""
    escaped = name.startswith("/")
    parts: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            else:
                escaped = True
            continue
        parts.append(part)
    return "/".join(parts), escaped


def printable(path: str) -> str:
    """``path`` with control characters escaped: member names are chosen by the image's author, and
    a newline in one must not forge an extra line in a warning."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in path)


def looks_like_tar(head: bytes) -> bool:
    """POSIX/GNU tar headers carry ``ustar`` at offset 257 (old v7 tars do not; layers never are)."""
    return head[257:262] == b"ustar"


def archive_kind(head: bytes) -> str | None:
    """``zip``, ``gzip`` or ``tar`` from a member's first bytes, whatever its name says."""
    if head[:4] in ZIP_MAGICS:
        return "zip"
    if head[:2] == GZIP_MAGIC:
        return "gzip"
    if looks_like_tar(head):
        return "tar"
    return None


# -- readers ------------------------------------------------------------------------------------


class _Pull(io.RawIOBase):
    """A raw stream whose subclasses only say how to produce the next ``n`` bytes (at most ``n``);
    wrap it in ``io.BufferedReader`` to get a file object tarfile and zipfile accept."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        with memoryview(buffer) as view, view.cast("B") as out:
            data = self._pull(len(out))
            out[: len(data)] = data
        return len(data)

    def _pull(self, n: int) -> bytes:
        raise NotImplementedError


def buffered(raw: _Pull) -> io.BufferedReader:
    return io.BufferedReader(raw, CHUNK)


class HashingReader(_Pull):
    """Passes bytes through and hashes them: the layer digest check costs no second read."""

    def __init__(self, src: IO[bytes]) -> None:
        self._src = src
        self.sha256 = hashlib.sha256()
        self.size = 0

    def _pull(self, n: int) -> bytes:
        data = self._src.read(n)
        self.sha256.update(data)
        self.size += len(data)
        return data


class CountingReader(_Pull):
    """Charges every byte read from an uncompressed stream to the image's byte budget."""

    def __init__(self, src: IO[bytes], budget: Budget) -> None:
        self._src = src
        self._budget = budget

    def _pull(self, n: int) -> bytes:
        data = self._src.read(n)
        self._budget.take_bytes(len(data))
        return data


class ContinuedReader(_Pull):
    """``head`` (already read to sniff the format) followed by the rest of ``src``.

    Any failure of ``src`` belongs to the archive that holds this member (``scope``), so it is
    re-raised as that archive's :class:`ArchiveError`: the nested archive being parsed on top must
    neither take the blame for it nor swallow it."""

    def __init__(self, head: bytes, src: IO[bytes], scope: object) -> None:
        self._head = head
        self._src = src
        self._scope = scope

    def _pull(self, n: int) -> bytes:
        if self._head:
            out, self._head = self._head[:n], self._head[n:]
            return out
        try:
            return self._src.read(n)
        except (ArchiveError, BudgetExceeded):
            raise
        except Exception as exc:  # translation boundary: see the class docstring
            raise ArchiveError(describe(exc), self._scope) from exc


class GunzipReader(_Pull):
    """Streaming gzip (several members back to back allowed, as pigz writes) with a bomb check.

    The output may not exceed ``max_ratio`` times the stream's compressed size (known up front: a
    blob's or a member's size), so a bomb is stopped after at most that much output and memory never
    holds more than one chunk of it. Every byte is also charged to the image's byte budget."""

    def __init__(self, src: IO[bytes], budget: Budget, compressed_size: int, scope: object) -> None:
        self._src = src
        self._budget = budget
        self._scope = scope
        self._z = zlib.decompressobj(wbits=31)
        self._pending = b""
        self._done = False
        self._out = 0
        self._allowed = budget.inflate_allowance(compressed_size)

    def _pull(self, n: int) -> bytes:
        while not self._done and n > 0:
            if self._z.eof:
                self._next_member()
                continue
            if not self._pending:
                self._pending = self._src.read(CHUNK)
                if not self._pending:
                    raise ArchiveError("truncated gzip stream (unexpected end of data)", self._scope)
            try:
                out = self._z.decompress(self._pending, n)
            except zlib.error as exc:
                raise ArchiveError(f"corrupt gzip stream ({exc})", self._scope) from exc
            self._pending = self._z.unused_data if self._z.eof else self._z.unconsumed_tail
            if out:
                self._count(len(out))
                return out
        return b""

    def _next_member(self) -> None:
        """Another gzip member follows, or the stream is over: bytes after the last member are
        padding and ignored, as gzip itself does."""
        while len(self._pending) < 2:
            more = self._src.read(CHUNK)
            if not more:
                break
            self._pending += more
        if self._pending[:2] == GZIP_MAGIC:
            self._z = zlib.decompressobj(wbits=31)
        else:
            self._done = True

    def _count(self, n: int) -> None:
        self._out += n
        if self._out > self._allowed:
            raise ArchiveError(
                f"inflates beyond {self._budget.max_ratio:g}:1 of its compressed size "
                f"(a decompression bomb?); aborted after {self._out} bytes",
                self._scope,
            )
        self._budget.take_bytes(n)


# -- tar ----------------------------------------------------------------------------------------


class CheckedTarInfo(tarfile.TarInfo):
    """tarfile, stricter where it is lenient or unbounded.

    tarfile ends an archive quietly at a truncated or checksum-failing header (so a corrupt layer
    would look complete), and reads pax and GNU long-name headers whole into memory whatever size
    they claim. Both become ``tarfile.ReadError`` here. A stream that ends exactly between members
    without the end-of-archive blocks is still accepted, as Go's archive/tar (Docker's) accepts it."""

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
        if len(buf) == 0 or buf.count(0) == len(buf) == tarfile.BLOCKSIZE:
            return super().frombuf(buf, encoding, errors)  # end of data / end-of-archive block
        if len(buf) != tarfile.BLOCKSIZE:
            raise tarfile.ReadError("truncated tar header")
        try:
            return super().frombuf(buf, encoding, errors)
        except tarfile.HeaderError as exc:
            raise tarfile.ReadError(f"invalid tar header ({exc})") from None

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in _TAR_METADATA_TYPES and self.size > MAX_TAR_METADATA:
            raise tarfile.ReadError(f"oversized tar metadata header ({self.size} bytes)")
        member: tarfile.TarInfo = super()._proc_member(tarfile_)  # type: ignore[misc]
        return member


def iter_tar(stream: IO[bytes], budget: Budget) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
    """Members in stream order, each charged to the member budget. A member's content can be read
    (``tar.extractfile(member)``) only until the next member is asked for."""
    tar = tarfile.open(fileobj=stream, mode="r|", tarinfo=CheckedTarInfo)  # noqa: SIM115
    try:
        while (member := tar.next()) is not None:
            # stream mode still appends every header to tar.members: memory would grow with the
            # member count, and nothing here looks members up by name
            tar.members.clear()  # type: ignore[attr-defined]
            budget.take_member()
            yield tar, member
    finally:
        tar.close()


def zip_entry_count(data: bytes) -> int | None:
    """Entries a zip declares in its end-of-central-directory record (zip64 too), read before
    zipfile builds one object per entry; None when the record is not found."""
    pos = data.rfind(b"PK\x05\x06", max(0, len(data) - 65_557))
    if pos < 0 or pos + 22 > len(data):
        return None
    count = int.from_bytes(data[pos + 10 : pos + 12], "little")
    loc = pos - 20
    if count == 0xFFFF and loc >= 0 and data[loc : loc + 4] == b"PK\x06\x07":
        end64 = int.from_bytes(data[loc + 8 : loc + 16], "little")
        if data[end64 : end64 + 4] == b"PK\x06\x06":
            count = int.from_bytes(data[end64 + 32 : end64 + 40], "little")
    return count


# -- walking members ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileItem:
    """One file to scan."""

    path: str
    """Where it is; nested archives are joined with ``!/``: ``opt/app.jar!/config/app.properties``."""
    top: str
    """The layer member it came from (``path`` itself when not nested): deletion is decided on it."""
    data: bytes
    """Prepared for the engine (see ``scanners.decode.prepare``)."""


class Walker:
    """Turns archive members into files to scan: sniffs each member's first bytes, opens nested
    archives, and skips binaries, large files and duplicates (counted in ``stats``).

    Dedupe is per walker, i.e. per layer: identical contents are scanned once and reported at the
    first path met in tar order, later copies only count as ``skipped["duplicate"]``. A layer that
    vendors one file a thousand times then costs one scan and yields one finding per secret, and
    every copy would show the same secret anyway; its deleted mark is that of the first path."""

    def __init__(self, budget: Budget, stats: ScanStats, warn: Callable[[str], None]) -> None:
        self.budget = budget
        self.stats = stats
        self.warn = warn
        self._seen: set[bytes] = set()

    def member(
        self, path: str, top: str, size: int, reader: IO[bytes], depth: int, scope: object
    ) -> Iterator[FileItem]:
        """Files in one member of the archive identified by ``scope``, found at nesting ``depth``
        (0: directly in a layer)."""
        head = reader.read(SNIFF)
        kind = archive_kind(head)
        if kind is not None:
            yield from self._nested(kind, path, top, size, head, reader, depth, scope)
            return
        limit = self.budget.max_file_size
        if size > limit:
            self.stats.skip("too-large")
            return
        if is_binary(head):
            self.stats.skip("binary")
            return
        # read what the header declares (plus one byte, to catch a zip entry holding more than it
        # declared): a read of ``limit`` bytes would allocate that much up front for every file
        raw = head + reader.read(size - len(head) + 1) if len(head) == SNIFF else head
        if len(raw) > limit:
            self.stats.skip("too-large")
            return
        digest = hashlib.sha256(raw).digest()
        if digest in self._seen:
            self.stats.skip("duplicate")
            return
        self._seen.add(digest)
        data = prepare(raw)
        if data is None:
            self.stats.skip("binary")
            return
        yield FileItem(path, top, data)

    def _nested(
        self, kind: str, path: str, top: str, size: int, head: bytes, reader: IO[bytes], depth: int,
        scope: object,
    ) -> Iterator[FileItem]:
        if depth >= self.budget.max_depth:
            self.stats.skip("nested-depth")
            return
        if size > self.budget.max_nested_size:
            self.stats.skip("nested-too-large")
            return
        inner = object()  # identifies this archive in ArchiveError.scope
        src = buffered(ContinuedReader(head, reader, scope))
        try:
            if kind == "zip":
                data = src.read(size + 1)  # declared size, checked above; +1 catches a lie
                if len(data) > self.budget.max_nested_size:
                    self.stats.skip("nested-too-large")
                    return
                yield from self._zip(data, path + "!/", top, depth + 1, inner)
            elif kind == "gzip":
                gz = buffered(GunzipReader(src, self.budget, size, inner))
                first = gz.read(tarfile.BLOCKSIZE)
                if not looks_like_tar(first):  # a plain .gz file, not an archive
                    self.stats.skip("binary")
                    return
                yield from self._tar(buffered(ContinuedReader(first, gz, inner)), path + "!/", top,
                                     depth + 1, inner)
            else:
                yield from self._tar(src, path + "!/", top, depth + 1, inner)
        except ArchiveError as exc:
            if exc.scope is not inner:
                raise
            self.warn(f"{printable(path)}: {exc}; the rest of this archive was not scanned")
        except FORMAT_ERRORS as exc:  # raised by tarfile/zipfile while parsing this archive's data
            self.warn(f"{printable(path)}: {describe(exc)}; the rest of this archive was not scanned")

    def _tar(self, stream: IO[bytes], prefix: str, top: str, depth: int, scope: object) -> Iterator[FileItem]:
        for tar, member in iter_tar(stream, self.budget):
            if member.issym() or member.islnk():
                self.stats.skip("symlink" if member.issym() else "hardlink")
                continue
            name, escaped = normalize(member.name)
            if not member.isreg() or not name:
                continue
            if escaped:
                self.warn(f"{printable(prefix)}{member.name!r}: member name leaves the archive root; "
                          f"reported as {name!r}")
            reader = tar.extractfile(member)
            if reader is not None:
                yield from self.member(prefix + name, top, member.size, reader, depth, scope)

    def _zip(self, data: bytes, prefix: str, top: str, depth: int, scope: object) -> Iterator[FileItem]:
        declared = zip_entry_count(data)
        if declared is not None and self.budget.members + declared > self.budget.max_members:
            raise ArchiveError(f"declares {declared} entries, beyond the member limit", scope)
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            for info in zf.infolist():
                self.budget.take_member()
                if info.is_dir():
                    continue
                if stat.S_ISLNK(info.external_attr >> 16):
                    self.stats.skip("symlink")
                    continue
                if info.flag_bits & 0x1:
                    self.stats.skip("encrypted")
                    continue
                if info.file_size > self.budget.inflate_allowance(info.compress_size):
                    raise ArchiveError(
                        f"entry {info.filename!r} inflates beyond {self.budget.max_ratio:g}:1 "
                        f"({info.compress_size} -> {info.file_size} bytes: a zip bomb?); aborted",
                        scope,
                    )
                name, escaped = normalize(info.filename)
                if escaped:
                    self.warn(f"{printable(prefix)}{info.filename!r}: entry name leaves the archive root; "
                              f"reported as {name!r}")
                with zf.open(info) as fh:
                    reader = buffered(CountingReader(fh, self.budget))
                    yield from self.member(prefix + name, top, info.file_size, reader, depth, scope)
