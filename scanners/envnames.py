"""The variable-name heuristic of environment scanning: a secret-named variable holding a random value.

Provider rules recognise a token by its own shape and the generic rules by a keyword next to an
assignment; neither sees a random value whose only evidence is the variable it lives in
(``BASIC_AUTH=…``, ``SENTRY_DSN`` with a password, an AWS secret key with ``/`` in it that the generic
path filter drops). Environments are the one place where the name is reliable context, so this module
judges the pair: a name made of secret words (segment-aware, so ``TOKENIZER_PATH``, ``KEYBOARD`` and
``PASSWORD_MIN_LENGTH`` do not count) and a value that is long, random-looking and none of the things
environments are full of (references, paths, URLs without credentials, digests, UUIDs, numbers,
booleans, dummies).

The value checks reuse the engine's false-positive filters (``scanners.filters``) so that a config
that turns a filter off by id turns it off here too. Pure functions; never logs or returns a value in a
message: the reasons are fixed words.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from scanners.entropy import shannon
from scanners.filters import Candidate, first_match, non_secret_name

RULE_ID = "env-secret-name"
DESCRIPTION = "High-entropy value in a secret-named variable"
SEVERITY = "medium"
CONFIDENCE = "medium"

MIN_LENGTH = 8
MAX_LENGTH = 1024
"""Longer values are documents (certificates, JSON blobs): the engine's rules judge those."""

# Filters that do not fit environment values, switched off for the heuristic only:
# - code shapes of unquoted values: an environment value is always a literal, never code, and
#   generated secrets contain ``)``, ``<`` and ``>``;
# - path-or-url: base64 secrets contain ``/`` (``Ab3/Kx9…`` reads as a relative path to it);
#   ``looks_like_path_or_plain_url`` below decides instead, and keeps URLs that carry a password.
_OFF_FOR_ENV = frozenset({"generic.unquoted-expression", "generic.path-or-url"})

# Name splitting: camelCase humps (Helm leaf keys: ``adminPassword``) and any non-alphanumeric run.
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NON_ALNUM = re.compile(r"[^A-Za-z0-9]+")

_PASSWORD_WORDS = ("password", "passwd", "passphrase", "passcode")
"""Secret anywhere in a segment: ``PGPASSWORD``, ``MYSQL_ROOT_PASSWORD``, ``dbPassword``."""
_LAST_SEGMENT_WORDS = frozenset({"pwd", "pass", "pw", "auth", "dsn"})
"""Secret only as the last word of a longer name: ``DB_PWD`` but not ``PWD`` (the working directory),
``NPM_AUTH`` but not ``SSH_AUTH_SOCK``, ``RABBITMQ_DEFAULT_PASS`` but not ``PASS_THROUGH``."""
_KEY_QUALIFIERS = frozenset({
    "api", "access", "private", "priv", "secret", "signing", "sign", "encryption", "encrypt",
    "decryption", "crypt", "crypto", "aes", "master", "hmac", "auth", "license", "app", "account",
    "storage", "shared", "client", "jwt", "session", "cookie", "deploy", "service", "admin", "write",
    "subscription", "server", "ssh", "webhook", "sas",
})
"""Words that make a following ``KEY`` a secret (``API_KEY``, ``apiKey``, ``APIKEY``). ``KEY`` alone,
``CACHE_KEY``, ``PUBLIC_KEY`` and ``GPG_KEY`` (the official Python images set it to a key id) do not."""
_NOT_SECRET_SEGMENTS = frozenset({"secretary", "secretariat"})


def name_segments(name: str) -> list[str]:
    """Lower-case words of a variable name: ``DB_PASSWORD`` -> db, password; ``apiKey`` -> api, key."""
    return [s.lower() for s in _NON_ALNUM.split(_CAMEL.sub("_", name)) if s]


def _secret_segment(seg: str) -> bool:
    if seg in _NOT_SECRET_SEGMENTS:
        return False
    if any(w in seg for w in _PASSWORD_WORDS):
        return True
    if seg.startswith(("secret", "credential")) or seg.endswith(("secret", "token")):
        return True
    if seg in ("creds", "bearer", "pepper"):
        return True
    return seg.endswith("key") and seg[:-3] in _KEY_QUALIFIERS


def is_secret_name(name: str) -> bool:
    """Whether ``name`` says its value is a secret.

    Word-segment aware: ``TOKEN`` must end a word (``AUTHTOKEN`` yes, ``TOKENIZER`` no), ``KEY`` needs
    a qualifier (``API_KEY``, ``SECRETKEY``), short words count only at the end of a longer name, and
    names that describe a secret rather than hold one (``PASSWORD_FILE``, ``TOKEN_TTL``,
    ``SECRET_ARN``, ``PASSWORD_MIN_LENGTH``) are rejected by the engine's ``non_secret_name``."""
    segs = name_segments(name)
    if not segs:
        return False
    hit = any(_secret_segment(s) for s in segs)
    hit = hit or (len(segs) > 1 and segs[-1] in _LAST_SEGMENT_WORDS)
    hit = hit or any(a in _KEY_QUALIFIERS and b == "key" for a, b in itertools.pairwise(segs))
    return hit and not non_secret_name(name)


