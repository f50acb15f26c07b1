"""False-positive filters: pure functions ``(candidate) -> bool`` that answer "drop this?".

Each has a stable dotted id so a config file can switch one off by name. They run after a rule's
regex, entropy and validator accepted a candidate, so they only ever remove findings. They must never
log or return the value they inspect.

``value.*`` filters apply to every rule, so they may only drop values that no provider-format token
can be (dictionary dummies, templates, masks). ``generic.*`` filters apply to keyword-assignment rules
only (``Candidate.generic``), where the value is free-form and the name carries most of the evidence.
"""

from __future__ import annotations

import base64
import binascii
import itertools
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
    "replace-me", "replace_with", "insert_", "insert-", "dummy", "example", "sample",
    "foobar", "fixme", "notreal", "not_real", "not-a-real", "mysecret", "secretkey",
    "supersecret", "super_secret", "lorem", "ipsum",
)
# ``<password>``, ``<your token>``, ``&lt;secret&gt;``: a bracketed name. A bare ``<`` or ``>`` is not a
# placeholder: generated salts and passwords (WordPress keys, ``pwgen -y``) contain them.
_ANGLE_PLACEHOLDER = re.compile(r"<[A-Za-z_][\w .:/-]{0,60}>|&lt;[A-Za-z_]|^<[A-Za-z_][\w .:/-]*$")
# Short words occur by chance inside long random strings (case-insensitively "tbd" is in ~5% of
# 2048-bit PEM bodies), so in long values they count only as a word: at an edge on one side and not
# running on into lower-case letters on the other (``fake_token_…``, ``fakeToken``, ``…-TODO``; not
# ``…-Tbdyo…`` in a dash-separated random token). In short values they count anywhere.
# ``...`` elides part of a documented value (``sk-...``, ``ghp_abc...xyz``, ``AbC#1...!4x``); a value
# with three or more kinds of generator symbols (``61HN~0u...m7S%Sw!``) is a password with dots.
_SYMBOLS = re.compile(r"[!#$%&*+,;=?@^|~]")
_SHORT_PLACEHOLDER = re.compile(r"(?i)fake|todo|tbd")
_SHORT_PLACEHOLDER_EDGE = re.compile(
    r"(?:^|[^A-Za-z0-9])(?i:fake|todo|tbd)(?:[^a-z]|$)|(?:^|[^a-z])(?i:fake|todo|tbd)(?:[^A-Za-z0-9]|$)"
)
# Masks and keyboard runs; an 8-long ordered run (``12345678``, ``abcdefgh``) has odds ~1e-13 in a
# random token, so it marks a hand-typed dummy (``sk_test_1234567890``) for every rule.
_MASK = re.compile(
    r"x{4,}|X{4,}|\*{3,}|…|•{2,}|#{4,}|_{4,}|-{6,}|0{8,}|(?i:(abc|123|xyz|abcd){3,})"
    r"|12345678|87654321|(?i:abcdefgh|qwertyui)"
)

