"""Structural checks for VCS, CI and package-registry credentials (rule files ``vcs-*.toml``,
``ci.toml``, ``registries.toml``).

Every check here is pure and offline: it only looks at the matched bytes. Checksums (GitLab routable
tokens, Atlassian tokens) turn a "looks like" match into an almost certain one; decoding checks
(TeamCity, Docker/npm basic auth, JetBrains) reject random look-alikes and prose.
"""

from __future__ import annotations

import re
import zlib

from scanners.filters import DUMMY_PASSWORDS
from scanners.validators.core import Validator, b64decode_strict

_UUID = re.compile(rb"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_HEX8 = re.compile(rb"^[0-9A-F]{8}$")




def _printable(raw: bytes) -> str | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if text.isprintable() else None


def gitlab_routable(secret: bytes, m: re.Match[bytes]) -> bool:
    """GitLab routable tokens (``glpat-<payload>.[01.]<len><crc>``): the 2-char base36 length field
    equals the payload length and the last 7 base36 chars are the CRC32 of everything before them,
    prefix included (GitLab ``Authn::TokenField::Generator::RoutableToken``)."""
    if len(secret) < 40:
        return False
    body, crc = secret[:-7], secret[-7:]
    length_field = body.rsplit(b".", 1)[-1]
    payload = m.group("payload") if "payload" in m.re.groupindex else None
    try:
        if payload is not None and (int(length_field, 36) != len(payload) or len(payload) % 4 == 1):
            return False
        return int(crc, 36) == zlib.crc32(body)
    except ValueError:
        return False


def atlassian_crc32(secret: bytes, m: re.Match[bytes]) -> bool:
    """Atlassian tokens (``ATATT…=XXXXXXXX``, ``ATCTT…``, Bitbucket ``ATBB…``) end with the CRC32, as
    8 upper-case hex digits, of everything before it (a ``=`` separator included)."""
    body, check = secret[:-8], secret[-8:]
    if not _HEX8.match(check):
        return False
    return b"%08X" % zlib.crc32(body) == check


def teamcity_token(secret: bytes, m: re.Match[bytes]) -> bool:
    """TeamCity access tokens are ``base64({"typ": "TCV2"})`` . ``base64(token id)`` .
    ``base64(UUID)``: the last part must decode to a UUID."""
    parts = secret.split(b".")
    if len(parts) != 3:
        return False
    tail = b64decode_strict(parts[2], urlsafe=True)
    return tail is not None and bool(_UUID.match(tail))


def basic_auth_pair(secret: bytes, m: re.Match[bytes]) -> bool:
    """Docker ``config.json`` ``"auth"`` and ``.npmrc`` ``_auth`` values are ``base64(user:password)``:
    the decoded text must be printable, split on ``:`` into a non-empty user and a real password."""
    raw = b64decode_strict(secret, urlsafe=False)
    if raw is None:
        return False
    text = _printable(raw)
    if text is None or ":" not in text:
        return False
    user, _, password = text.partition(":")
    if not user or len(password) < 4 or any(c.isspace() for c in user):
        return False
    low = password.lower()
    return low not in DUMMY_PASSWORDS and not low.startswith(("${", "$(", "{{", "<"))


def jetbrains_permanent(secret: bytes, m: re.Match[bytes]) -> bool:
    """JetBrains Hub/Marketplace/YouTrack permanent tokens are ``perm:`` + base64(login) + ``.`` +
    base64(token id, e.g. ``43-7``) + ``.`` + random; both encoded parts must decode to text."""
    parts = secret.removeprefix(b"perm:").split(b".")
    if len(parts) != 3:
        return False
    login = b64decode_strict(parts[0], urlsafe=True)
    token_id = b64decode_strict(parts[1], urlsafe=True)
    if login is None or token_id is None:
        return False
    login_text, id_text = _printable(login), _printable(token_id)
    return bool(login_text) and bool(id_text) and not any(c.isspace() for c in login_text or " ")


VALIDATORS: dict[str, Validator] = {
    "vcs-gitlab-routable": gitlab_routable,
    "vcs-atlassian-crc32": atlassian_crc32,
    "vcs-teamcity-token": teamcity_token,
    "vcs-basic-auth-pair": basic_auth_pair,
    "vcs-jetbrains-permanent": jetbrains_permanent,
}
