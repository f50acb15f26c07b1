"""Validators for the key, JWT, URL and generic-assignment rules (keys/jwt/urls/generic.toml).

Pure and offline, like every validator: they only decide whether a regex match is structurally a
credential. Anything that is "probably a dummy" is left to ``scanners.filters`` so it stays
switchable by filter id; validators reject what cannot be a secret at all.
"""

from __future__ import annotations

import csv
import functools
import json
import re

from scanners.entropy import shannon
from scanners.filters import looks_dummy, non_secret_name
from scanners.validators.core import Validator, b64decode_strict, jwt

_B64_CHARS = re.compile(rb"[^A-Za-z0-9+/=]")
_HEADER_LINE = re.compile(rb"^[A-Za-z][A-Za-z0-9-]{1,40}:")
_ESCAPES = re.compile(rb"\\r\\n|\\n|\\r|\\u000[aA]")
_CONCAT = re.compile(rb"""["']\s*(?:\+|\.|&|\\)?\s*["']?|["']\s*$|^\s*["']""")
_ASCENDING_RUN = re.compile(rb"(?i)abcdefgh|bcdefghi|cdefghij|12345678|23456789|ABCDEFGH")


def _b64(data: bytes) -> bytes | None:
    return b64decode_strict(data, urlsafe=False)


def _pem_body(block: bytes) -> bytes:
    """The base64 payload of a PEM block written raw, with ``\\n`` escapes (JSON/YAML strings) or as
    concatenated string literals; armour headers (``Proc-Type:``, ``Version:``) are dropped."""
    text = _ESCAPES.sub(b"\n", block)
    out = []
    for raw in text.splitlines():
        line = _CONCAT.sub(b"", raw.strip()).strip().strip(b"\"',;+").strip()
        if not line or line.startswith(b"-----") or _HEADER_LINE.match(line):
            continue
        if line.startswith(b"=") and len(line) == 5:  # PGP CRC-24 armour checksum
            continue
        out.append(line)
    return b"".join(out)


def pem_private_key(secret: bytes, m: re.Match[bytes]) -> bool:
    """A PEM private-key block with a real-looking body: at least 64 base64 characters (the smallest
    real key, Ed25519 PKCS#8, has 64), only base64 in it, random-looking (no ``abcdefgh`` runs, high
    entropy). Rejects stubs (``MIIE...``), ``<key here>`` and truncated examples."""
    body = _pem_body(secret)
    if len(body) < 64 or _B64_CHARS.search(body):
        return False
    if _ASCENDING_RUN.search(body):
        return False
    return shannon(body.decode("ascii")) >= 4.6


def pem_base64_private(secret: bytes, m: re.Match[bytes]) -> bool:
    """Base64 of a whole PEM file (Kubernetes ``tls.key: LS0tLS1CRUdJTi…``) whose decoded text is a
    private key, not a certificate or public key."""
    raw = _b64(secret.replace(b"\\n", b"").replace(b"\n", b""))
    if raw is None:
        # a long blob may be cut by the regex bound: decode the leading whole quantum only
        raw = _b64(secret[: len(secret) - len(secret) % 4])
        if raw is None:
            return False
    head = raw[:80]
    if b"PRIVATE KEY-----" not in head:
        return False
    return len(raw) > 150 and pem_private_key(raw, m)


# jwt.io's default sample and its common variants: published, documented, never a live credential.
_JWT_SAMPLE_CLAIMS = (
    {"sub": "1234567890", "name": "John Doe"},
    {"sub": "1234567890", "name": "John Doe", "admin": True},
)
_JWT_TEST_ISSUERS = re.compile(
    r"(?i)^(?:test|testing|example|fake|dummy|sample|issuer|your[-_ ]?issuer|jwt\.io)$"
)


def _jwt_payload(secret: bytes) -> dict[str, object] | None:
    parts = secret.split(b".")
    seg = parts[1] if len(parts) >= 2 else b""
    raw = _b64(seg.replace(b"-", b"+").replace(b"_", b"/"))
    try:
        value = json.loads(raw) if raw is not None else None
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def jwt_credential(secret: bytes, m: re.Match[bytes]) -> bool:
    """A structurally valid JWT (core ``jwt``) that is not a published fixture: jwt.io's
    ``John Doe / 1234567890`` sample, or a token whose issuer is literally "test"/"example". The
    signature must be present (``alg: none`` tokens carry no key material and are not bearer-safe
    anyway). JWE (five parts) passes on its header alone."""
    if not jwt(secret, m):
        return False
    if secret.count(b".") == 4:
        return True
    payload = _jwt_payload(secret)
    if payload is None:
        return False
    for sample in _JWT_SAMPLE_CLAIMS:
        if all(payload.get(k) == v for k, v in sample.items()):
            return False
    iss = payload.get("iss")
    return not (isinstance(iss, str) and _JWT_TEST_ISSUERS.match(iss))