_REFERENCE = re.compile(
    r"""^(?:\$\{|\$\(|\{\{|\{%|%\(|#\{|@\{|<%|\$[A-Za-z_]|\$\d|%[A-Za-z_]+%$|ENC\[|vault:|arn:aws:|ref\+|env\()"""
    r"""|^\{[A-Za-z_][A-Za-z0-9_.]*\}$|^%[sdv]$|^__[A-Za-z0-9_]+__$|^@[A-Za-z_][A-Za-z0-9_.]*@$|^!vault"""
    # secret-manager references name a secret instead of holding it: depthguard's BACKEND:PATH refs,
    # 1Password op://, SOPS/Doppler/Infisical/Conjur and cloud secret-manager style prefixes
    r"""|^(?:aws|aws-ssm|ssm|secretsmanager|azure|keyvault|akv|gcp|gsm|local|doppler|infisical|sops|conjur)"""
    r""":[A-Za-z0-9/_.-]|^op://"""
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
        "redis", "rabbitmq", "sa", "oracle", "tiger", "scott", "postgrespassword", "dev",
        "development", "local", "localhost", "required", "optional", "yes", "no", "on", "off",
        # keystore and product defaults, and the usual leetspeak of the words above
        "changeit", "notasecret", "secretpassword", "mysecretpassword", "pa$$word", "pa$$w0rd",
        "p@$$w0rd", "p@55w0rd", "passw0rd!", "p@ssw0rd!", "p@ssw0rd1", "p@ssw0rd123", "password!",
        "password1!", "password123!", "pass@123", "admin@123", "root@123", "p@ssword1", "s3cret",
        "secr3t", "s3cr3t!", "trustno1", "iloveyou", "abcd1234", "abc12345", "qwerty123", "1qaz2wsx",
        "q1w2e3r4", "1234", "12345", "1234567", "0000", "000000", "111111", "654321", "minioadmin",
        "minio123", "neo4j", "mongo", "mongodb", "mariadb", "clickhouse", "cassandra", "couchdb",
        "elastic", "kibana", "keycloak", "vagrant", "ubuntu", "docker", "jenkins", "airflow", "grafana",
        "superset", "rootroot", "adminadmin", "insecure", "unsafe", "unused", "n/a", "hidden", "masked",
        "keystore", "truststore", "storepass", "keypass", "topsecret", "supersecret", "secretkey",
        "secret_key", "mypass", "mypwd", "dbpass", "dbpassword", "db_password", "apppass", "appuser",
        "devpass", "devpassword", "testpass", "testpassword", "test_password", "bearer", "basic",
    }
)
# Values made only of these words (plus a short number and "!"): ``supersecretpassword``,
# ``admin1234``, ``TestPassword1!``. Leetspeak inside (``s3cr3tP@ssw0rd2024!``) is a human-chosen
# password and is kept. No provider-format token is a run of dictionary words, so this is safe for
# every rule.
_DUMMY_WORDS = (
    "password", "passwd", "passphrase", "pass", "pwd", "secret", "admin", "root", "test", "user",
    "my", "super", "top", "change", "me", "this", "it", "default", "demo", "dev", "local", "qwerty",
    "welcome", "letmein", "guest", "temp", "tmp", "foo", "bar", "baz", "db", "app", "api", "key",
    "token", "dummy", "sample", "example", "mysql", "postgres", "redis", "mongo", "oracle", "abc",
    "xyz", "new", "old", "the", "your", "our", "some", "very", "strong", "secure", "s3cr3t",
    "database", "server", "service", "access", "auth", "login", "hello", "world", "a", "is",
)
_DUMMY_COMPOSITE = re.compile(
    r"(?i)^(?:" + "|".join(sorted(_DUMMY_WORDS, key=len, reverse=True)) + r")(?:[_.-]?(?:"
    + "|".join(sorted(_DUMMY_WORDS, key=len, reverse=True)) + r")){0,5}[_.@-]?[0-9]{0,4}[!.]?$"
)

