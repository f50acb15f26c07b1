"""Structural checks for the cloud-provider rules (``scanners/rules/cloud-*.toml``).

Each check answers "could this be a real credential of that provider?" from the bytes alone: no
network, no checksums that synthetic or older tokens would fail, only the structure every issued value
has (decodable base64 of the right size, a fixed encoded header, a mix of character classes).
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from scanners.validators.core import Validator, b64decode_strict


def aws_secret_shape(secret: bytes, m: re.Match[bytes]) -> bool:
    """An AWS secret access key is 40 random base64-alphabet characters: it mixes upper case, lower
    case and digits, and is not a path (a run of ``/``-separated words has many slashes)."""
    has_upper = any(65 <= c <= 90 for c in secret)
    has_lower = any(97 <= c <= 122 for c in secret)
    has_digit = any(48 <= c <= 57 for c in secret)
    if not (has_upper and has_lower and has_digit):
        return False
    return secret.count(b"/") + secret.count(b"+") <= 5 and b"//" not in secret


def aws_bedrock_key(secret: bytes, m: re.Match[bytes]) -> bool:
    """Long-term Bedrock keys are ``ABSK`` + base64 of ``BedrockAPIKey-<id>:<secret>``; truncated or
    hand-made look-alikes do not decode to that shape."""
    raw = b64decode_strict(secret[4:])
    if raw is None or not raw.startswith(b"BedrockAPIKey-"):
        return False
    ident, sep, key = raw.partition(b":")
    return bool(sep) and len(ident) >= 20 and len(key) >= 20


def gcp_sa_private_key(secret: bytes, m: re.Match[bytes]) -> bool:
    """The ``private_key`` of a service-account JSON: a PEM whose body (JSON-escaped newlines) decodes
    as base64 to a key-sized blob, not ``...`` or a few characters of stub."""
    body = secret.replace(b"\\n", b"").replace(b"\\r", b"").replace(b"\n", b"")
    body = re.sub(rb"-----(?:BEGIN|END) (?:RSA )?PRIVATE KEY-----", b"", body)
    raw = b64decode_strict(body)
    return raw is not None and len(raw) >= 600


def azure_sas_signature(secret: bytes, m: re.Match[bytes]) -> bool:
    """A SAS ``sig`` is the URL-encoded base64 of an HMAC-SHA256 (32 bytes), and a usable SAS names
    its expiry and permissions (``se=``/``sp=``) or a stored access policy (``si=``)."""
    raw = b64decode_strict(unquote_to_bytes(secret))
    if raw is None or len(raw) != 32:
        return False
    query = m.group(0).lower()
    return (b"se=" in query and b"sp=" in query) or b"si=" in query


def base64_32_bytes(secret: bytes, m: re.Match[bytes]) -> bool:
    """Shared-access keys of Service Bus / Event Hubs / IoT Hub / Relay / SignalR and similar are base64
    of exactly 32 random bytes (44 characters with one ``=``)."""
    raw = b64decode_strict(secret)
    return raw is not None and len(raw) == 32


def mixed_case_digits(secret: bytes, m: re.Match[bytes]) -> bool:
    """Random alphanumeric tokens contain upper case, lower case and digits; identifiers and words
    (``MyServiceApiKeyValue``) lack digits or one case."""
    has_upper = any(65 <= c <= 90 for c in secret)
    has_lower = any(97 <= c <= 122 for c in secret)
    has_digit = any(48 <= c <= 57 for c in secret)
    return has_upper and has_lower and has_digit


_LONG_PLACEHOLDER = re.compile(
    rb"(?i)example|sample|dummy|placeholder|redacted|your[_-]|insert[_-]|x{6,}|\*{3,}|\.{3,}|<|>"
)


def long_token_not_placeholder(secret: bytes, m: re.Match[bytes]) -> bool:
    """For long random tokens (100+ characters) the generic placeholder filter is switched off because
    its three-letter words (``tbd``) occur by chance in real tokens; this keeps only the checks that
    cannot: documentation words (``EXAMPLE``), long masks (``xxxxxx``, ``***``, ``...``), ``<…>``."""
    return _LONG_PLACEHOLDER.search(secret) is None


VALIDATORS: dict[str, Validator] = {
    "long-token-not-placeholder": long_token_not_placeholder,
    "aws-secret-shape": aws_secret_shape,
    "aws-bedrock-key": aws_bedrock_key,
    "gcp-sa-private-key": gcp_sa_private_key,
    "azure-sas-signature": azure_sas_signature,
    "base64-32-bytes": base64_32_bytes,
    "mixed-case-digits": mixed_case_digits,
}