def bearer_token(secret: bytes, m: re.Match[bytes]) -> bool:
    """A bearer token in an Authorization header; when it is a JWT it must pass ``jwt_credential``
    (so jwt.io's published sample in a README is not reported)."""
    if secret.startswith(b"eyJ") and secret.count(b".") in (2, 4):
        return jwt_credential(secret, m)
    return True


_URL_TEMPLATE = re.compile(
    rb"^(?:%[sdv]|%\([A-Za-z_]+\)s|\{[^}]*\}?|\$.*|<.*|\[.*|:[A-Za-z_]+|\?+|\*+|x+|X+|#+|\.+|_+|-+|[0-9]{1,5})$"
)


def url_password(secret: bytes, m: re.Match[bytes]) -> bool:
    """The password part of a credential URL or connection string: not empty, not a template
    (``%s``, ``{password}``, ``$DB_PASS``, ``<pass>``, ``:password``), not a bare port-like number
    (``http://host:8080@…``), not a dummy (``postgres``, ``user:password``), not the user name
    (group ``user``, else ``key``; SQL ``CREATE USER app PASSWORD 'app'`` names it ``user``)."""
    if len(secret) < 3 or _URL_TEMPLATE.match(secret):
        return False
    user = b""
    for name in ("user", "key"):
        if name in m.re.groupindex and m.group(name):
            user = m.group(name)
            break
    text = secret.decode("utf-8", "replace")
    return not looks_dummy(text, user.decode("utf-8", "replace"))


def basic_auth(secret: bytes, m: re.Match[bytes]) -> bool:
    """``Authorization: Basic <base64>``: decodes to ``user:password`` with a non-dummy password."""
    raw = _b64(secret)
    if raw is None or b":" not in raw:
        return False
    try:
        user, _, password = raw.decode("utf-8").partition(":")
    except UnicodeDecodeError:
        return False
    if len(password) < 4 or not password.isprintable():
        return False
    return not looks_dummy(password, user)


def pkcs12_der(secret: bytes, m: re.Match[bytes]) -> bool:
    """Base64 of a PKCS#12 (PFX) file: a DER/BER SEQUENCE whose first element is INTEGER 3."""
    raw = _b64(secret[:64])
    if raw is None or len(raw) < 8 or raw[0] != 0x30:
        return False
    i = 2 if raw[1] < 0x80 or raw[1] == 0x80 else 2 + (raw[1] & 0x7F)
    return raw[i : i + 3] == b"\x02\x01\x03"


_B64_PADDED = re.compile(rb"(?:[A-Za-z0-9+/_-]{4})*[A-Za-z0-9+/_-]{2,3}={1,2}")
# Code shapes of an unquoted value: a call or index on a name (``get(x)``, ``creds[0]``, ``t.pw}``), a
# leading bracket or ``%{``, YAML alias/anchor (``*db_pass``) or bare tag (``!vault``), markup
# (``x</td>``), a keyword. Other punctuation is a literal: generated .env secrets contain ``(``,
# ``)``, ``!``, ``^`` and may start with ``*``, ``&`` or ``%``.
_UNQUOTED_CODE = re.compile(
    rb"^[A-Za-z_$][\w$.]*(?:\(.*\)|\[.*\]|[(\[](?:[\w$.]*|[^\w\s]*)|[)\]}]+)$|^[(\[{]|^%[({]"
    rb"|^[*&@][A-Za-z_][\w.-]*$|\[[^\]]{1,20}\][*+?{]"
    rb"|^!!?[A-Za-z][A-Za-z0-9_/:.-]*$|[<>]|^(?:new|await|function|lambda|fn)\b"
)
# Prose, not a secret: three or more words separated by single spaces (``put your unique phrase here``).
_PROSE = re.compile(rb"^[A-Za-z][a-z']*(?: [A-Za-z][a-z']*[.,!]?){2,}$")


_INTERPOLATION = re.compile(rb"\{[A-Za-z_][\w.]*(?:\(|\}|\[|$)")


def generic_assignment(secret: bytes, m: re.Match[bytes]) -> bool:
    """Generic assignments: an unquoted value that is code (``get_password()``, ``creds[0]``,
    ``*alias``) is not a literal; a value ending in ``=`` must be padded base64; a quoted value made
    of plain words is prose; the comma form (``"password", "v"``) must be quoted; a setter-call
    form (``x("v")``) must be a quoted literal passed to a
    ``set…``/``with…`` method or a builder call (``.password("v")``)."""
    quoted = "q" in m.re.groupindex and bool(m.group("q"))
    if _INTERPOLATION.match(secret):
        return False  # f-string / template interpolation: ``"{user.password}"``, ``"{make(pw)}"``
    sep = m.group("sep").strip() if "sep" in m.re.groupindex and m.group("sep") else b""
    if "key" in m.re.groupindex and m.group("key") and sep.startswith(b":"):
        key_start = m.start("key")
        if key_start > 0 and m.string[key_start - 1 : key_start] in (b"$", b"{"):
            return False  # shell expansion (``-v "$PWD:/src"``), not a ``key: value`` pair
    if not quoted and secret.endswith(b"=") and not _B64_PADDED.fullmatch(secret):
        return False  # unquoted "x=" is the next assignment (``a=b= …``); quotes delimit the value
    if _PROSE.match(secret):
        return False
    if not quoted and (_UNQUOTED_CODE.search(secret) or secret.startswith(b"=")):
        return False  # code, or a comparison (``a==b``)
    if sep.endswith(b",") and not quoted:
        return False  # ``f("password", expr)``: the comma form passes a literal only when quoted
    if sep == b"(":
        key = (m.group("key") or b"").lower() if "key" in m.re.groupindex else b""
        builder = key.startswith(b".") or m.group(0)[:1] == b"."
        key = re.split(rb"\.|->|::", key)[-1]
        if not quoted or not (key.startswith((b"set", b"with")) or builder):
            return False
    return True