_HEX = re.compile(r"^[0-9a-fA-F]+$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_HASH_CONTEXT = re.compile(
    r"(?i)hash|digest|checksum|sha-?(1|224|256|384|512)|md5|integrity|etag|commit|revision|\brev\b"
    r"|fingerprint|shasum|\bsum\b|cache|salt"
)
# Also stored password hashes that SQL scripts carry instead of passwords: PostgreSQL ``md5<32 hex>``
# and ``SCRAM-SHA-256$…``, MySQL ``*<40 hex>`` (``IDENTIFIED BY PASSWORD '*6BB4…'``).
_DIGEST_PREFIX = re.compile(
    r"^(?:sha(1|224|256|384|512)[:-]|md5[:-]|sha512-|\$2[aby]\$|\$argon2|\$6\$|\$5\$|SCRAM-SHA-256\$)"
    r"|^md5[0-9a-f]{32}$|^\*[0-9A-Fa-f]{40}$"
)
# Identifiers, not literals. camelCase parts must be words (``getPassword``, ``userPwd2``): random
# tokens alternate case (``pG7xR2mQ9vLz``) and must not look like camelCase; UPPER_CASE needs an
# underscore or to be all letters, since random upper-case+digit keys exist.
_CODE_REF = re.compile(
    r"^[A-Za-z_][\w.]*\(.*\)$"
    r"|^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+$|^[A-Z]{2,}$|^[a-z]{2,}(?:[A-Z][a-z]{2,}[0-9]{0,2})+$|^[a-z]+(?:_[a-z]+)+$"
)
_ATTR_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:(?:\.|::|->)[A-Za-z_][A-Za-z0-9_]*)+(?:\(.*\))?$")
_PATH_SEP = re.compile(r"\.|::|->")
# A name segment is made of words: camelCase/snake_case parts that are acronyms (``DB``, ``HTTP``),
# words of 2+ letters (``password``, ``Key``) or short numbers after a word (``db2``, ``oauth2``); a
# single letter only as the whole segment (``e.password``). Dotted passphrases (``word.word.XX123``)
# and random tokens with a dot (``hw72jVqs_ZfW.AdfHU``) have parts that are none of these.
_NAME_TOKEN = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+|[^A-Za-z0-9]+")


def _is_name_segment(seg: str) -> bool:
    """Whether one segment of a dotted value reads as an identifier (see ``_NAME_TOKEN``). Random
    tokens split into many 1-2 letter parts (``lbLNbEqJ``: lb L Nb Eq J) or carry digits between
    letters more than once (``S0luc8B``); names do not."""
    core = seg.strip("_$")
    if len(core) <= 1:
        return core == "" or core.isalpha()
    prev = ""
    words = short = inner_digits = 0
    for tok in _NAME_TOKEN.findall(core):
        if tok.isdigit():
            if len(tok) > 2 or not prev.isalpha():
                return False
            inner_digits += 1
        elif tok.isalpha():
            if not tok.isupper() and len(tok) < 2:
                return False
            words += 1
            short += len(tok) <= 2
        elif set(tok) != {"_"}:
            return False
        prev = tok
    if core[-1].isdigit():
        inner_digits -= 1  # a trailing version number (``db2``) is a name
    return inner_digits < 2 and not (words >= 3 and short * 2 > words)