_NUMBER = re.compile(r"^[+-]?\d+(?:[.,_]\d+)*(?:[eE][+-]?\d+)?[A-Za-z]{0,2}$")
_BOOLEAN = frozenset({"true", "false", "yes", "no", "on", "off", "enabled", "disabled", "null", "none"})
_HOST_PORT = re.compile(r"^[\w.-]+:\d{1,5}$")
_ABS_PATH = re.compile(r"^(?:~|\.{1,2})?/|^~$|^[A-Za-z]:[\\/]")
_REL_PATH = re.compile(r"^[a-z0-9._-]+(?:/[a-z0-9._-]+)+/?$|^[\w.-]+(?:/[\w.-]+)*/[\w-]+\.[A-Za-z0-9]{1,5}$")
"""Relative paths are lower-case words (``secret/data/app``) or end in a file name with an extension:
a base64 value with ``/`` mixes cases inside its segments and matches neither."""
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True, slots=True)
class Judgement:
    """What the heuristic concluded about one variable."""

    secret: bool
    reason: str
    """``secret`` when reported, else a fixed word saying why not (``name``, ``short``, a filter id…)."""
    offset: int = 0
    """Where the reported secret starts in the value (a URL's password, not the whole URL)."""
    length: int = 0


def _random_segment(seg: str) -> bool:
    """A path segment no one would name a file: long and mixing upper case, lower case and digits.
    Base64 secrets start with ``/`` one time in 64, and then read as an absolute path otherwise."""
    return len(seg) >= 12 and any(c.isupper() for c in seg) and any(c.islower() for c in seg) and any(
        c.isdigit() for c in seg)


def looks_like_path_or_plain_url(value: str) -> bool:
    """A filesystem path, ``host:port``, or a URL without a password (``https://…``)."""
    if _URL.match(value):
        return _url_password(value) is None
    if _HOST_PORT.match(value):
        return True
    if _ABS_PATH.match(value) or _REL_PATH.match(value):
        return not any(_random_segment(seg) for seg in re.split(r"[/\\]", value))
    return False


def _url_password(value: str) -> tuple[int, int] | None:
    """Offset and length of the password in ``scheme://user:password@host…``, if there is one."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    userinfo, at, _ = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return None
    password = userinfo.split(":", 1)[1]
    if not password:
        return None
    start = value.index("://") + 3 + len(userinfo) - len(password)
    return start, len(password)


def _entropy_floor(n: int) -> float:
    """Bits per character a random value of length ``n`` reaches: short values cannot score high
    (8 distinct characters give exactly 3.0), so the bar rises with length up to 3.0."""
    return min(3.0, math.log2(n) - 0.35)


def _char_classes(value: str) -> int:
    return (
        any(c.islower() for c in value)
        + any(c.isupper() for c in value)
        + any(c.isdigit() for c in value)
        + any(not c.isalnum() for c in value)
    )


def _shape_reason(text: str) -> str | None:
    """Why ``text`` cannot be a random secret by its shape alone, or None."""
    if len(text) < MIN_LENGTH:
        return "short"
    if len(text) > MAX_LENGTH:
        return "long"
    if any(c.isspace() for c in text) or not text.isprintable():
        return "whitespace"
    if text.lower() in _BOOLEAN:
        return "boolean"
    if _NUMBER.match(text):
        return "number"
    if _char_classes(text) < 2:
        return "one-class"
    if shannon(text) < _entropy_floor(len(text)):
        return "low-entropy"
    return None


def judge(name: str, value: str, *, key: str | None = None,
          disabled: frozenset[str] = frozenset()) -> Judgement:
    """Decide whether ``value`` under ``name`` is reported by the heuristic.

    ``key`` is the name the decision is made on when it differs from the reported one (the leaf of a
    flattened Helm path: ``postgresql.auth.password`` -> ``password``). ``disabled`` holds engine
    filter ids switched off by configuration. Order matters only for the reason reported: the name is
    checked first because almost every variable fails there."""
    key = name if key is None else key
    if not is_secret_name(key):
        return Judgement(False, "name")
    offset, length = 0, len(value)
    if _URL.match(value):
        found = _url_password(value)
        if found is None:
            return Judgement(False, "path-or-url")
        offset, length = found
    elif looks_like_path_or_plain_url(value):
        return Judgement(False, "path-or-url")
    text = value[offset : offset + length]
    reason = _shape_reason(text)
    if reason is not None:
        return Judgement(False, reason)
    cand = Candidate(text, f"{key}={value}", key, True, f"env:{name}")
    fid = first_match(cand, disabled | _OFF_FOR_ENV)
    if fid is not None:
        return Judgement(False, fid)
    return Judgement(True, "secret", offset, length)


def is_secret_variable(name: str, value: str, *, key: str | None = None,
                       disabled: frozenset[str] = frozenset()) -> bool:
    """Shorthand for ``judge(...).secret``."""
    return judge(name, value, key=key, disabled=disabled).secret


__all__ = [
    "CONFIDENCE",
    "DESCRIPTION",
    "RULE_ID",
    "SEVERITY",
    "Judgement",
    "is_secret_name",
    "is_secret_variable",
    "judge",
    "looks_like_path_or_plain_url",
    "name_segments",
]
