"""Structural checks that a regex cannot express, referenced from rules by stable id.

A validator sees the secret bytes and the whole regex match, and answers "could this be real?".
They are pure and cheap: they never touch the network (live verification is a separate, opt-in step).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import zlib
from collections.abc import Callable

Validator = Callable[[bytes, "re.Match[bytes]"], bool]

BASE62 = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def base62_crc32(data: bytes, width: int = 6) -> bytes:
    """CRC32 in base62, zero-padded: the checksum GitHub and npm append to their tokens."""
    n = zlib.crc32(data) & 0xFFFFFFFF
    out = bytearray()
    while n:
        n, r = divmod(n, 62)
        out.append(BASE62[r])
    return bytes(reversed(out)).rjust(width, b"0")


def crc32_token(secret: bytes, m: re.Match[bytes]) -> bool:
    """GitHub (ghp_/gho_/ghu_/ghs_/ghr_) and npm (npm_) tokens: 30 random chars + 6-char checksum."""
    _, _, body = secret.rpartition(b"_")
    if len(body) < 7:
        return False
    payload, check = body[:-6], body[-6:]
    return check in (base62_crc32(payload), base62_crc32(secret[: -6]))


def b64decode_strict(text: bytes, *, urlsafe: bool = True) -> bytes | None:
    """Strict (standard, or URL-safe when ``urlsafe``) base64, padding optional; None when ``text``
    is not base64. Family validators share this one so padding rules never drift apart."""
    if urlsafe:
        text = text.replace(b"-", b"+").replace(b"_", b"/")
    text = text.rstrip(b"=")
    text += b"=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _b64decode(text: bytes) -> bytes | None:
    cleaned = text.strip().replace(b"\\n", b"").replace(b"\n", b"").replace(b"\r", b"")
    cleaned = cleaned.replace(b"-", b"+").replace(b"_", b"/")
    cleaned += b"=" * (-len(cleaned) % 4)
    try:
        return base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        return None


def _json_object(raw: bytes | None) -> dict[str, object] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def jwt(secret: bytes, m: re.Match[bytes]) -> bool:
    """A JWT whose header decodes to a JSON object naming ``alg`` and whose payload is JSON."""
    parts = secret.split(b".")
    if len(parts) not in (3, 5):
        return False
    header = _json_object(_b64decode(parts[0]))
    if header is None or "alg" not in header:
        return False
    if len(parts) == 5:  # JWE: the payload is encrypted, the header is all we can check
        return "enc" in header
    return _json_object(_b64decode(parts[1])) is not None


def base64_any(secret: bytes, m: re.Match[bytes]) -> bool:
    """Decodes as (standard or URL-safe) base64."""
    return _b64decode(secret) is not None


def base64_64_bytes(secret: bytes, m: re.Match[bytes]) -> bool:
    """Azure storage / Cosmos / Service Bus keys are base64 of 64 or 32 random bytes."""
    raw = _b64decode(secret)
    return raw is not None and len(raw) in (32, 64)


def pypi_macaroon(secret: bytes, m: re.Match[bytes]) -> bool:
    """PyPI API tokens are ``pypi-`` + a base64 macaroon whose location is pypi.org or test.pypi.org."""
    raw = _b64decode(secret.removeprefix(b"pypi-")[:120])
    if raw is None:
        raw = _b64decode(secret.removeprefix(b"pypi-")[:116])
    return raw is not None and b"pypi.org" in raw


def pem_body(secret: bytes, m: re.Match[bytes]) -> bool:
    """A private-key block whose body is real base64 of a plausible size, not ``...`` or a stub."""
    text = m.group(0)
    lines = [
        ln.strip()
        for ln in text.replace(b"\\n", b"\n").splitlines()
        if ln.strip() and not ln.strip().startswith(b"-----") and b":" not in ln
    ]
    body = b"".join(lines).strip(b"\"'")
    if len(body) < 64:
        return False
    return _b64decode(body) is not None


def json_service_account(secret: bytes, m: re.Match[bytes]) -> bool:
    """A GCP service-account key: the matched blob holds ``private_key`` with a real PEM body."""
    return b"private_key" in m.group(0) and len(secret) >= 64


def not_all_same_class(secret: bytes, m: re.Match[bytes]) -> bool:
    """Random tokens mix character classes; all-letters or all-digits values are words or numbers."""
    has_digit = any(48 <= c <= 57 for c in secret)
    has_alpha = any((65 <= c <= 90) or (97 <= c <= 122) for c in secret)
    return has_digit and has_alpha


VALIDATORS: dict[str, Validator] = {
    "crc32-token": crc32_token,
    "jwt": jwt,
    "base64": base64_any,
    "base64-key": base64_64_bytes,
    "pypi-macaroon": pypi_macaroon,
    "pem-body": pem_body,
    "gcp-service-account": json_service_account,
    "mixed-chars": not_all_same_class,
}