_PATHLIKE = re.compile(r"^(?:[./~]|[A-Za-z]:\\)[\w./\\-]*$|^[\w-]+(?:/[\w.-]+)+$|^https?://[^:@/]+(?:/|$)")
_NON_SECRET_KEYS = re.compile(
    r"(?i)(?:_|-|\b)(?:url|uri|path|file|filename|dir|name|type|length|len|size|field|label|prompt|"
    r"placeholder|hint|policy|regex|pattern|format|env|var|header|endpoint|expires?|expiry|ttl|timeout|"
    r"count|min|max|id|ids|version|algorithm|alg|mode|enabled|required|prefix|suffix|hash|digest|"
    r"reset|confirm|confirmation|validation|validator|strength|rules?|message|msg|error|help|"
    r"description|title|text|input|column|param|key_id|keyid|"
    # opaque pagination / concurrency tokens of APIs (``NextToken``, ``PolicyUpdateToken``)
    r"next_token|page_token|update_token|continuation_token|pagination_token|sync_token|"
    # added: UI and schema vocabulary that names a thing *about* a secret, not the secret
    r"hashed|encrypted|expiration|lifetime|age|rotation|changed|updated|created|last|"
    r"selector|locator|xpath|element|button|btn|link|page|route|view|template|attr|attribute|icon|"
    r"visible|visibility|toggle|show|mask|box|class|css|style|state|status|flag|enable|disabled|"
    r"option|options|manager|provider|service|handler|helper|factory|generator|storage|limit|"
    r"attempts|retries|interval|duration|seconds|chars|characters|digits|complexity|requirements?|"
    r"errors|invalid|mismatch|incorrect|wrong|missing|desc|comment|note|kind|scheme|location|"
    r"source|index|idx|arg|argument|variable|ref|reference|arn|audience|issuer|scope|scopes|"
    r"usage|purpose|host|port|server|username|user|email|method|cipher|algo|store_type|"
    r"uri_template|key_name|secret_name|env_var|names?|types?|fields?|labels?|params?)$"
)
_NON_SECRET_KEY_PREFIX = re.compile(
    r"(?i)^(?:[a-z0-9]+[_.-])*?(?:is|has|use|uses|enable|disable|show|hide|require|allow|check|"
    r"validate|forgot|reset|confirm|toggle|should|can|must|num|max|min|no|on)"
    r"[_.-]"
    # an accessor (``get_password``, ``config.read_token``) only leads a name or follows a dot: inside
    # one it is a qualifier of the secret (``DB_READ_PASSWORD``, ``HF_READ_TOKEN``)
    r"|^(?:[a-z0-9_-]*\.)*(?:get|fetch|read|load)[_.-]"
)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_CODE_EXT = re.compile(
    r"(?i)\.(?:py|pyi|js|jsx|mjs|cjs|ts|tsx|go|java|kt|kts|scala|groovy|cs|vb|fs|rb|php|swift|m|mm|c|h|cc|"
    r"cpp|hpp|rs|dart|lua|pl|pm|r|jl|ex|exs|erl|clj|vue|svelte)$"
)
_WORDISH = re.compile(
    r"^(?:[a-z]+|[A-Z]+|[A-Z][a-z]+|[a-z]+(?:[A-Z][a-z]+)+|[A-Z][a-z]+(?:[A-Z][a-z]+)+)$"
)
_PHRASE = re.compile(r"^[A-Za-z]+(?:[-.][A-Za-z]+)+$|^[0-9]+(?:\.[0-9]+)+$|^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")


def is_documented_example(c: Candidate) -> bool:
    """AWS-style ``…EXAMPLE`` values; exact vendor sample values come from the rule files' data."""
    return c.secret.endswith(("EXAMPLE", "EXAMPLEKEY"))


def is_placeholder(c: Candidate) -> bool:
    """Words people type instead of a secret, and masks (``xxxx``, ``***``, ``...``)."""
    low = c.secret.lower()
    if any(w in low for w in _PLACEHOLDER_WORDS) or _MASK.search(c.secret):
        return True
    if _ANGLE_PLACEHOLDER.search(c.secret):
        return True
    if "..." in c.secret and len(set(_SYMBOLS.findall(c.secret))) < 3:
        return True
    short = _SHORT_PLACEHOLDER_EDGE if len(c.secret) > 24 else _SHORT_PLACEHOLDER
    return bool(short.search(c.secret))


def is_reference(c: Candidate) -> bool:
    """Template and environment references (``${X}``, ``{password}``, ``%s``, ``os.environ``)."""
    return bool(_REFERENCE.search(c.secret))


def is_repetitive(c: Candidate) -> bool:
    """Three or fewer distinct characters, or an ordered run like ``abcdef…``/``0123…``."""
    s = c.secret
    if len(set(s)) <= 3:
        return True
    if len(s) >= 6:
        steps = {ord(b) - ord(a) for a, b in itertools.pairwise(s)}
        if steps <= {1} or steps <= {-1}:
            return True
    return False


def looks_dummy(value: str, key: str = "") -> bool:
    """A dictionary dummy (``postgres``, ``admin123``, ``TestPassword1!``) or the name itself."""
    low = value.lower().strip("'\"")
    if low in DUMMY_PASSWORDS or (key != "" and low == key.lower()):
        return True
    return len(low) <= 40 and bool(_DUMMY_COMPOSITE.match(low))


