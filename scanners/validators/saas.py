"""Structural checks for the AI, observability and SaaS rule families.

Several providers wrap a JSON document in base64 (Sentry org tokens, legacy Grafana API keys, Mapbox
secret tokens, 1Password service-account tokens) or a ``prefix:value`` string (Intercom, Elastic API
keys): decoding it removes random look-alikes a regex cannot tell apart. Context rules (a provider
word near an unprefixed hex/UUID/base62 value) also check that the name they matched does not say
"identifier", "hash" or "public", which is where most of their false positives come from.
All checks are pure and offline.
"""

from __future__ import annotations

import base64
import binascii
import json
import re

from scanners.validators.core import Validator

_B64_TAIL = re.compile(rb"^[A-Za-z0-9+/_-]+={0,3}$")
_KEY_PART = re.compile(rb"^[A-Za-z0-9_-]{16,64}$")

# Names that say the value is an identifier, a digest or a deliberately public key.
_NOT_SECRET_NAME = re.compile(
    rb"(?:^|[^a-z])(?:ids?|uuid|guid|hash|sha\d*|md5|digest|checksum|commit|fingerprint|etag|integrity"
    rb"|public|publishable|search|searchonly|search_only|version|trace|span)(?:[^a-z]|$)"
)


def _b64json(text: bytes) -> dict[str, object] | None:
    """Decode standard or URL-safe base64 (padding optional) and parse a JSON object, else None."""
    if not _B64_TAIL.match(text):
        return None
    cleaned = text.rstrip(b"=").replace(b"-", b"+").replace(b"_", b"/")
    cleaned += b"=" * (-len(cleaned) % 4)
    try:
        raw = base64.b64decode(cleaned, validate=True)
        value = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _b64ascii(text: bytes) -> bytes | None:
    """Decode base64 (standard or URL-safe) to printable ASCII, else None."""
    cleaned = text.rstrip(b"=").replace(b"-", b"+").replace(b"_", b"/")
    cleaned += b"=" * (-len(cleaned) % 4)
    try:
        raw = base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        return None
    if not raw or any(c < 0x20 or c > 0x7E for c in raw):
        return None
    return raw


def context_not_identifier(secret: bytes, m: re.Match[bytes]) -> bool:
    """Context rules: the text between the provider word and the value must not name an id, a digest
    or a public/search key (``DD_APPLICATION_ID``, ``ALGOLIA_SEARCH_KEY``, ``sentry_commit_sha``)."""
    prefix = m.group(0)[: m.start("secret") - m.start()].lower()
    return not _NOT_SECRET_NAME.search(prefix)


def no_openai_marker(secret: bytes, m: re.Match[bytes]) -> bool:
    """``sk-`` keys of other vendors (DeepSeek, Stability) must not claim an OpenAI key, which always
    carries the base64 of "OpenAI" (``T3BlbkFJ``)."""
    return b"T3BlbkFJ" not in secret and context_not_identifier(secret, m)


def sentry_org_token(secret: bytes, m: re.Match[bytes]) -> bool:
    """``sntrys_<base64 JSON with iat>_<signature>``: the payload is a JSON object naming ``iat``."""
    body = secret.removeprefix(b"sntrys_")
    payload, _, _sig = body.rpartition(b"_")
    obj = _b64json(payload)
    return obj is not None and "iat" in obj


def grafana_legacy_key(secret: bytes, m: re.Match[bytes]) -> bool:
    """Legacy Grafana API keys are base64 of ``{"k":...,"n":...,"id":N}``."""
    obj = _b64json(secret)
    return obj is not None and "k" in obj


def mapbox_secret_token(secret: bytes, m: re.Match[bytes]) -> bool:
    """``sk.<base64 JSON {"u":user,"a":id}>.<signature>``."""
    parts = secret.split(b".")
    if len(parts) != 3:
        return False
    obj = _b64json(parts[1])
    return obj is not None and "u" in obj


def onepassword_service_account(secret: bytes, m: re.Match[bytes]) -> bool:
    """``ops_`` + base64 of a JSON object (sign-in address, keys) describing the service account."""
    return _b64json(secret.removeprefix(b"ops_")) is not None


def intercom_token(secret: bytes, m: re.Match[bytes]) -> bool:
    """Intercom access tokens are base64 of ``tok:<uuid>:<n>:<n>``."""
    raw = _b64ascii(secret)
    return raw is not None and raw.startswith(b"tok:") and len(raw) >= 30


def elastic_api_key(secret: bytes, m: re.Match[bytes]) -> bool:
    """An encoded Elasticsearch API key is base64 of ``<id>:<api_key>``, both URL-safe base64 text."""
    raw = _b64ascii(secret)
    if raw is None or raw.count(b":") != 1:
        return False
    key_id, _, key = raw.partition(b":")
    return bool(_KEY_PART.match(key_id)) and bool(_KEY_PART.match(key)) and context_not_identifier(secret, m)


VALIDATORS: dict[str, Validator] = {
    "context-not-identifier": context_not_identifier,
    "no-openai-marker": no_openai_marker,
    "sentry-org-token": sentry_org_token,
    "grafana-legacy-key": grafana_legacy_key,
    "mapbox-secret-token": mapbox_secret_token,
    "onepassword-service-account": onepassword_service_account,
    "intercom-token": intercom_token,
    "elastic-api-key": elastic_api_key,
}
