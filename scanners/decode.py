"""Turn raw file bytes into scannable bytes: skip binaries, transcode UTF-16/32 to UTF-8.

Everything else (UTF-8, latin-1, mixed) is scanned as raw bytes: the rules are ASCII, so no decode is
needed and none can fail. Only findings are decoded, later.
"""

from __future__ import annotations

import codecs

SNIFF = 8192
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def _transcode(raw: bytes, encoding: str, skip: int) -> bytes:
    return raw[skip:].decode(encoding, errors="replace").encode("utf-8", errors="replace")


def _looks_utf16(head: bytes) -> str | None:
    """BOM-less UTF-16 (Windows tools write it): NULs on one parity only, mostly ASCII on the other."""
    if len(head) < 16:
        return None
    even, odd = head[0::2], head[1::2]
    if odd.count(0) > 0.9 * len(odd) and even.count(0) < 0.05 * len(even):
        return "utf-16-le"
    if even.count(0) > 0.9 * len(even) and odd.count(0) < 0.05 * len(odd):
        return "utf-16-be"
    return None


def is_binary(head: bytes) -> bool:
    """A NUL in the first block that no UTF-16/32 text explains means binary."""
    if b"\0" not in head:
        return False
    if any(head.startswith(bom) for bom, _ in _BOMS):
        return False
    return _looks_utf16(head) is None


def prepare(raw: bytes) -> bytes | None:
    """Bytes to scan, or None for a binary file (a NUL in the first 8 KiB that is not UTF-16/32)."""
    if raw.startswith(codecs.BOM_UTF8):
        return raw[len(codecs.BOM_UTF8) :]
    for bom, enc in _BOMS:
        if raw.startswith(bom):
            return _transcode(raw, enc, len(bom))
    head = raw[:SNIFF]
    if b"\0" in head:
        guessed = _looks_utf16(head)
        return _transcode(raw, guessed, 0) if guessed else None
    return raw