def is_dummy_password(c: Candidate) -> bool:
    """Well-known dummy and default passwords; see ``looks_dummy``."""
    return looks_dummy(c.secret, c.key)


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
    """Generic rules only: the 'value' is an identifier, call or attribute path (``config.db.password``,
    ``settings.API_KEY``), not a literal. A dotted value counts as a path only when every segment is
    a name: ``violet.saffron.VI298`` is a dotted passphrase, not an attribute."""
    if not c.generic:
        return False
    s = c.secret
    if _CODE_REF.match(s):
        return True
    if _ATTR_PATH.match(s):
        head = s.split("(", 1)[0]
        return all(_is_name_segment(seg) for seg in _PATH_SEP.split(head))
    return False


def is_path_or_url(c: Candidate) -> bool:
    return c.generic and bool(_PATHLIKE.match(c.secret))


def _split_camel(key: str) -> str:
    return _CAMEL.sub("_", key)


def non_secret_name(name: str) -> bool:
    """``password_url``, ``token_type``, ``passwordPlaceholder``, ``isPasswordValid``: a name that
    says its value is not a secret. camelCase is split first. Shared with validators that find the
    name elsewhere (a CSV column header)."""
    key = _split_camel(name.strip("'\"`[]:$@.- "))
    return bool(_NON_SECRET_KEYS.search(key) or _NON_SECRET_KEY_PREFIX.match(key))


def is_non_secret_key(c: Candidate) -> bool:
    """Generic rules only: the captured name says it is not a secret; see ``non_secret_name``."""
    return c.generic and bool(c.key) and non_secret_name(c.key)


def is_low_entropy_generic(c: Candidate) -> bool:
    """Generic rules only: words and simple phrases. Long passphrases still pass on length."""
    if not c.generic:
        return False
    s = c.secret
    if len(s) >= 24:
        return shannon(s) < 3.0
    return shannon(s) < 2.5 or (s.isalpha() and s.islower() and len(s) < 12)


def is_word_like_generic(c: Candidate) -> bool:
    """Generic rules only: i18n labels and identifiers (``Passwort``, ``ResetPassword``), short
    numbers (ports, PINs, ids), dotted versions, kebab-case phrases and e-mail addresses. Random
    secrets mix character classes; these do not."""
    if not c.generic:
        return False
    s = c.secret
    if len(s) < 20 and _WORDISH.match(s):
        return True
    if s.isalpha() and len(s) < 40 and shannon(s) < 3.5:
        return True
    if s.isdigit() and len(s) < 16:
        return True
    return bool(_PHRASE.match(s))


# Client-side keys that vendors publish in web pages by design: Mapbox public tokens (``pk.eyJ…``; the
# secret ones are ``sk.eyJ…``) and Stripe-style publishable keys (Stripe, Clerk, Paystack, Checkout.com:
# ``pk_live_``, ``pk_test_``, ``pk_sbox_``). ClickUp's ``pk_<digits>_`` tokens are secret and differ.
_PUBLISHABLE = re.compile(
    r"^(?:pk\.eyJ[A-Za-z0-9_-]{8,}|pk_(?:live|test|sbox)_[A-Za-z0-9_-]{8,}|FLWPUBK(?:_TEST)?-)"
)


def is_publishable_key(c: Candidate) -> bool:
    """Publishable (public by design) key formats, under any name: ``MAPBOX_TOKEN=pk.eyJ…``."""
    return bool(_PUBLISHABLE.match(c.secret))


_B64_VALUE = re.compile(r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{4})$")


def _b64_text(value: str) -> str | None:
    """The printable text a base64 value decodes to, or None (not base64, or binary: a random key)."""
    if len(value) < 4 or len(value) > 512 or not _B64_VALUE.match(value):
        return None
    try:
        text = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    return text if text and text.isprintable() else None


