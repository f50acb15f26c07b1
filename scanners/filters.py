"""False-positive filters: pure functions ``(candidate) -> bool`` that answer "drop this?".

Each has a stable dotted id so a config file can switch one off by name. They run after a rule's
regex, entropy and validator accepted a candidate, so they only ever remove findings. They must never
log or return the value they inspect.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from scanners.entropy import shannon


@dataclass(frozen=True, slots=True)
class Candidate:
    """What a filter may look at: the decoded secret, its line, the key it was assigned to (if the
    rule captured one), whether the rule is generic, and the file path."""

    secret: str
    line: str
    key: str
    generic: bool
    path: str


Filter = Callable[[Candidate], bool]

_PLACEHOLDER_WORDS = (
    "changeme", "change_me", "change-me", "changethis", "your_", "your-", "yourkey", "yoursecret",
    "yourtoken", "yourpassword", "yourapikey", "placeholder", "redacted", "replace_me", "replaceme",
    "replace-me", "replace_with", "insert_", "insert-", "dummy", "fake", "example", "sample",
    "foobar", "todo", "tbd", "fixme", "notreal", "not_real", "not-a-real", "mysecret", "secretkey",
    "supersecret", "super_secret", "lorem", "ipsum", "<", ">",
)
_MASK = re.compile(r"x{4,}|X{4,}|\*{3,}|\.{3,}|•{2,}|#{4,}|_{4,}|-{6,}|0{8,}|(?i:(abc|123|xyz|abcd){3,})")

_REFERENCE = re.compile(
    r"""^(?:\$\{|\$\(|\{\{|\{%|%\(|#\{|@\{|<%|\$[A-Za-z_]|%[A-Za-z_]+%$|ENC\[|vault:|arn:aws:|ref\+|env\()"""
    r"""|os\.environ|os\.getenv|process\.env|getenv\(|System\.getenv|ENV\[|\$ENV\{|secretKeyRef|valueFrom"""
    r"""|Environment\.GetEnvironmentVariable|config\[|settings\.|\bself\.|\bthis\.|\bparams\[|\bargs\.""",
)

DUMMY_PASSWORDS = frozenset(
    {
        "password", "passw0rd", "p@ssw0rd", "p@ssword", "pass", "pwd", "passwd", "postgres", "root",
        "admin", "administrator", "secret", "test", "testing", "test123", "changeme", "123456",
        "12345678", "123456789", "1234567890", "qwerty", "letmein", "default", "guest", "user",
        "username", "mysql", "example", "demo", "sample", "none", "null", "nil", "true", "false",
        "undefined", "empty", "string", "str", "value", "token", "apikey", "api_key", "key", "mypassword",
        "my_password", "password1", "password123", "admin123", "root123", "toor", "welcome", "hunter2",
        "foo", "bar", "baz", "foobar", "secret123", "mysecret", "s3cr3t", "xxx", "abc123", "pa55word",
        "redis", "rabbitmq", "guest", "sa", "oracle", "tiger", "scott", "postgrespassword", "dev",
        "development", "local", "localhost", "required", "optional", "yes", "no", "on", "off",
    }
)

_HEX = re.compile(r"^[0-9a-fA-F]+$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_HASH_CONTEXT = re.compile(
    r"(?i)hash|digest|checksum|sha-?(1|224|256|384|512)|md5|integrity|etag|commit|revision|\brev\b"
    r"|fingerprint|shasum|\bsum\b|cache|salt"
)
_DIGEST_PREFIX = re.compile(r"^(?:sha(1|224|256|384|512)[:-]|md5[:-]|sha512-|\$2[aby]\$|\$argon2|\$6\$|\$5\$)")
_CODE_REF = re.compile(
    r"^[A-Za-z_][A-Za-z0-9_]*(?:(?:\.|::|->)[A-Za-z_][A-Za-z0-9_]*)+(?:\(.*\))?$|^[A-Za-z_][\w.]*\(.*\)$"
    r"|^[A-Z][A-Z0-9_]+$|^[a-z]+(?:[A-Z][a-z0-9]+)+$|^[a-z]+(?:_[a-z]+)+$"
)
_PATHLIKE = re.compile(r"^(?:[./~]|[A-Za-z]:\\)[\w./\\-]*$|^[\w-]+(?:/[\w.-]+)+$|^https?://[^:@/]+(?:/|$)")
_NON_SECRET_KEYS = re.compile(
    r"(?i)(?:_|-|\b)(?:url|uri|path|file|filename|dir|name|type|length|len|size|field|label|prompt|"
    r"placeholder|hint|policy|regex|pattern|format|env|var|header|endpoint|expires?|expiry|ttl|timeout|"
    r"count|min|max|id|ids|version|algorithm|alg|mode|enabled|required|prefix|suffix|hash|digest|"
    r"reset|confirm|confirmation|validation|validator|strength|rules?|message|msg|error|help|"
    r"description|title|text|input|column|param|key_id|keyid)$"
)


def is_documented_example(c: Candidate) -> bool:
    """AWS-style ``…EXAMPLE`` values; exact vendor sample values come from the rule files' data."""
    return c.secret.endswith(("EXAMPLE", "EXAMPLEKEY"))


def is_placeholder(c: Candidate) -> bool:
    low = c.secret.lower()
    return any(w in low for w in _PLACEHOLDER_WORDS) or bool(_MASK.search(c.secret))


def is_reference(c: Candidate) -> bool:
    return bool(_REFERENCE.search(c.secret))


def is_repetitive(c: Candidate) -> bool:
    """Three or fewer distinct characters, or an ordered run like ``abcdef…``/``0123…``."""
    s = c.secret
    if len(set(s)) <= 3:
        return True
    if len(s) >= 6:
        steps = {ord(b) - ord(a) for a, b in zip(s, s[1:], strict=False)}
        if steps <= {1} or steps <= {-1}:
            return True
    return False


def is_dummy_password(c: Candidate) -> bool:
    low = c.secret.lower().strip("'\"")
    return low in DUMMY_PASSWORDS or (c.key != "" and low == c.key.lower())


def is_hash_or_digest(c: Candidate) -> bool:
    """Generic rules only: hex digests under a hash-like name, or prefixed digests (sha256:, bcrypt)."""
    if not c.generic:
        return False
    if _DIGEST_PREFIX.match(c.secret):
        return True
    if _HEX.match(c.secret) and len(c.secret) in (32, 40, 56, 64, 96, 128):
        return bool(_HASH_CONTEXT.search(c.key or c.line))
    return False


def is_uuid(c: Candidate) -> bool:
    return c.generic and bool(_UUID.match(c.secret))


def is_code_reference(c: Candidate) -> bool:
    """Generic rules only: the 'value' is an identifier, call or attribute path, not a literal."""
    return c.generic and bool(_CODE_REF.match(c.secret))


def is_path_or_url(c: Candidate) -> bool:
    return c.generic and bool(_PATHLIKE.match(c.secret))


def is_non_secret_key(c: Candidate) -> bool:
    """Generic rules only: ``password_url = …``, ``token_type = …``: the name says it is not a secret."""
    return c.generic and bool(c.key) and bool(_NON_SECRET_KEYS.search(c.key))


def is_low_entropy_generic(c: Candidate) -> bool:
    """Generic rules only: words and simple phrases. Long passphrases still pass on length."""
    if not c.generic:
        return False
    s = c.secret
    if len(s) >= 24:
        return shannon(s) < 3.0
    return shannon(s) < 2.5 or (s.isalpha() and s.islower() and len(s) < 12)


FILTERS: dict[str, Filter] = {
    "value.documented-example": is_documented_example,
    "value.placeholder": is_placeholder,
    "value.template-reference": is_reference,
    "value.repetitive": is_repetitive,
    "value.dummy-password": is_dummy_password,
    "generic.hash-or-digest": is_hash_or_digest,
    "generic.uuid": is_uuid,
    "generic.code-reference": is_code_reference,
    "generic.path-or-url": is_path_or_url,
    "generic.non-secret-key": is_non_secret_key,
    "generic.low-entropy": is_low_entropy_generic,
}


def first_match(c: Candidate, disabled: frozenset[str] = frozenset()) -> str | None:
    """The id of the first filter that drops ``c``, or None to keep it."""
    for fid, fn in FILTERS.items():
        if fid not in disabled and fn(c):
            return fid
    return None