# A CSV header: 2..64 short column names, optionally quoted, split by one delimiter.
# Kept within what the rule's Hyperscan anchor accepts (names of [A-Za-z0-9 _.-], the secret column
# among the first 31), so both prefilters report the same rows.
_CSV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9 _.-]{0,39}$")
_CSV_SECRET_NAME = re.compile(
    r"(?i)(?:^|[_ .-])(?:passw(?:or)?d|pwd|secret|token|api[_ .-]?key|apikey|access[_ .-]?key|"
    r"private[_ .-]?key|client[_ .-]?secret|credentials?)(?:$|[_ .-])"
    r"|(?-i:[a-z](?:Password|Secret|Token|ApiKey|AccessKey|PrivateKey)$)"
)
_CSV_MAX_COLUMN = 30
_CSV_MAX_LINE = 4096
_CSV_SPAN = 15000  # rows must end within this many bytes of the file start (the rule's span is 16000)
_CSV_FIELD_END = frozenset(b",;\t\r\n\"")


@functools.lru_cache(maxsize=64)
def _csv_secret_columns(header: bytes) -> tuple[str, int, frozenset[int]] | None:
    """(delimiter, column count, indexes of secret-named columns) of a CSV header line, or None when
    the line is not a header of short names or names no secret column."""
    text = header.decode("utf-8", "replace").strip().lstrip("\ufeff")
    for delim in (",", ";", "\t"):
        if delim not in text:
            continue
        names = [n.strip().strip('"').strip() for n in next(csv.reader([text], delimiter=delim))]
        if not 2 <= len(names) <= 64 or not all(_CSV_NAME.match(n) for n in names):
            return None
        cols = frozenset(
            i
            for i, n in enumerate(names)
            if i <= _CSV_MAX_COLUMN and _CSV_SECRET_NAME.search(n) and not non_secret_name(n)
        )
        return (delim, len(names), cols) if cols else None
    return None


def csv_secret_column(secret: bytes, m: re.Match[bytes]) -> bool:
    """A field of a CSV data row that sits in a column whose header (the file's first line) names a
    secret (``api_key``, ``client_secret``, ``password``; not ``password_hash`` or ``token_type``),
    and the row has as many fields as the header. Both lines are bounded (4 KiB), so a file of one
    huge line costs a bounded search per candidate; rows end within the first 15,000 bytes (the
    window the rule's Hyperscan anchor opens after the header)."""
    data = m.string
    nl = data.find(b"\n", 0, _CSV_MAX_LINE)
    start, end = m.span("secret")
    if nl < 0 or start <= nl or (end < len(data) and data[end] not in _CSV_FIELD_END):
        return False  # no header line, the header itself, or a field longer than the regex bound
    spec = _csv_secret_columns(bytes(data[:nl]))
    if spec is None:
        return False
    delim, ncols, cols = spec
    lo = data.rfind(b"\n", max(0, start - _CSV_MAX_LINE), start) + 1
    if lo == 0:
        return False  # the row is longer than a CSV row of short fields
    hi = data.find(b"\n", start, start + _CSV_MAX_LINE)
    if hi < 0:
        if len(data) - start > _CSV_MAX_LINE:
            return False
        hi = len(data)
    if hi > _CSV_SPAN:
        return False
    row = bytes(data[lo:hi]).rstrip(b"\r")
    raw_fields = row.split(delim.encode())
    # no quoted delimiters (the naive split equals the CSV parse), so the field index is exact
    parsed = next(csv.reader([row.decode("utf-8", "replace")], delimiter=delim), [])
    if len(raw_fields) != ncols or len(parsed) != ncols:
        return False
    index = row[: start - lo].count(delim.encode())
    return index in cols


VALIDATORS: dict[str, Validator] = {
    "pem-private-key": pem_private_key,
    "pem-base64-private": pem_base64_private,
    "jwt-credential": jwt_credential,
    "bearer-token": bearer_token,
    "url-password": url_password,
    "basic-auth": basic_auth,
    "pkcs12-der": pkcs12_der,
    "generic-assignment": generic_assignment,
    "csv-secret-column": csv_secret_column,
}