def is_base64_dummy(c: Candidate) -> bool:
    """Generic rules only: a base64 value (Kubernetes Secret ``data:``, basic-auth blobs) whose decoded
    text is a dummy, placeholder, template or repetitive value: ``cGFzc3dvcmQ=`` is "password"."""
    if not c.generic:
        return False
    text = _b64_text(c.secret)
    if text is None:
        return False
    inner = Candidate(text, c.line, c.key, c.generic, c.path)
    return (
        looks_dummy(text, c.key)
        or is_placeholder(inner)
        or is_reference(inner)
        or is_repetitive(inner)
        or (len(text) < 20 and bool(_WORDISH.match(text)))
    )


def _is_quoted(c: Candidate) -> bool:
    i = c.line.find(c.secret)
    return i > 0 and c.line[i - 1] in "\"'`"


# Code shapes of an unquoted value: a call or index on a name (``get(x)``, ``creds[0]``, ``t.pw}``), a
# leading bracket or ``%{``, a YAML alias/anchor or decorator-like name (``*db_pass``, ``&x``,
# ``@var``), a bare YAML tag (``!vault``, ``!!binary``), markup (``abc</td>``), a regex class (``[0-9]+``).
# A leading ``*``, ``&``, ``%`` or ``!`` followed by random characters is a generated secret.
_UNQUOTED_CODE = re.compile(
    r"^[A-Za-z_$][\w$.]*(?:\(.*\)|\[.*\]|[(\[](?:[\w$.]*|[^\w\s]*)|[)\]}]+)$|^[(\[{]|^%[({]"
    r"|^[*&@][A-Za-z_][\w.-]*$|\[[^\]]{1,20}\][*+?{]"
    r"|^!!?[A-Za-z][A-Za-z0-9_/:.-]*$|[<>]"
)


def is_unquoted_expression(c: Candidate) -> bool:
    """Generic rules only: an unquoted value is code, not a literal, when it has a code shape
    (``request.headers.get(``, ``creds[0]``, ``*db_pass``, ``!vault``) or sits in a source file
    (``password = compute()``; unquoted literals live in .env/.ini/.properties/YAML). Other
    punctuation is kept: generated secrets in .env files contain ``(``, ``)``, ``!`` and ``^``."""
    if not c.generic or _is_quoted(c):
        return False
    if _UNQUOTED_CODE.search(c.secret):
        return True
    return bool(_CODE_EXT.search(c.path))


_GLOB = re.compile(r"^(?:[a-z0-9]+[-_.])*\*(?:[-_.][a-z0-9]+)*$|^(?:[a-z0-9]+[-_.])+\*$", re.IGNORECASE)


def is_name_glob(c: Candidate) -> bool:
    """Generic rules only: a glob over names (``stripe-*``, ``*.example.com``, ``app-*-prod``), as in a
    list of secret names a role may read; a ``*`` that is a whole name segment is never a password's."""
    return c.generic and "*" in c.secret and bool(_GLOB.match(c.secret))


FILTERS: dict[str, Filter] = {
    "value.documented-example": is_documented_example,
    "value.placeholder": is_placeholder,
    "value.template-reference": is_reference,
    "value.repetitive": is_repetitive,
    "value.dummy-password": is_dummy_password,
    "value.publishable-key": is_publishable_key,
    "generic.hash-or-digest": is_hash_or_digest,
    "generic.uuid": is_uuid,
    "generic.code-reference": is_code_reference,
    "generic.path-or-url": is_path_or_url,
    "generic.non-secret-key": is_non_secret_key,
    "generic.low-entropy": is_low_entropy_generic,
    "generic.word-like": is_word_like_generic,
    "generic.unquoted-expression": is_unquoted_expression,
    "generic.base64-dummy": is_base64_dummy,
    "generic.name-glob": is_name_glob,
}


def first_match(c: Candidate, disabled: frozenset[str] = frozenset()) -> str | None:
    """The id of the first filter that drops ``c``, or None to keep it."""
    for fid, fn in FILTERS.items():
        if fid not in disabled and fn(c):
            return fid
    return None
