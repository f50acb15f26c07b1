# ruff: noqa: E501  -- templates are literal file content; wrapping them would hide what the files look like
"""Deterministic generator of a labeled credential-leak corpus.

Why: a detector's precision and recall only mean something when measured on files that look like the
ones it will meet (configs, source, docs, lockfiles, logs...) with the hard negatives that sit next to
real secrets in those files (dummy passwords, references, publishable keys, documented example keys,
hashes, public keys). This corpus is written without looking at any rule pack so that the measurement
stays honest; do not tune it to a rule.

Every value is synthetic but format-correct (GitHub/npm checksums, real HMAC-signed JWTs, real private
keys built from seeded random material). The same seed and scale always give the same bytes.

Output in the target directory: the files, ``labels.json`` (every true secret as
``{"path", "line", "secret", "family"}``, line = 1-based line where the secret starts) and
``decoys.json`` (the planted hard negatives as ``{"path", "line", "value", "kind"}``, used to name the
class of a false alarm).

Usage: ``python bench/corpus_gen.py OUT_DIR [--scale 1.0] [--seed N]``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import random
import re
import string
import struct
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import quote

SEED = 20240611
LABELS_FILE = "labels.json"
DECOYS_FILE = "decoys.json"
META_FILES = (LABELS_FILE, DECOYS_FILE)

ALNUM = string.ascii_letters + string.digits
UPPER_DIGITS = string.ascii_uppercase + string.digits
HEX = "0123456789abcdef"
B64 = ALNUM + "+/"
B64URL = ALNUM + "-_"
BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase


@dataclass(frozen=True)
class Label:
    """A true secret: where it starts and its exact text as written in the file."""

    path: str
    line: int
    secret: str
    family: str


@dataclass(frozen=True)
class Decoy:
    """A planted hard negative; a detector that reports it raised a false alarm of class ``kind``."""

    path: str
    line: int
    value: str
    kind: str


# --------------------------------------------------------------------------------------------------
# Documents: text with markers, resolved to labels with line numbers once the text is final.
# --------------------------------------------------------------------------------------------------

_MARK = re.compile(r"@@@(\d+)@@@")


class Doc:
    """One file under construction. ``s()``/``d()`` return markers that survive json.dumps and string
    formatting, so templates never count lines by hand (multi-line values included)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.name: str | None = None
        """Set by a template whose content decides the file name (secret.yaml vs configmap.yaml)."""
        self._items: list[tuple[bool, str, str]] = []

    def s(self, family: str, value: str) -> str:
        """Plant a true secret."""
        self._items.append((True, value, family))
        return f"@@@{len(self._items) - 1}@@@"

    def d(self, kind: str, value: str) -> str:
        """Plant a hard negative."""
        self._items.append((False, value, kind))
        return f"@@@{len(self._items) - 1}@@@"

    def render(self, text: str) -> tuple[str, list[Label], list[Decoy]]:
        out: list[str] = []
        labels: list[Label] = []
        decoys: list[Decoy] = []
        line = 1
        pos = 0
        for m in _MARK.finditer(text):
            chunk = text[pos : m.start()]
            out.append(chunk)
            line += chunk.count("\n")
            positive, value, tag = self._items[int(m.group(1))]
            if positive:
                labels.append(Label(self.path, line, value, tag))
            else:
                decoys.append(Decoy(self.path, line, value, tag))
            out.append(value)
            line += value.count("\n")
            pos = m.end()
        out.append(text[pos:])
        return "".join(out), labels, decoys


# --------------------------------------------------------------------------------------------------
# Value factories
# --------------------------------------------------------------------------------------------------

WORDS = (
    "amber",
    "falcon",
    "river",
    "copper",
    "maple",
    "orbit",
    "harbor",
    "cedar",
    "violet",
    "thunder",
    "pepper",
    "lantern",
    "meadow",
    "glacier",
    "saffron",
    "willow",
    "raven",
    "summit",
    "canyon",
    "ember",
    "tango",
    "nimbus",
    "quartz",
    "juniper",
    "marble",
    "cobalt",
    "basil",
    "otter",
    "piano",
    "sparrow",
)
FIRST = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory")
SERVICES = (
    "billing",
    "checkout",
    "auth",
    "inventory",
    "notifier",
    "search",
    "gateway",
    "reports",
    "ledger",
    "catalog",
    "payments",
    "scheduler",
    "ingest",
    "profile",
    "mailer",
    "analytics",
    "webhooks",
    "orders",
)
HOSTS = ("db.internal", "postgres.prod.svc", "10.0.3.17", "mysql-primary", "rds.acme-corp.net", "localhost")

DUMMY_PASSWORDS = (
    "password",
    "postgres",
    "changeme",
    "admin",
    "secret",
    "root",
    "example",
    "test",
    "guest",
    "mysecretpassword",
    "your-password-here",
    "<password>",
    "xxxxxxxx",
    "********",
    "REPLACE_ME",
    "password123",
    "pass",
    "dev",
    "toor",
    "CHANGE_ME",
    "<YOUR_PASSWORD>",
    "s3cr3t",
    "TODO",
)

AWS_EXAMPLE_ID = "AKIAIOSFODNN7EXAMPLE"
AWS_EXAMPLE_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
JWT_IO = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2M"
    "jM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
STRIPE_DOC_KEY = "sk_test_4eC39HqLyjWDarjtT1zdp7dc"
SLACK_DOC_TOKEN = "xoxb-not-a-real-token-this-will-not-work"
GITHUB_DOC_TOKEN = "ghp_16C7e42F292c6912E7710c838347Ae178B4a"
DOC_EXAMPLES = (
    AWS_EXAMPLE_ID,
    AWS_EXAMPLE_SECRET,
    JWT_IO,
    AZURITE_KEY,
    STRIPE_DOC_KEY,
    SLACK_DOC_TOKEN,
    GITHUB_DOC_TOKEN,
)


def b62_crc32(data: str) -> str:
    """GitHub/npm token checksum: base62(crc32(payload)), zero-padded to 6."""
    n = zlib.crc32(data.encode()) & 0xFFFFFFFF
    out = ""
    while n:
        n, r = divmod(n, 62)
        out = BASE62[r] + out
    return out.rjust(6, "0")


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class Gen:
    """All randomness flows from one seeded ``random.Random`` so the corpus is reproducible."""

    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)
        self._rsa_cache: dict[int, list[object]] = {}

    # -- primitives --------------------------------------------------------------------------------
    def chars(self, alphabet: str, n: int) -> str:
        return "".join(self.r.choice(alphabet) for _ in range(n))

    def randbytes(self, n: int) -> bytes:
        return bytes(self.r.getrandbits(8) for _ in range(n))

    def pick(self, seq: tuple[str, ...] | list[str]) -> str:
        return self.r.choice(seq)

    def chance(self, p: float) -> bool:
        return self.r.random() < p

    def word(self) -> str:
        return self.r.choice(WORDS)

    def uuid(self) -> str:
        h = self.chars(HEX, 32)
        h = h[:12] + "4" + h[13:16] + self.r.choice("89ab") + h[17:]
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def mixed(self, alphabet: str, n: int) -> str:
        """Random token using every character class (digit/upper/lower) its alphabet offers: real tokens
        almost always do, and an all-letter draw would be an unrealistic outlier."""
        classes = [f for f in (str.isdigit, str.isupper, str.islower) if any(f(c) for c in alphabet)]
        while True:
            v = self.chars(alphabet, n)
            if all(any(f(c) for c in v) for f in classes):
                return v

    # -- credentials -------------------------------------------------------------------------------
    def aws_key_id(self, session: bool = False) -> str:
        return ("ASIA" if session else "AKIA") + self.chars("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)

    def aws_secret(self) -> str:
        return self.mixed(B64, 40)

    def aws_session_token(self) -> str:
        prefix = self.pick(("IQoJb3JpZ2luX2VjE", "FwoGZXIvYXdzE"))
        return prefix + self.chars(B64, self.r.randint(300, 380)) + "="[: self.r.randint(0, 1)]

    def gcp_api_key(self) -> str:
        return "AIzaSy" + self.mixed(B64URL, 33)

    def azure_storage_key(self) -> str:
        return base64.b64encode(self.randbytes(64)).decode()

    def azure_sb_key(self) -> str:
        return base64.b64encode(self.randbytes(32)).decode()

    def azure_sas_sig(self) -> str:
        return quote(base64.b64encode(self.randbytes(32)).decode(), safe="")

    def azure_client_secret(self) -> str:
        return self.chars(ALNUM, 3) + self.pick(("7Q~", "8Q~")) + self.mixed(ALNUM + "_~.-", 34)

    def azure_devops_pat(self) -> str:
        if self.chance(0.35):  # legacy 52-char base32 PAT
            return self.chars("abcdefghijklmnopqrstuvwxyz234567", 52)
        date = self.pick(("BD", "BE", "CA", "CB", "AC")) + "AC" + "A" * 13 + "S"
        return self.mixed(ALNUM, 52) + "JQQJ99" + date + "AZDO" + self.mixed(ALNUM, 4)

    def github_token(self, prefix: str | None = None) -> str:
        prefix = prefix or self.pick(("ghp_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"))
        if prefix == "github_pat_":
            return "github_pat_11" + self.chars(UPPER_DIGITS, 20) + "_" + self.mixed(ALNUM, 59)
        body = self.mixed(ALNUM, 30)
        return prefix + body + b62_crc32(body)

    def github_bad_checksum(self) -> str:
        body = self.mixed(ALNUM, 30)
        good = b62_crc32(body)
        bad = good
        while bad == good:
            bad = self.chars(ALNUM, 6)
        return "ghp_" + body + bad

    def gitlab_token(self) -> str:
        kind = self.pick(("glpat-", "glpat-", "glpat-", "glrt-", "gldt-", "glptt-"))
        if kind == "glptt-":
            return kind + self.chars(HEX, 40)
        return kind + self.mixed(ALNUM + "_-", 20)

    def slack_token(self) -> str:
        kind = self.pick(("xoxb", "xoxb", "xoxp", "xapp"))
        if kind == "xoxb":
            return f"xoxb-{self.chars(string.digits, 12)}-{self.chars(string.digits, 13)}-{self.mixed(ALNUM, 24)}"
        if kind == "xoxp":
            d = string.digits
            return f"xoxp-{self.chars(d, 12)}-{self.chars(d, 12)}-{self.chars(d, 13)}-{self.chars(HEX, 32)}"
        return f"xapp-1-A{self.chars(UPPER_DIGITS, 10)}-{self.chars(string.digits, 13)}-{self.chars(HEX, 64)}"

    def slack_webhook(self) -> tuple[str, str]:
        secret = self.mixed(ALNUM, 24)
        url = (
            f"https://hooks.slack.com/services/T{self.chars(UPPER_DIGITS, 8)}/B{self.chars(UPPER_DIGITS, 10)}/"
            f"{secret}"
        )
        return url, secret

    def stripe_secret(self) -> str:
        prefix = self.pick(("sk_live_", "sk_live_", "rk_live_"))
        if self.chance(0.5):
            return prefix + "51" + self.mixed(ALNUM, 97)
        return prefix + self.mixed(ALNUM, 24)

    def stripe_publishable(self) -> str:
        return "pk_live_" + ("51" + self.mixed(ALNUM, 97) if self.chance(0.5) else self.mixed(ALNUM, 24))

    def stripe_webhook_secret(self) -> str:
        return "whsec_" + self.mixed(ALNUM, 32)

    def sendgrid(self) -> str:
        return f"SG.{self.mixed(B64URL, 22)}.{self.mixed(B64URL, 43)}"

    def twilio_sid(self) -> str:
        return "AC" + self.chars(HEX, 32)

    def openai(self) -> str:
        kind = self.pick(("proj", "proj", "legacy", "svcacct"))
        if kind == "legacy":
            return "sk-" + self.mixed(ALNUM, 20) + "T3BlbkFJ" + self.mixed(ALNUM, 20)
        pre = "sk-proj-" if kind == "proj" else "sk-svcacct-"
        return pre + self.mixed(B64URL, 74) + "T3BlbkFJ" + self.mixed(B64URL, 74)

    def anthropic(self) -> str:
        return "sk-ant-api03-" + self.mixed(B64URL, 93) + "AA"

    def huggingface(self) -> str:
        return "hf_" + self.mixed(string.ascii_letters, 34)

    def npm(self) -> str:
        body = self.mixed(ALNUM, 30)
        return "npm_" + body + b62_crc32(body)

    def pypi(self) -> str:
        ident = self.uuid().encode()
        raw = (
            b"\x02\x01\x08pypi.org\x02\x01\x24"
            + ident
            + b"\x00\x02\x06"
            + b"\x2f\x00\x06"
            + b'[{"version": 1, "permissions": "user"}]'
            + b"\x00\x00\x06\x20"
            + self.randbytes(32)
        )
        return "pypi-" + b64url(raw)

    def dockerhub(self) -> str:
        return "dckr_pat_" + self.mixed(B64URL, 27)

    def newrelic(self) -> str:
        if self.chance(0.5):
            return "NRAK-" + self.chars(UPPER_DIGITS, 27)
        return self.chars(HEX, 36) + "NRAL"

    def sentry(self) -> str:
        if self.chance(0.5):
            payload = {
                "iat": 1717000000 + self.r.randint(0, 9_999_999),
                "url": "https://sentry.io",
                "region_url": "https://us.sentry.io",
                "org": self.pick(SERVICES) + "-inc",
            }
            enc = base64.b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode().rstrip("=")
            return f"sntrys_{enc}_{self.mixed(B64URL.replace('-', '').replace('_', ''), 43)}"
        return "sntryu_" + self.chars(HEX, 64)

    def sentry_dsn(self) -> str:
        return f"https://{self.chars(HEX, 32)}@o{self.r.randint(100000, 999999)}.ingest.sentry.io/{self.r.randint(1000000, 9999999)}"

    def shopify(self) -> str:
        return self.pick(("shpat_", "shpat_", "shpss_", "shpca_", "shppa_")) + self.chars(HEX, 32)

    def jwt(self) -> str:
        header = {"alg": self.pick(("HS256", "HS256", "HS512")), "typ": "JWT"}
        now = 1700000000 + self.r.randint(0, 50_000_000)
        payload = {
            "sub": str(self.r.randint(1000, 99999)),
            "iat": now,
            "exp": now + 3600 * self.r.randint(1, 720),
            "role": self.pick(("admin", "service", "user", "ci")),
            "iss": f"https://auth.{self.word()}.io",
        }
        signing = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(payload).encode())
        algo = hashlib.sha256 if header["alg"] == "HS256" else hashlib.sha512
        sig = hmac.new(self.randbytes(32), signing.encode(), algo).digest()
        return signing + "." + b64url(sig)

    def mapbox_public(self) -> str:
        user = b64url(
            json.dumps(
                {
                    "u": self.pick(FIRST) + self.word(),
                    "a": self.chars("abcdefghijklmnopqrstuvwxyz0123456789", 25),
                },
                separators=(",", ":"),
            ).encode()
        )
        return f"pk.{user}.{self.mixed(B64URL, 22)}"

    def human_password(self) -> str:
        """Passwords people actually pick: words, years, leetspeak, a symbol."""
        w1, w2 = self.word(), self.word()
        style = self.r.randint(0, 5)
        year = str(self.r.randint(1970, 2024))
        sym = self.pick(("!", "#", "&", "*", "%", "?", "+"))
        if style == 0:
            return w1.capitalize() + w2.capitalize() + year[-2:] + sym
        if style == 1:
            return f"{w1.capitalize()}-{w2}-{self.r.randint(10, 9999)}"
        if style == 2:
            leet = w1.replace("a", "4").replace("e", "3").replace("o", "0").replace("i", "1")
            return leet.capitalize() + sym + w2 + year
        if style == 3:
            return f"{self.pick(FIRST).capitalize()}{year}{sym}{w2}"
        if style == 4:
            return f"{w1}.{w2}.{w1[:2].upper()}{self.r.randint(100, 999)}"
        return f"{w1.capitalize()}{sym}{w2.capitalize()}{sym}{year}"

    def random_password(self, n: int | None = None) -> str:
        n = n or self.r.randint(14, 28)
        return self.mixed(ALNUM + "!#%*+-_.~^", n)

    def password(self) -> str:
        return self.human_password() if self.chance(0.5) else self.random_password()

    def url_password(self) -> str:
        """A password as it appears inside a URL: unreserved characters only."""
        return (
            self.human_password().translate(str.maketrans({c: "" for c in "#&%?+*"}))
            + self.pick(("!", "~", "_", "9"))
            if self.chance(0.5)
            else self.mixed(ALNUM + "-_.~", self.r.randint(16, 32))
        )

    def django_secret(self) -> str:
        return self.mixed(string.ascii_lowercase + string.digits + "!@%^&*(-_=+)", 50)

    def api_key(self) -> str:
        return self.pick(
            (
                self.chars(HEX, 32),
                self.mixed(ALNUM, 40),
                self.chars(HEX, 64),
                base64.b64encode(self.randbytes(32)).decode(),
            )
        )

    # -- negatives ---------------------------------------------------------------------------------
    def sha(self, kind: str = "") -> str:
        n = {"md5": 32, "sha1": 40, "sha256": 64}[kind or self.pick(("md5", "sha1", "sha256"))]
        return self.chars(HEX, n)

    def sri(self) -> str:
        algo = self.pick(("sha512", "sha512", "sha384", "sha256", "sha1"))
        n = {"sha512": 64, "sha384": 48, "sha256": 32, "sha1": 20}[algo]
        return f"{algo}-{base64.b64encode(self.randbytes(n)).decode()}"

    def bcrypt(self) -> str:
        return "$2b$12$" + self.chars(ALNUM + "./", 53)

    def b64_blob(self, n: int) -> str:
        return base64.b64encode(self.randbytes(n)).decode()

    # -- keys --------------------------------------------------------------------------------------
    def _prime(self, bits: int) -> int:
        small = [p for p in range(3, 2000, 2) if all(p % q for q in range(3, int(p**0.5) + 1, 2))]
        while True:
            n = self.r.getrandbits(bits) | (1 << (bits - 1)) | (1 << (bits - 2)) | 1
            if any(n % p == 0 for p in small) or pow(2, n - 1, n) != 1:
                continue
            if all(self._mr(n, self.r.randrange(2, n - 2)) for _ in range(16)):
                return n

    @staticmethod
    def _mr(n: int, a: int) -> bool:
        d, s = n - 1, 0
        while d % 2 == 0:
            d //= 2
            s += 1
        x = pow(a, d, n)
        if x in (1, n - 1):
            return True
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                return True
        return False

    def rsa_key(self, bits: int = 2048) -> object:
        """Seeded RSA key. A small pool per size keeps generation fast; reusing a key across files is
        realistic (the same deploy key copied around)."""
        from cryptography.hazmat.primitives.asymmetric import rsa

        pool = self._rsa_cache.setdefault(bits, [])
        if len(pool) >= 3:
            return self.r.choice(pool)
        e = 65537
        while True:
            p, q = self._prime(bits // 2), self._prime(bits // 2)
            phi = (p - 1) * (q - 1)
            if p != q and phi % e:
                break
        d = pow(e, -1, phi)
        pub = rsa.RSAPublicNumbers(e, p * q)
        key = rsa.RSAPrivateNumbers(p, q, d, d % (p - 1), d % (q - 1), pow(q, -1, p), pub).private_key()
        pool.append(key)
        return key

    def private_key_pem(self, style: str | None = None) -> tuple[str, object]:
        """A real private key PEM; returns (pem, key) so callers can also derive the public half."""
        from cryptography.hazmat.primitives import serialization as ser
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519

        style = style or self.pick(("rsa-pkcs1", "rsa-pkcs8", "ec", "openssh", "rsa-pkcs1", "pkcs8-ec"))
        if style == "openssh":
            key = ed25519.Ed25519PrivateKey.from_private_bytes(self.randbytes(32))
            return self._openssh_ed25519(key), key
        if style in ("ec", "pkcs8-ec"):
            key = ec.derive_private_key(self.r.getrandbits(255) + 1, ec.SECP256R1())
            fmt = ser.PrivateFormat.TraditionalOpenSSL if style == "ec" else ser.PrivateFormat.PKCS8
            return key.private_bytes(ser.Encoding.PEM, fmt, ser.NoEncryption()).decode(), key
        key = self.rsa_key(self.pick((2048, 2048, 1024)))
        fmt = ser.PrivateFormat.TraditionalOpenSSL if style == "rsa-pkcs1" else ser.PrivateFormat.PKCS8
        return key.private_bytes(ser.Encoding.PEM, fmt, ser.NoEncryption()).decode(), key  # type: ignore[attr-defined]

    def _openssh_ed25519(self, key: object) -> str:
        """OpenSSH's own format, written by hand because cryptography draws its check-int from os.urandom."""
        from cryptography.hazmat.primitives import serialization as ser

        def sstr(b: bytes) -> bytes:
            return struct.pack(">I", len(b)) + b

        pub = key.public_key().public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)  # type: ignore[attr-defined]
        priv = key.private_bytes(ser.Encoding.Raw, ser.PrivateFormat.Raw, ser.NoEncryption())  # type: ignore[attr-defined]
        blob = sstr(b"ssh-ed25519") + sstr(pub)
        check = self.randbytes(4)
        section = check + check + blob + sstr(priv + pub) + sstr(f"{self.pick(FIRST)}@laptop".encode())
        section += bytes(range(1, (8 - len(section) % 8) % 8 + 1))
        raw = b"openssh-key-v1\x00" + sstr(b"none") + sstr(b"none") + sstr(b"") + struct.pack(">I", 1)
        raw += sstr(blob) + sstr(section)
        body = base64.b64encode(raw).decode()
        lines = [body[i : i + 70] for i in range(0, len(body), 70)]
        return (
            "-----BEGIN OPENSSH PRIVATE KEY-----\n"
            + "\n".join(lines)
            + "\n-----END OPENSSH PRIVATE KEY-----\n"
        )

    def public_pem(self, key: object) -> str:
        from cryptography.hazmat.primitives import serialization as ser

        pub = key.public_key()  # type: ignore[attr-defined]
        return pub.public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo).decode()

    def ssh_public(self, key: object) -> str:
        from cryptography.hazmat.primitives import serialization as ser

        pub = key.public_key()  # type: ignore[attr-defined]
        return (
            pub.public_bytes(ser.Encoding.OpenSSH, ser.PublicFormat.OpenSSH).decode()
            + f" {self.pick(FIRST)}@ci"
        )

    def certificate(self) -> str:
        """A self-signed certificate (Ed25519 signatures are deterministic, so the bytes are too)."""
        import datetime as dt

        from cryptography import x509
        from cryptography.hazmat.primitives import serialization as ser
        from cryptography.hazmat.primitives.asymmetric import ed25519
        from cryptography.x509.oid import NameOID

        key = ed25519.Ed25519PrivateKey.from_private_bytes(self.randbytes(32))
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{self.pick(SERVICES)}.acme-corp.net")])
        start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=self.r.randint(0, 300))
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(self.r.getrandbits(64))
            .not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=365))
            .sign(key, None)
        )
        return cert.public_bytes(ser.Encoding.PEM).decode()


# --------------------------------------------------------------------------------------------------
# Key/value groups: the unit most config and source templates are built from.
# --------------------------------------------------------------------------------------------------


@dataclass
class KV:
    """One assignment. ``expr`` means the value is a reference to render per language (env var name)."""

    key: str
    value: str
    expr: bool = False
    comment: str = ""


GroupFn = Callable[["Gen", "Doc"], list[KV]]


def _pos(family: str, make: Callable[[Gen], str], *keys: str) -> GroupFn:
    def group(g: Gen, doc: Doc) -> list[KV]:
        return [KV(g.pick(keys), doc.s(family, make(g)))]

    return group


def g_aws(g: Gen, doc: Doc) -> list[KV]:
    out = [
        KV("AWS_ACCESS_KEY_ID", doc.s("aws", g.aws_key_id())),
        KV("AWS_SECRET_ACCESS_KEY", doc.s("aws", g.aws_secret())),
    ]
    if g.chance(0.3):
        out.append(KV("AWS_DEFAULT_REGION", g.pick(("us-east-1", "eu-west-1", "ap-southeast-2"))))
    return out


def g_aws_session(g: Gen, doc: Doc) -> list[KV]:
    return [
        KV("AWS_ACCESS_KEY_ID", doc.s("aws", g.aws_key_id(session=True))),
        KV("AWS_SECRET_ACCESS_KEY", doc.s("aws", g.aws_secret())),
        KV("AWS_SESSION_TOKEN", doc.s("aws", g.aws_session_token())),
    ]


def g_azure_storage(g: Gen, doc: Doc) -> list[KV]:
    acct = g.word() + g.pick(SERVICES) + str(g.r.randint(1, 99))
    cs = (
        f"DefaultEndpointsProtocol=https;AccountName={acct};AccountKey="
        + doc.s("azure", g.azure_storage_key())
        + ";EndpointSuffix=core.windows.net"
    )
    return [
        KV(g.pick(("AZURE_STORAGE_CONNECTION_STRING", "STORAGE_CONNECTION", "BLOB_CONNECTION_STRING")), cs)
    ]


def g_azure_sas(g: Gen, doc: Doc) -> list[KV]:
    acct = g.word() + "store" + str(g.r.randint(1, 99))
    url = (
        f"https://{acct}.blob.core.windows.net/{g.pick(SERVICES)}?sv=2022-11-02&ss=b&srt=co&sp=rwdlacx"
        f"&se=2026-0{g.r.randint(1, 9)}-1{g.r.randint(0, 9)}T00:00:00Z&st=2024-01-01T00:00:00Z&spr=https&sig="
        + doc.s("azure", g.azure_sas_sig())
    )
    return [KV(g.pick(("BLOB_SAS_URL", "AZURE_SAS_URL", "EXPORT_CONTAINER_URL", "BACKUP_URL")), url)]


def g_azure_sb(g: Gen, doc: Doc) -> list[KV]:
    ns = g.pick(SERVICES) + "-" + g.pick(("prod", "stg", "eu"))
    kind = g.pick(("servicebus", "servicebus", "eventhub"))
    host = f"{ns}.{'servicebus.windows.net'}"
    cs = (
        f"Endpoint=sb://{host}/;SharedAccessKeyName={g.pick(('RootManageSharedAccessKey', 'send-listen'))};"
        "SharedAccessKey=" + doc.s("azure", g.azure_sb_key())
    )
    if kind == "eventhub":
        cs += f";EntityPath={g.pick(SERVICES)}-events"
    return [
        KV(g.pick(("SERVICEBUS_CONNECTION_STRING", "AZURE_SERVICEBUS_CONNECTION", "EVENTHUB_CONNECTION")), cs)
    ]


def g_cosmos(g: Gen, doc: Doc) -> list[KV]:
    cs = (
        f"AccountEndpoint=https://{g.word()}-{g.pick(SERVICES)}.documents.azure.com:443/;AccountKey="
        + doc.s("azure", g.azure_storage_key())
        + ";"
    )
    return [KV(g.pick(("COSMOS_CONNECTION_STRING", "COSMOSDB_CONNECTION")), cs)]


def g_azure_ad(g: Gen, doc: Doc) -> list[KV]:
    return [
        KV("AZURE_TENANT_ID", doc.d("uuid", g.uuid())),
        KV("AZURE_CLIENT_ID", doc.d("uuid", g.uuid())),
        KV("AZURE_CLIENT_SECRET", doc.s("azure", g.azure_client_secret())),
    ]


g_ado = _pos(
    "azure",
    Gen.azure_devops_pat,
    "AZURE_DEVOPS_PAT",
    "AZDO_PERSONAL_ACCESS_TOKEN",
    "ADO_TOKEN",
    "SYSTEM_ACCESSTOKEN",
    "AZURE_DEVOPS_EXT_PAT",
)
g_gcp_key = _pos(
    "gcp",
    Gen.gcp_api_key,
    "GOOGLE_API_KEY",
    "GOOGLE_MAPS_API_KEY",
    "GCP_API_KEY",
    "YOUTUBE_API_KEY",
    "GEMINI_API_KEY",
)
g_github = _pos(
    "github",
    Gen.github_token,
    "GITHUB_TOKEN",
    "GH_TOKEN",
    "GITHUB_PAT",
    "GH_ENTERPRISE_TOKEN",
    "RELEASE_TOKEN",
)
g_gitlab = _pos(
    "gitlab", Gen.gitlab_token, "GITLAB_TOKEN", "CI_JOB_TOKEN_OVERRIDE", "GITLAB_PRIVATE_TOKEN", "GL_TOKEN"
)
g_slack = _pos("slack", Gen.slack_token, "SLACK_BOT_TOKEN", "SLACK_TOKEN", "SLACK_APP_TOKEN")
g_stripe = _pos("stripe", Gen.stripe_secret, "STRIPE_SECRET_KEY", "STRIPE_API_KEY", "STRIPE_KEY")
g_stripe_wh = _pos("stripe", Gen.stripe_webhook_secret, "STRIPE_WEBHOOK_SECRET", "STRIPE_SIGNING_SECRET")
g_sendgrid = _pos("sendgrid", Gen.sendgrid, "SENDGRID_API_KEY", "SMTP_PASSWORD", "MAIL_API_KEY")
g_openai = _pos("openai", Gen.openai, "OPENAI_API_KEY", "OPENAI_KEY", "LLM_API_KEY")
g_anthropic = _pos("anthropic", Gen.anthropic, "ANTHROPIC_API_KEY", "CLAUDE_API_KEY")
g_hf = _pos("huggingface", Gen.huggingface, "HF_TOKEN", "HUGGINGFACE_HUB_TOKEN", "HUGGING_FACE_TOKEN")
g_npm = _pos("npm", Gen.npm, "NPM_TOKEN", "NODE_AUTH_TOKEN")
g_pypi = _pos("pypi", Gen.pypi, "PYPI_TOKEN", "TWINE_PASSWORD", "PYPI_API_TOKEN")
g_docker = _pos("dockerhub", Gen.dockerhub, "DOCKERHUB_TOKEN", "DOCKER_PASSWORD", "REGISTRY_TOKEN")
g_newrelic = _pos("newrelic", Gen.newrelic, "NEW_RELIC_API_KEY", "NEW_RELIC_LICENSE_KEY", "NEWRELIC_KEY")
g_sentry = _pos("sentry", Gen.sentry, "SENTRY_AUTH_TOKEN", "SENTRY_TOKEN")
g_shopify = _pos("shopify", Gen.shopify, "SHOPIFY_ACCESS_TOKEN", "SHOPIFY_API_SECRET", "SHOPIFY_ADMIN_TOKEN")
g_jwt = _pos("jwt", Gen.jwt, "SERVICE_JWT", "API_BEARER_TOKEN", "ACCESS_TOKEN", "INTERNAL_AUTH_TOKEN")
g_secret_key = _pos(
    "generic", Gen.django_secret, "SECRET_KEY", "DJANGO_SECRET_KEY", "SESSION_SECRET", "APP_SECRET"
)
g_api_key = _pos(
    "generic",
    Gen.api_key,
    "API_KEY",
    "PARTNER_API_KEY",
    "WEATHER_API_KEY",
    "ENCRYPTION_KEY",
    "WEBHOOK_SIGNING_SECRET",
    "CLIENT_SECRET",
    "INTERNAL_API_TOKEN",
)
g_password = _pos(
    "generic",
    Gen.password,
    "DB_PASSWORD",
    "POSTGRES_PASSWORD",
    "MYSQL_ROOT_PASSWORD",
    "REDIS_PASSWORD",
    "SMTP_PASS",
    "ADMIN_PASSWORD",
    "RABBITMQ_DEFAULT_PASS",
    "LDAP_BIND_PASSWORD",
)


def g_slack_webhook(g: Gen, doc: Doc) -> list[KV]:
    url, secret = g.slack_webhook()
    return [
        KV(
            g.pick(("SLACK_WEBHOOK_URL", "ALERT_WEBHOOK", "SLACK_HOOK")),
            url.replace(secret, doc.s("slack", secret)),
        )
    ]


def g_twilio(g: Gen, doc: Doc) -> list[KV]:
    return [
        KV("TWILIO_ACCOUNT_SID", doc.d("identifier", g.twilio_sid())),
        KV("TWILIO_AUTH_TOKEN", doc.s("twilio", g.chars(HEX, 32))),
    ]


def g_datadog(g: Gen, doc: Doc) -> list[KV]:
    out = [KV(g.pick(("DD_API_KEY", "DATADOG_API_KEY")), doc.s("datadog", g.chars(HEX, 32)))]
    if g.chance(0.5):
        out.append(KV(g.pick(("DD_APP_KEY", "DATADOG_APP_KEY")), doc.s("datadog", g.chars(HEX, 40))))
    out.append(KV("DD_SITE", "datadoghq.eu"))
    return out


def db_url(g: Gen, doc: Doc, family: str = "database-url") -> str:
    scheme = g.pick(
        ("postgres", "postgresql", "mysql", "mongodb+srv", "redis", "amqp", "mssql", "postgresql+psycopg2")
    )
    user = g.pick(("app", "svc_" + g.pick(SERVICES), "admin", "root", g.pick(FIRST), "readonly"))
    host = (
        g.pick(HOSTS)
        if scheme != "mongodb+srv"
        else f"cluster0.{g.chars('abcdefghijklmnopqrstuvwxyz0123456789', 5)}.mongodb.net"
    )
    pw = doc.s(family, g.url_password())
    port = {
        "postgres": 5432,
        "postgresql": 5432,
        "postgresql+psycopg2": 5432,
        "mysql": 3306,
        "redis": 6379,
        "amqp": 5672,
        "mssql": 1433,
    }.get(scheme)
    hostport = f"{host}:{port}" if port else host
    if scheme == "redis" and g.chance(0.5):
        return f"redis://:{pw}@{hostport}/0"
    db = g.pick(SERVICES)
    return f"{scheme}://{user}:{pw}@{hostport}/{db}" + (
        g.pick(("", "?sslmode=require", "?retryWrites=true&w=majority"))
    )


def g_dburl(g: Gen, doc: Doc) -> list[KV]:
    return [
        KV(
            g.pick(
                ("DATABASE_URL", "DB_URL", "REDIS_URL", "MONGO_URI", "BROKER_URL", "SQLALCHEMY_DATABASE_URI")
            ),
            db_url(g, doc),
        )
    ]


POSITIVE_GROUPS: list[tuple[GroupFn, int]] = [
    (g_aws, 8),
    (g_aws_session, 2),
    (g_gcp_key, 4),
    (g_azure_storage, 4),
    (g_azure_sas, 4),
    (g_azure_sb, 3),
    (g_cosmos, 2),
    (g_azure_ad, 4),
    (g_ado, 4),
    (g_github, 7),
    (g_gitlab, 4),
    (g_slack, 4),
    (g_slack_webhook, 3),
    (g_stripe, 4),
    (g_stripe_wh, 2),
    (g_sendgrid, 3),
    (g_twilio, 3),
    (g_openai, 5),
    (g_anthropic, 4),
    (g_hf, 3),
    (g_npm, 2),
    (g_pypi, 2),
    (g_docker, 2),
    (g_datadog, 3),
    (g_newrelic, 3),
    (g_sentry, 3),
    (g_shopify, 3),
    (g_jwt, 3),
    (g_dburl, 9),
    (g_secret_key, 5),
    (g_api_key, 7),
    (g_password, 12),
]


# -- negatives -------------------------------------------------------------------------------------


def n_dummy_password(g: Gen, doc: Doc) -> list[KV]:
    key = g.pick(
        (
            "DB_PASSWORD",
            "POSTGRES_PASSWORD",
            "MYSQL_PASSWORD",
            "ADMIN_PASSWORD",
            "REDIS_PASSWORD",
            "PASSWORD",
            "SMTP_PASSWORD",
            "API_KEY",
            "SECRET_KEY",
            "ACCESS_TOKEN",
            "CLIENT_SECRET",
        )
    )
    return [KV(key, doc.d("dummy", g.pick(DUMMY_PASSWORDS)))]


def n_reference(g: Gen, doc: Doc) -> list[KV]:
    key = g.pick(
        (
            "DB_PASSWORD",
            "API_KEY",
            "GITHUB_TOKEN",
            "STRIPE_SECRET_KEY",
            "AWS_SECRET_ACCESS_KEY",
            "SLACK_BOT_TOKEN",
            "OPENAI_API_KEY",
            "SENDGRID_API_KEY",
            "CLIENT_SECRET",
            "JWT_SECRET",
        )
    )
    return [KV(key, key, expr=True)]


def n_publishable(g: Gen, doc: Doc) -> list[KV]:
    if g.chance(0.6):
        return [
            KV(
                g.pick(("STRIPE_PUBLISHABLE_KEY", "NEXT_PUBLIC_STRIPE_KEY", "STRIPE_PK")),
                doc.d("publishable", g.stripe_publishable()),
            )
        ]
    return [
        KV(
            g.pick(("MAPBOX_ACCESS_TOKEN", "NEXT_PUBLIC_MAPBOX_TOKEN", "MAPBOX_TOKEN")),
            doc.d("publishable", g.mapbox_public()),
        )
    ]


def n_doc_example(g: Gen, doc: Doc) -> list[KV]:
    which = g.r.randint(0, 4)
    if which == 0:
        return [
            KV("AWS_ACCESS_KEY_ID", doc.d("documented-example", AWS_EXAMPLE_ID)),
            KV("AWS_SECRET_ACCESS_KEY", doc.d("documented-example", AWS_EXAMPLE_SECRET)),
        ]
    if which == 1:
        return [KV("EXAMPLE_JWT", doc.d("documented-example", JWT_IO))]
    if which == 2:
        return [
            KV(
                "AZURE_STORAGE_CONNECTION_STRING",
                "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey="
                + doc.d("documented-example", AZURITE_KEY)
                + ";BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;",
            )
        ]
    if which == 3:
        return [KV("STRIPE_SECRET_KEY", doc.d("documented-example", STRIPE_DOC_KEY))]
    return [KV("SLACK_BOT_TOKEN", doc.d("documented-example", SLACK_DOC_TOKEN))]


def n_hashes(g: Gen, doc: Doc) -> list[KV]:
    which = g.r.randint(0, 5)
    if which == 0:
        return [KV(g.pick(("GIT_SHA", "BUILD_COMMIT", "SOURCE_VERSION")), doc.d("git-sha", g.sha("sha1")))]
    if which == 1:
        return [KV(g.pick(("ARTIFACT_SHA256", "CHECKSUM", "BINARY_SHA256")), doc.d("hash", g.sha("sha256")))]
    if which == 2:
        return [KV(g.pick(("ASSET_MD5", "CACHE_BUSTER", "ETAG")), doc.d("hash", g.sha("md5")))]
    if which == 3:
        return [KV("IMAGE_DIGEST", doc.d("hash", "sha256:" + g.sha("sha256")))]
    if which == 4:
        return [KV(g.pick(("ADMIN_PASSWORD_HASH", "PASSWORD_BCRYPT")), doc.d("hash", g.bcrypt()))]
    return [KV(g.pick(("INTEGRITY", "SCRIPT_INTEGRITY")), doc.d("sri", g.sri()))]


def n_uuid(g: Gen, doc: Doc) -> list[KV]:
    return [
        KV(
            g.pick(
                (
                    "APP_ID",
                    "TENANT_ID",
                    "SUBSCRIPTION_ID",
                    "CLIENT_ID",
                    "PROJECT_ID",
                    "INSTANCE_ID",
                    "REQUEST_ID",
                    "WORKSPACE_ID",
                )
            ),
            doc.d("uuid", g.uuid()),
        )
    ]


def n_url_nopw(g: Gen, doc: Doc) -> list[KV]:
    which = g.r.randint(0, 3)
    host = g.pick(HOSTS)
    if which == 0:
        return [
            KV("DATABASE_URL", doc.d("url-no-password", f"postgres://app@{host}:5432/{g.pick(SERVICES)}"))
        ]
    if which == 1:
        return [
            KV("DATABASE_URL", doc.d("url-reference", f"postgresql://app:${{DB_PASSWORD}}@{host}:5432/app"))
        ]
    if which == 2:
        return [KV("REDIS_URL", doc.d("url-no-password", f"redis://{host}:6379/0"))]
    return [
        KV(
            "DATABASE_URL",
            doc.d("url-dummy", f"postgres://postgres:postgres@localhost:5432/{g.pick(SERVICES)}_dev"),
        )
    ]


def n_ids(g: Gen, doc: Doc) -> list[KV]:
    which = g.r.randint(0, 3)
    if which == 0:
        return [KV("SENTRY_DSN", doc.d("public-dsn", g.sentry_dsn()))]
    if which == 1:
        return [KV("TWILIO_ACCOUNT_SID", doc.d("identifier", g.twilio_sid()))]
    if which == 2:
        return [KV("GA_MEASUREMENT_ID", doc.d("identifier", "G-" + g.chars(UPPER_DIGITS, 10)))]
    return [
        KV(
            "AWS_ROLE_ARN",
            doc.d("identifier", f"arn:aws:iam::{g.chars(string.digits, 12)}:role/{g.pick(SERVICES)}-deploy"),
        )
    ]


def n_empty(g: Gen, doc: Doc) -> list[KV]:
    return [KV(g.pick(("DB_PASSWORD", "API_KEY", "SECRET_KEY", "SENTRY_DSN")), "")]


def filler(g: Gen, doc: Doc) -> list[KV]:
    options = [
        KV("LOG_LEVEL", g.pick(("info", "debug", "warn"))),
        KV("PORT", str(g.pick(("8080", "3000", "5000", "8000")))),
        KV("NODE_ENV", "production"),
        KV("REGION", g.pick(("us-east-1", "eu-central-1"))),
        KV("FEATURE_NEW_CHECKOUT", g.pick(("true", "false"))),
        KV("MAX_CONNECTIONS", str(g.r.randint(5, 200))),
        KV("DB_HOST", g.pick(HOSTS)),
        KV("DB_USER", g.pick(("app", "postgres", "svc"))),
        KV("DB_NAME", g.pick(SERVICES)),
        KV("CACHE_TTL_SECONDS", str(g.r.randint(30, 3600))),
        KV("TIMEZONE", "UTC"),
        KV("SERVICE_NAME", g.pick(SERVICES)),
        KV("PASSWORD_MIN_LENGTH", "12"),
        KV("TOKEN_TTL", "3600"),
        KV("API_BASE_URL", f"https://api.{g.word()}.io/v2"),
        KV("SECRET_NAME", doc.d("secret-name", f"{g.pick(SERVICES)}-db-credentials")),
        KV("AUTH_TOKEN_HEADER", "X-Auth-Token"),
        KV("PASSWORD_RESET_PATH", "/account/reset"),
    ]
    return [g.r.choice(options)]


NEGATIVE_GROUPS: list[tuple[GroupFn, int]] = [
    (n_dummy_password, 10),
    (n_reference, 12),
    (n_publishable, 4),
    (n_doc_example, 4),
    (n_hashes, 7),
    (n_uuid, 5),
    (n_url_nopw, 5),
    (n_ids, 4),
    (n_empty, 3),
]


def weighted(g: Gen, groups: list[tuple[GroupFn, int]]) -> GroupFn:
    return g.r.choices([f for f, _ in groups], weights=[w for _, w in groups])[0]


def kv_block(
    g: Gen,
    doc: Doc,
    n_pos: tuple[int, int] = (0, 2),
    n_neg: tuple[int, int] = (2, 5),
    n_fill: tuple[int, int] = (2, 6),
) -> list[KV]:
    """A shuffled mix of secrets, hard negatives and ordinary settings (groups stay contiguous)."""
    groups: list[list[KV]] = []
    for _ in range(g.r.randint(*n_pos)):
        groups.append(weighted(g, POSITIVE_GROUPS)(g, doc))
    for _ in range(g.r.randint(*n_neg)):
        groups.append(weighted(g, NEGATIVE_GROUPS)(g, doc))
    for _ in range(g.r.randint(*n_fill)):
        groups.append(filler(g, doc))
    g.r.shuffle(groups)
    seen: set[str] = set()
    out: list[KV] = []
    for grp in groups:
        for kv in grp:
            key = kv.key
            while key in seen:  # keep keys unique within a file, as real configs do
                key = f"{kv.key}_{g.pick(('2', 'OLD', 'BACKUP', 'PROD', 'EU', 'V2'))}"
            seen.add(key)
            kv.key = key
            out.append(kv)
    return out


# -- key styles and references ---------------------------------------------------------------------


def snake(k: str) -> str:
    return k.lower()


def camel(k: str) -> str:
    parts = k.lower().split("_")
    return parts[0] + "".join(p.capitalize() for p in parts[1:])


def pascal(k: str) -> str:
    return "".join(p.capitalize() for p in k.lower().split("_"))


def dotted(k: str) -> str:
    return ".".join(k.lower().split("_"))


def ref(lang: str, name: str) -> str:
    return {
        "env": f"${{{name}}}",
        "shell": f'"${{{name}}}"',
        "python": f'os.environ["{name}"]',
        "python-get": f'os.getenv("{name}")',
        "js": f"process.env.{name}",
        "go": f'os.Getenv("{name}")',
        "java": f'System.getenv("{name}")',
        "csharp": f'Environment.GetEnvironmentVariable("{name}")',
        "ruby": f'ENV.fetch("{name}")',
        "php": f"getenv('{name}')",
        "terraform": f"var.{name.lower()}",
        "yaml": f"${{{name}}}",
        "helm": f"{{{{ .Values.secrets.{camel(name)} }}}}",
        "gha": f"${{{{ secrets.{name} }}}}",
        "ansible": f"{{{{ vault_{name.lower()} }}}}",
        "spring": f"${{{name}}}",
        "dotnet": f"#{{{name}}}#",
        "ini": f"%({name})s",
    }[lang]


def value_for(doc: Doc, kv: KV, lang: str) -> str:
    return doc.d("reference", ref(lang, kv.value)) if kv.expr else kv.value


# --------------------------------------------------------------------------------------------------
# Renderers
# --------------------------------------------------------------------------------------------------


def r_env(g: Gen, doc: Doc, kvs: list[KV], export: bool = False) -> str:
    lines = []
    for kv in kvs:
        v = value_for(doc, kv, "env")
        q = g.pick(("", "", '"', "'")) if not kv.expr else '"'
        if g.chance(0.1):
            lines.append("")
            lines.append(f"# {kv.key.split('_')[0].lower()} settings")
        lines.append(f"{'export ' if export else ''}{kv.key}={q}{v}{q}")
    return "\n".join(lines) + "\n"


def yq(v: str) -> str:
    return (
        f'"{v}"'
        if (
            not v
            or v[0] in "*&!%@`{[|>'\"#"
            or ": " in v
            or " #" in v
            or v in ("true", "false")
            or v.isdigit()
        )
        else v
    )


def r_yaml_map(
    g: Gen, doc: Doc, kvs: list[KV], indent: int, style: Callable[[str], str], lang: str = "yaml"
) -> str:
    pad = " " * indent
    out = []
    for kv in kvs:
        v = value_for(doc, kv, lang)
        out.append(f"{pad}{style(kv.key)}: " + (f'"{v}"' if kv.expr or g.chance(0.4) else yq(v)))
    return "\n".join(out) + "\n"


def r_k8s_env(g: Gen, doc: Doc, kvs: list[KV], indent: int) -> str:
    pad = " " * indent
    out = []
    for kv in kvs:
        out.append(f"{pad}- name: {kv.key}")
        if kv.expr:
            out.append(
                f"{pad}  valueFrom:\n{pad}    secretKeyRef:\n{pad}      name: {g.pick(SERVICES)}-secrets\n"
                f"{pad}      key: {kv.key.lower().replace('_', '-')}"
            )
        else:
            out.append(f'{pad}  value: "{kv.value}"')
    return "\n".join(out) + "\n"


def r_json_obj(doc: Doc, kvs: list[KV], indent: int, style: Callable[[str], str], lang: str = "env") -> str:
    pad = " " * indent
    items = [f'{pad}"{style(kv.key)}": "{value_for(doc, kv, lang)}"' for kv in kvs]
    return ",\n".join(items)


def r_properties(g: Gen, doc: Doc, kvs: list[KV], prefix: str = "") -> str:
    sep = g.pick(("=", "=", " = ", ": "))
    return (
        "\n".join(
            f"{prefix}{dotted(kv.key).replace('.', '-', 1) if g.chance(0.3) else dotted(kv.key)}{sep}"
            f"{value_for(doc, kv, 'spring')}"
            for kv in kvs
        )
        + "\n"
    )


def r_ini(g: Gen, doc: Doc, kvs: list[KV]) -> str:
    return "\n".join(f"{snake(kv.key)} = {value_for(doc, kv, 'ini')}" for kv in kvs) + "\n"


def r_python(g: Gen, doc: Doc, kvs: list[KV]) -> str:
    out = []
    for kv in kvs:
        if kv.expr:
            out.append(f"{kv.key} = " + doc.d("reference", ref(g.pick(("python", "python-get")), kv.value)))
        else:
            q = g.pick(('"', "'"))
            out.append(f"{kv.key} = {q}{kv.value}{q}")
    return "\n".join(out) + "\n"


def r_js(g: Gen, doc: Doc, kvs: list[KV], ts: bool = False) -> str:
    out = []
    for kv in kvs:
        if kv.expr:
            v = doc.d("reference", ref("js", kv.value))
        else:
            q = g.pick(('"', "'", "`"))
            v = q + kv.value + q
        out.append(f"  {camel(kv.key)}: {v},")
    return "\n".join(out) + "\n"


def r_go(g: Gen, doc: Doc, kvs: list[KV]) -> list[str]:
    return [
        f"\t{pascal(kv.key)} = " + (doc.d("reference", ref("go", kv.value)) if kv.expr else f'"{kv.value}"')
        for kv in kvs
    ]


def r_java(g: Gen, doc: Doc, kvs: list[KV]) -> str:
    return (
        "\n".join(
            f"    private static final String {kv.key} = "
            + (doc.d("reference", ref("java", kv.value)) if kv.expr else f'"{kv.value}"')
            + ";"
            for kv in kvs
        )
        + "\n"
    )


def r_csharp(g: Gen, doc: Doc, kvs: list[KV]) -> str:
    return (
        "\n".join(
            f"        {'private const string' if not kv.expr else 'private static readonly string'} {pascal(kv.key)} = "
            + (doc.d("reference", ref("csharp", kv.value)) if kv.expr else f'"{kv.value}"')
            + ";"
            for kv in kvs
        )
        + "\n"
    )


def r_ruby(g: Gen, doc: Doc, kvs: list[KV], recv: str) -> str:
    return (
        "\n".join(
            f"  {recv}.{snake(kv.key)} = "
            + (doc.d("reference", ref("ruby", kv.value)) if kv.expr else f"'{kv.value}'")
            for kv in kvs
        )
        + "\n"
    )


def r_php(g: Gen, doc: Doc, kvs: list[KV]) -> str:
    return (
        "\n".join(
            f"    '{snake(kv.key)}' => "
            + (doc.d("reference", ref("php", kv.value)) if kv.expr else f"'{kv.value}'")
            + ","
            for kv in kvs
        )
        + "\n"
    )


def r_tfvars(g: Gen, doc: Doc, kvs: list[KV]) -> str:
    width = max((len(kv.key) for kv in kvs), default=0)
    return (
        "\n".join(
            f"{snake(kv.key).ljust(width)} = "
            + (doc.d("reference", ref("terraform", kv.value)) if kv.expr else f'"{kv.value}"')
            for kv in kvs
        )
        + "\n"
    )


def r_xml_appsettings(g: Gen, doc: Doc, kvs: list[KV]) -> str:
    return (
        "\n".join(
            f'    <add key="{pascal(kv.key)}" value="'
            + (doc.d("reference", ref("dotnet", kv.value)) if kv.expr else kv.value.replace("&", "&amp;"))
            + '" />'
            for kv in kvs
        )
        + "\n"
    )


# --------------------------------------------------------------------------------------------------
# File templates. Each returns (path, text) and plants values through ``doc``.
# --------------------------------------------------------------------------------------------------

Template = Callable[[Gen, Doc], str]


def svc(g: Gen) -> str:
    return g.pick(SERVICES)


def t_env(g: Gen, doc: Doc) -> str:
    head = g.pick(
        (
            "",
            f"# {svc(g)} service configuration\n",
            "# Local overrides - do not commit\n",
            "# Generated by setup.sh\n",
        )
    )
    return head + r_env(g, doc, kv_block(g, doc, (0, 3), (2, 5), (3, 8)))


def t_env_example(g: Gen, doc: Doc) -> str:
    """``.env.example``: mostly placeholders, sometimes a real key that slipped in."""
    kvs = kv_block(g, doc, (0, 1), (4, 8), (2, 5))
    return "# Copy to .env and fill in the values\n" + r_env(g, doc, kvs)


def t_compose(g: Gen, doc: Doc) -> str:
    s = svc(g)
    app_env = kv_block(g, doc, (0, 2), (1, 3), (2, 4))
    pw = (
        doc.s("generic", g.password())
        if g.chance(0.45)
        else doc.d("dummy", g.pick(("postgres", "password", "example", "changeme")))
        if g.chance(0.6)
        else doc.d("reference", "${POSTGRES_PASSWORD}")
    )
    return (
        f'version: "3.9"\n\nservices:\n  {s}:\n    build: .\n    image: ghcr.io/acme/{s}:{g.chars(HEX, 7)}\n'
        f'    ports:\n      - "8080:8080"\n    environment:\n'
        + r_yaml_map(g, doc, app_env, 6, lambda k: k)
        + "    depends_on:\n      - db\n      - redis\n\n"
        "  db:\n    image: postgres:16-alpine\n    environment:\n      POSTGRES_USER: app\n"
        f"      POSTGRES_PASSWORD: {pw}\n      POSTGRES_DB: {s}\n    volumes:\n      - pgdata:/var/lib/postgresql/data\n\n"
        '  redis:\n    image: redis:7\n    command: ["redis-server", "--appendonly", "yes"]\n\n'
        "volumes:\n  pgdata: {}\n"
    )


def t_k8s(g: Gen, doc: Doc) -> str:
    s = svc(g)
    kind = g.r.randint(0, 3)
    doc.name = ("secret.yaml", "db-secret.yaml", "configmap.yaml", "deployment.yaml")[kind]
    if kind == 0:  # Secret with stringData / data
        kvs = kv_block(g, doc, (1, 2), (0, 2), (0, 2))
        kvs = [kv for kv in kvs if not kv.expr]
        lines = [
            f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: {s}-secrets\n  namespace: {g.pick(('prod', 'staging', 'default'))}\n"
            "type: Opaque\nstringData:"
        ]
        for kv in kvs:
            lines.append(f'  {kv.key.lower().replace("_", "-")}: "{kv.value}"')
        return "\n".join(lines) + "\n"
    if kind == 1:  # Secret with base64 data: the value is only visible once decoded
        lines = [f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: {s}-db\ntype: Opaque\ndata:"]
        lines.append(f"  username: {base64.b64encode(b'app').decode()}")
        if g.chance(0.6):
            lines.append("  password: " + doc.s("generic", base64.b64encode(g.password().encode()).decode()))
        else:
            lines.append(
                "  password: "
                + doc.d("dummy", base64.b64encode(g.pick(DUMMY_PASSWORDS[:6]).encode()).decode())
            )
        return "\n".join(lines) + "\n"
    if kind == 2:
        kvs = kv_block(g, doc, (0, 3), (2, 4), (1, 3))
        return f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {s}-config\ndata:\n" + r_yaml_map(
            g, doc, kvs, 2, lambda k: k
        )
    kvs = kv_block(g, doc, (0, 3), (2, 4), (1, 3))
    return (
        f"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {s}\n  labels:\n    app: {s}\nspec:\n"
        f"  replicas: {g.r.randint(1, 5)}\n  selector:\n    matchLabels:\n      app: {s}\n  template:\n"
        f"    metadata:\n      labels:\n        app: {s}\n      annotations:\n"
        f"        checksum/config: {doc.d('hash', g.sha('sha256'))}\n    spec:\n      containers:\n"
        f"        - name: {s}\n          image: registry.acme-corp.net/{s}@sha256:{doc.d('hash', g.sha('sha256'))}\n"
        "          env:\n"
        + r_k8s_env(g, doc, kvs, 12)
        + "          resources:\n            limits:\n              memory: 512Mi\n"
    )


def t_gha(g: Gen, doc: Doc) -> str:
    env_lines = []
    for kv in kv_block(g, doc, (0, 1), (2, 4), (0, 2)):
        v = doc.d("reference", ref("gha", kv.value)) if kv.expr else kv.value
        env_lines.append(f"      {kv.key}: {yq(v) if not kv.expr else v}")
    token = (
        doc.s("github", g.github_token())
        if g.chance(0.2)
        else doc.d("reference", "${{ secrets.GITHUB_TOKEN }}")
    )
    return (
        f"name: {g.pick(('CI', 'Release', 'Deploy', 'Nightly'))}\n\non:\n  push:\n    branches: [main]\n  pull_request:\n\n"
        "jobs:\n  build:\n    runs-on: ubuntu-latest\n    env:\n" + "\n".join(env_lines) + "\n"
        f"    steps:\n      - uses: actions/checkout@{doc.d('git-sha', g.sha('sha1'))}\n"
        "      - uses: actions/setup-node@v4\n        with:\n          node-version: 20\n"
        "      - run: npm ci && npm test\n      - name: Publish\n        env:\n"
        f"          GH_TOKEN: {token}\n          NPM_TOKEN: {doc.d('reference', '${{ secrets.NPM_TOKEN }}')}\n"
        "        run: npm publish\n"
    )


def t_helm(g: Gen, doc: Doc) -> str:
    s = svc(g)
    kvs = kv_block(g, doc, (0, 3), (2, 4), (1, 3))
    pw = (
        doc.s("generic", g.password())
        if g.chance(0.35)
        else doc.d("dummy", g.pick(("changeme", "", "password")))
    )
    return (
        f'replicaCount: 2\n\nimage:\n  repository: acme/{s}\n  tag: "1.{g.r.randint(0, 20)}.{g.r.randint(0, 9)}"\n'
        "  pullPolicy: IfNotPresent\n\nservice:\n  type: ClusterIP\n  port: 80\n\n"
        f'postgresql:\n  enabled: true\n  auth:\n    username: {s}\n    password: "{pw}"\n    database: {s}\n\n'
        "config:\n" + r_yaml_map(g, doc, kvs, 2, camel, "helm") + "\nresources: {}\nnodeSelector: {}\n"
    )


def t_ansible(g: Gen, doc: Doc) -> str:
    vault = "\n".join("          " + g.chars("0123456789abcdef", 80) for _ in range(g.r.randint(3, 6)))
    kvs = kv_block(g, doc, (0, 3), (2, 4), (1, 3))
    out = "---\n# group_vars/" + g.pick(("all", "webservers", "dbservers")) + ".yml\n"
    out += r_yaml_map(g, doc, kvs, 0, snake, "ansible")
    out += (
        "vault_db_password: !vault |\n          $ANSIBLE_VAULT;1.1;AES256\n"
        + doc.d("ansible-vault", vault)
        + "\n"
    )
    if g.chance(0.4):
        out += "mysql_root_password: " + doc.s("generic", g.password()) + "\n"
    return out


def t_package_json(g: Gen, doc: Doc) -> str:
    s = svc(g)
    return (
        json.dumps(
            {
                "name": f"@acme/{s}",
                "version": f"2.{g.r.randint(0, 30)}.{g.r.randint(0, 9)}",
                "private": True,
                "scripts": {
                    "build": "tsc -p .",
                    "test": "jest",
                    "start": "node dist/index.js",
                    "db:migrate": "DATABASE_URL=$DATABASE_URL knex migrate:latest",
                },
                "dependencies": {
                    "express": "^4.19.2",
                    "pg": "^8.11.3",
                    "jsonwebtoken": "^9.0.2",
                    "stripe": "^14.10.0",
                },
                "devDependencies": {"typescript": "^5.4.0", "jest": "^29.7.0"},
                "config": {"stripePublishableKey": doc.d("publishable", g.stripe_publishable())},
            },
            indent=2,
        )
        + "\n"
    )


def t_gcp_sa(g: Gen, doc: Doc) -> str:
    pem, _ = g.private_key_pem("rsa-pkcs8")
    project = f"{g.word()}-{svc(g)}-{g.r.randint(100000, 999999)}"
    email = f"{svc(g)}-sa@{project}.iam.gserviceaccount.com"
    body = json.dumps(pem)[1:-1]
    text = (
        '{\n  "type": "service_account",\n  "project_id": "' + project + '",\n'
        '  "private_key_id": "' + doc.d("key-id", g.sha("sha1")) + '",\n'
        '  "private_key": "' + doc.s("gcp", body) + '",\n'
        f'  "client_email": "{email}",\n  "client_id": "{g.chars(string.digits, 21)}",\n'
        '  "auth_uri": "https://accounts.google.com/o/oauth2/auth",\n'
        '  "token_uri": "https://oauth2.googleapis.com/token",\n'
        '  "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",\n'
        f'  "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/{quote(email)}",\n'
        '  "universe_domain": "googleapis.com"\n}\n'
    )
    return text


def t_docker_config(g: Gen, doc: Doc) -> str:
    if g.chance(0.3):
        return (
            json.dumps(
                {"credsStore": "desktop", "auths": {"https://index.docker.io/v1/": {}, "ghcr.io": {}}},
                indent=2,
            )
            + "\n"
        )
    user = g.pick(FIRST)
    secret = g.dockerhub() if g.chance(0.5) else g.password()
    auth = base64.b64encode(f"{user}:{secret}".encode()).decode()
    reg = g.pick(("https://index.docker.io/v1/", "registry.acme-corp.net", "ghcr.io"))
    return (
        '{\n  "auths": {\n    "'
        + reg
        + '": {\n      "auth": "'
        + doc.s("docker-config", auth)
        + '"\n    }\n  },\n  "HttpHeaders": {\n    "User-Agent": "Docker-Client/24.0.7 (linux)"\n  }\n}\n'
    )


def t_python(g: Gen, doc: Doc) -> str:
    kind = g.r.randint(0, 3)
    if kind == 0:  # Django settings
        kvs = kv_block(g, doc, (0, 3), (2, 4), (1, 3))
        if g.chance(0.4):
            sk_line = f"SECRET_KEY = '{doc.s('generic', g.django_secret())}'"
        else:
            sk_line = "SECRET_KEY = " + doc.d("reference", 'os.environ["DJANGO_SECRET_KEY"]')
        if g.chance(0.4):
            dbpw_expr = '"' + doc.s("generic", g.password()) + '"'
        else:
            dbpw_expr = doc.d("reference", 'os.environ.get("DB_PASSWORD", "")')
        return (
            '"""Django settings for the ' + svc(g) + ' project."""\n\nimport os\nfrom pathlib import Path\n\n'
            "BASE_DIR = Path(__file__).resolve().parent.parent\n\n" + sk_line + "\n\nDEBUG = False\n"
            "ALLOWED_HOSTS = ['.acme-corp.net']\n\nDATABASES = {\n    'default': {\n"
            "        'ENGINE': 'django.db.backends.postgresql',\n        'NAME': 'app',\n        'USER': 'app',\n"
            f"        'PASSWORD': {dbpw_expr},\n        'HOST': '{g.pick(HOSTS)}',\n        'PORT': 5432,\n    }}\n}}\n\n"
            "AUTH_PASSWORD_VALIDATORS = [\n    {'NAME': 'django.contrib.auth.password_validation.MinimumLengthValidator'},\n]\n\n"
            + r_python(g, doc, kvs)
        )
    if kind == 1:  # client script
        kvs = kv_block(g, doc, (0, 2), (1, 3), (0, 2))
        return (
            "import os\nimport requests\n\n" + r_python(g, doc, kvs) + "\n\n"
            "def fetch(path: str, token: str | None = None) -> dict:\n"
            '    """Call the internal API."""\n    headers = {"Authorization": f"Bearer {token}"} if token else {}\n'
            '    resp = requests.get(f"https://api.acme-corp.net{path}", headers=headers, timeout=10)\n'
            "    resp.raise_for_status()\n    return resp.json()\n\n\n"
            'if __name__ == "__main__":\n    print(fetch("/v1/status"))\n'
        )
    if kind == 2:  # boto3 / sdk usage with inline creds
        if g.chance(0.5):
            kid, sec = doc.s("aws", g.aws_key_id()), doc.s("aws", g.aws_secret())
        else:
            kid, sec = (
                doc.d("documented-example", AWS_EXAMPLE_ID),
                doc.d("documented-example", AWS_EXAMPLE_SECRET),
            )
        return (
            "import boto3\n\n\ndef s3_client():\n    return boto3.client(\n        's3',\n"
            f"        aws_access_key_id='{kid}',\n        aws_secret_access_key='{sec}',\n"
            "        region_name='us-east-1',\n    )\n\n\ndef upload(path: str, bucket: str) -> None:\n"
            "    s3_client().upload_file(path, bucket, path)\n"
        )
    # sqlalchemy / celery config
    url = (
        db_url(g, doc) if g.chance(0.6) else doc.d("url-reference", "postgresql://app:%(DB_PASSWORD)s@db/app")
    )
    return (
        "from sqlalchemy import create_engine\nfrom celery import Celery\n\n"
        f'engine = create_engine("{url}", pool_pre_ping=True)\n'
        f"app = Celery('tasks', broker='{doc.d('url-no-password', 'redis://redis:6379/0')}')\n\n\n"
        "def password_is_strong(password: str) -> bool:\n    return len(password) >= 12\n"
    )


def t_py_test(g: Gen, doc: Doc) -> str:
    """Test fixtures: obviously fake credentials, type hints, bad-checksum tokens."""
    return (
        "import pytest\n\nfrom app.auth import login, validate_github_token\n\n\n"
        "@pytest.fixture\ndef user():\n"
        f'    return {{"username": "alice", "password": "{doc.d("dummy", g.pick(("test-password", "password", "hunter2", "secret")))}"}}\n\n\n'
        "def test_login_rejects_wrong_password(client, user):\n"
        f'    resp = login(client, user["username"], password="{doc.d("dummy", "wrong-password")}")\n'
        "    assert resp.status_code == 401\n\n\n"
        "def test_rejects_token_with_bad_checksum():\n"
        f'    assert not validate_github_token("{doc.d("bad-checksum", g.github_bad_checksum())}")\n\n\n'
        "def test_example_key_is_ignored():\n"
        f'    assert is_example("{doc.d("documented-example", AWS_EXAMPLE_ID)}")\n\n\n'
        'def make_token(secret: str = "", password: str | None = None) -> str:\n'
        f'    return "{doc.d("dummy", "fake-token-for-tests")}"\n'
    )


def t_js(g: Gen, doc: Doc) -> str:
    kvs = kv_block(g, doc, (0, 3), (2, 4), (1, 3))
    return (
        "'use strict';\n\nconst express = require('express');\nconst { Pool } = require('pg');\n\n"
        "const config = {\n" + r_js(g, doc, kvs) + "};\n\n"
        "const pool = new Pool({ connectionString: process.env.DATABASE_URL });\n"
        "const app = express();\n\napp.get('/health', (req, res) => res.json({ ok: true }));\n\n"
        "module.exports = { app, config, pool };\n"
    )


def t_ts(g: Gen, doc: Doc) -> str:
    kvs = kv_block(g, doc, (0, 3), (2, 4), (1, 3))
    extra = ""
    if g.chance(0.4):
        extra = (
            "\nexport const stripe = new Stripe("
            + (
                f"'{doc.s('stripe', g.stripe_secret())}'"
                if g.chance(0.5)
                else doc.d("reference", "process.env.STRIPE_SECRET_KEY!")
            )
            + ", { apiVersion: '2024-04-10' });\n"
        )
    return (
        "import Stripe from 'stripe';\n\nexport interface Settings {\n  apiKey: string;\n  password?: string;\n"
        "  token: string | undefined;\n}\n\nexport const settings = {\n"
        + r_js(g, doc, kvs, ts=True)
        + "} as const;\n"
        + extra
    )


def t_go(g: Gen, doc: Doc) -> str:
    kvs = kv_block(g, doc, (0, 3), (2, 4), (1, 2))
    consts = [kv for kv in kvs if not kv.expr]
    vars_ = [kv for kv in kvs if kv.expr]
    return (
        'package config\n\nimport (\n\t"os"\n\t"time"\n)\n\nconst (\n'
        + "\n".join(r_go(g, doc, consts))
        + "\n\tDefaultTimeout = 30 * time.Second\n)\n\nvar (\n"
        + "\n".join(r_go(g, doc, vars_))
        + "\n)\n\n// Password is a type, not a value.\ntype Password string\n\n"
        'func DSN(password Password) string {\n\treturn "postgres://app:" + string(password) + "@db:5432/app"\n}\n'
    )


def t_java(g: Gen, doc: Doc) -> str:
    kvs = kv_block(g, doc, (0, 3), (2, 4), (1, 2))
    cls = pascal(svc(g)) + "Config"
    return (
        f"package com.acme.{svc(g)};\n\nimport java.time.Duration;\n\npublic final class {cls} {{\n"
        + r_java(g, doc, kvs)
        + "    private static final Duration TIMEOUT = Duration.ofSeconds(30);\n\n"
        f'    private {cls}() {{}}\n\n    public static String passwordField() {{\n        return "password";\n    }}\n}}\n'
    )


def t_spring_props(g: Gen, doc: Doc) -> str:
    kvs = kv_block(g, doc, (0, 3), (2, 4), (1, 3))
    host = g.pick(HOSTS)
    pw = (
        doc.s("generic", g.password())
        if g.chance(0.45)
        else doc.d("reference", "${SPRING_DATASOURCE_PASSWORD}")
        if g.chance(0.5)
        else doc.d("dummy", g.pick(("postgres", "password", "sa")))
    )
    return (
        f"spring.application.name={svc(g)}\nspring.datasource.url=jdbc:postgresql://{host}:5432/app\n"
        f"spring.datasource.username=app\nspring.datasource.password={pw}\n"
        "spring.jpa.hibernate.ddl-auto=validate\nmanagement.endpoints.web.exposure.include=health,info\n"
        + r_properties(g, doc, kvs, "app.")
    )


def t_spring_yml(g: Gen, doc: Doc) -> str:
    kvs = kv_block(g, doc, (0, 3), (2, 4), (1, 3))
    return (
        "spring:\n  datasource:\n    url: jdbc:mysql://" + g.pick(HOSTS) + ":3306/app\n    username: app\n"
        "    password: "
        + (doc.s("generic", g.password()) if g.chance(0.4) else doc.d("reference", "${DB_PASSWORD}"))
        + "\napp:\n"
        + r_yaml_map(g, doc, kvs, 2, lambda k: camel(k).replace("_", "-"), "spring")
    )


def t_csharp(g: Gen, doc: Doc) -> str:
    kvs = kv_block(g, doc, (0, 3), (2, 4), (1, 2))
    return (
        "using System;\n\nnamespace Acme."
        + pascal(svc(g))
        + "\n{\n    public static class Secrets\n    {\n"
        + r_csharp(g, doc, kvs)
        + "    }\n}\n"
    )


def t_appsettings(g: Gen, doc: Doc) -> str:
    kvs = kv_block(g, doc, (0, 3), (2, 4), (1, 2))
    cs = (
        f"Server=tcp:{g.word()}-sql.database.windows.net,1433;Initial Catalog={svc(g)};User ID=app;Password="
        + (doc.s("generic", g.password()) if g.chance(0.5) else doc.d("reference", "#{SqlPassword}#"))
        + ";Encrypt=True;"
    )
    return (
        '{\n  "Logging": {\n    "LogLevel": {\n      "Default": "Information"\n    }\n  },\n'
        f'  "ConnectionStrings": {{\n    "Default": "{cs}"\n  }},\n'
        '  "Settings": {\n' + r_json_obj(doc, kvs, 4, pascal, "dotnet") + "\n  },\n"
        '  "AllowedHosts": "*"\n}\n'
    )


def t_webconfig(g: Gen, doc: Doc) -> str:
    kvs = kv_block(g, doc, (0, 3), (2, 4), (1, 2))
    pw = doc.s("generic", g.password()) if g.chance(0.5) else doc.d("dummy", g.pick(("password", "sa")))
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<configuration>\n  <connectionStrings>\n'
        f'    <add name="Default" connectionString="Data Source={g.pick(HOSTS)};Initial Catalog=App;User Id=app;'
        f'Password={pw};" providerName="System.Data.SqlClient" />\n  </connectionStrings>\n  <appSettings>\n'
        + r_xml_appsettings(g, doc, kvs)
        + '  </appSettings>\n  <system.web>\n    <machineKey validationKey="'
        + doc.s("generic", g.chars("0123456789ABCDEF", 128))
        + '" decryptionKey="'
        + doc.s("generic", g.chars("0123456789ABCDEF", 48))
        + '" validation="HMACSHA256" decryption="AES" />\n  </system.web>\n</configuration>\n'
        if g.chance(0.3)
        else '<?xml version="1.0" encoding="utf-8"?>\n<configuration>\n  <connectionStrings>\n'
        f'    <add name="Default" connectionString="Data Source={g.pick(HOSTS)};Initial Catalog=App;User Id=app;'
        f'Password={pw};" providerName="System.Data.SqlClient" />\n  </connectionStrings>\n  <appSettings>\n'
        + r_xml_appsettings(g, doc, kvs)
        + "  </appSettings>\n</configuration>\n"
    )


def t_ruby(g: Gen, doc: Doc) -> str:
    kvs = kv_block(g, doc, (0, 3), (2, 4), (1, 2))
    return (
        f"# config/initializers/{svc(g)}.rb\n{pascal(svc(g))}.configure do |config|\n"
        + r_ruby(g, doc, kvs, "config")
        + "end\n"
    )


def t_rails_db(g: Gen, doc: Doc) -> str:
    pw = (
        doc.s("generic", g.password())
        if g.chance(0.5)
        else doc.d("reference", '<%= ENV["DATABASE_PASSWORD"] %>')
    )
    return (
        "default: &default\n  adapter: postgresql\n  encoding: unicode\n  pool: 5\n\n"
        "development:\n  <<: *default\n  database: app_development\n  password: "
        + doc.d("dummy", "postgres")
        + "\n\nproduction:\n  <<: *default\n  database: app_production\n  username: app\n"
        f"  password: {pw}\n  host: {g.pick(HOSTS)}\n"
    )


def t_php(g: Gen, doc: Doc) -> str:
    if g.chance(0.5):  # wp-config.php
        salts = "\n".join(
            f"define( '{k}', '" + doc.s("generic", g.mixed(ALNUM + "!#%*+-_.~^()[]{}<>=:;,", 64)) + "' );"
            for k in ("AUTH_KEY", "SECURE_AUTH_KEY", "LOGGED_IN_KEY", "NONCE_KEY")[: g.r.randint(1, 4)]
        )
        pw = doc.s("generic", g.password()) if g.chance(0.6) else doc.d("dummy", "password_here")
        return (
            "<?php\n/** The base configuration for WordPress */\n\ndefine( 'DB_NAME', 'wordpress' );\n"
            f"define( 'DB_USER', 'wp' );\ndefine( 'DB_PASSWORD', '{pw}' );\ndefine( 'DB_HOST', 'localhost' );\n\n"
            + salts
            + "\n\n$table_prefix = 'wp_';\ndefine( 'WP_DEBUG', false );\n"
        )
    kvs = kv_block(g, doc, (0, 3), (2, 4), (1, 2))
    return "<?php\n\nreturn [\n" + r_php(g, doc, kvs) + "];\n"


def t_ini(g: Gen, doc: Doc) -> str:
    kind = g.r.randint(0, 2)
    if kind == 0:
        return (
            "[alembic]\nscript_location = migrations\nsqlalchemy.url = "
            + (
                db_url(g, doc)
                if g.chance(0.5)
                else doc.d("url-reference", "postgresql://app:%(DB_PASSWORD)s@db/app")
            )
            + "\n"
        )
    if kind == 1:
        return (
            "[client]\nuser = app\npassword = "
            + (doc.s("generic", g.password()) if g.chance(0.6) else doc.d("dummy", "secret"))
            + f"\nhost = {g.pick(HOSTS)}\n"
        )
    kvs = kv_block(g, doc, (0, 3), (2, 4), (1, 3))
    return f"[{svc(g)}]\n" + r_ini(g, doc, kvs)


def t_maven(g: Gen, doc: Doc) -> str:
    pw = doc.s("generic", g.password()) if g.chance(0.6) else doc.d("reference", "${env.NEXUS_PASSWORD}")
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<settings xmlns="http://maven.apache.org/SETTINGS/1.0.0">\n'
        "  <servers>\n    <server>\n      <id>nexus-releases</id>\n      <username>deploy</username>\n"
        f"      <password>{pw}</password>\n    </server>\n    <server>\n      <id>github</id>\n"
        f"      <username>{g.pick(FIRST)}</username>\n      <password>"
        + (
            doc.s("github", g.github_token("ghp_"))
            if g.chance(0.4)
            else doc.d("reference", "${env.GITHUB_TOKEN}")
        )
        + "</password>\n    </server>\n  </servers>\n</settings>\n"
    )


def t_terraform(g: Gen, doc: Doc) -> str:
    kind = g.r.randint(0, 2)
    if kind == 0:
        kvs = kv_block(g, doc, (0, 3), (2, 4), (1, 2))
        return "# terraform.tfvars\n" + r_tfvars(g, doc, kvs)
    if kind == 1:
        if g.chance(0.5):
            a, b, q = doc.s("aws", g.aws_key_id()), doc.s("aws", g.aws_secret()), '"'
        else:
            a, b, q = doc.d("reference", "var.aws_access_key"), doc.d("reference", "var.aws_secret_key"), ""
        return (
            f'provider "aws" {{\n  region     = "us-east-1"\n  access_key = {q}{a}{q}\n  secret_key = {q}{b}{q}\n}}\n\n'
            'resource "aws_s3_bucket" "logs" {\n  bucket = "acme-logs"\n}\n'
        )
    if g.chance(0.5):
        pw_expr = '"' + doc.s("generic", g.password()) + '"'
    else:
        pw_expr = doc.d("reference", "random_password.db.result")
    return (
        'resource "aws_db_instance" "main" {\n  engine         = "postgres"\n  instance_class = "db.t3.micro"\n'
        f'  username       = "app"\n  password       = {pw_expr}\n  skip_final_snapshot = true\n}}\n\n'
        'variable "db_password" {\n  type      = string\n  sensitive = true\n}\n'
    )


def t_shell(g: Gen, doc: Doc) -> str:
    kind = g.r.randint(0, 2)
    if kind == 0:
        kvs = kv_block(g, doc, (0, 3), (2, 4), (1, 2))
        return (
            "#!/usr/bin/env bash\nset -euo pipefail\n\n"
            + r_env(g, doc, kvs, export=True)
            + "\n./bin/server\n"
        )
    if kind == 1:
        tok = (
            doc.s("github", g.github_token())
            if g.chance(0.4)
            else doc.s("jwt", g.jwt())
            if g.chance(0.4)
            else doc.d("reference", "$API_TOKEN")
        )
        return (
            "#!/bin/sh\n# smoke test against staging\n"
            f'curl -fsS -H "Authorization: Bearer {tok}" \\\n  https://api.acme-corp.net/v1/health\n'
            f'echo "sha256: {doc.d("hash", g.sha("sha256"))}"\n'
        )
    pw = doc.s("generic", g.password()) if g.chance(0.5) else doc.d("reference", "$MYSQL_PWD")
    return (
        f"#!/bin/bash\n# nightly backup\nmysqldump -h {g.pick(HOSTS)} -u backup -p'{pw}' --all-databases | gzip > /backups/db.sql.gz\n"
        + ("docker login -u acme -p " + doc.s("dockerhub", g.dockerhub()) + "\n" if g.chance(0.3) else "")
        + "aws s3 cp /backups/db.sql.gz s3://acme-backups/$(date +%F)/\n"
    )


def t_dockerfile(g: Gen, doc: Doc) -> str:
    kvs = kv_block(g, doc, (0, 1), (1, 3), (1, 2))
    env = "\n".join(
        f"ENV {kv.key}=" + (doc.d("reference", f"${{{kv.value}}}") if kv.expr else kv.value) for kv in kvs
    )
    arg = "ARG NPM_TOKEN\n" if g.chance(0.6) else f"ARG NPM_TOKEN={doc.s('npm', g.npm())}\n"
    return (
        f"FROM node:20-alpine@sha256:{doc.d('hash', g.sha('sha256'))} AS build\nWORKDIR /app\n"
        + arg
        + 'COPY package*.json ./\nRUN echo "//registry.npmjs.org/:_authToken=${NPM_TOKEN}" > .npmrc && npm ci && rm .npmrc\n'
        "COPY . .\nRUN npm run build\n\nFROM node:20-alpine\nWORKDIR /app\nCOPY --from=build /app/dist ./dist\n"
        + env
        + '\nEXPOSE 8080\nCMD ["node", "dist/index.js"]\n'
    )


def t_npmrc(g: Gen, doc: Doc) -> str:
    tok = doc.s("npm", g.npm()) if g.chance(0.6) else doc.d("reference", "${NPM_TOKEN}")
    out = f"registry=https://registry.npmjs.org/\n//registry.npmjs.org/:_authToken={tok}\n"
    if g.chance(0.4):
        out += (
            "@acme:registry=https://npm.pkg.github.com\n//npm.pkg.github.com/:_authToken="
            + doc.s("github", g.github_token("ghp_"))
            + "\n"
        )
    return out + "save-exact=true\n"


def t_pypirc(g: Gen, doc: Doc) -> str:
    tok = doc.s("pypi", g.pypi()) if g.chance(0.7) else doc.d("dummy", "<your-pypi-token>")
    return (
        "[distutils]\nindex-servers =\n    pypi\n    internal\n\n[pypi]\nusername = __token__\n"
        f"password = {tok}\n\n[internal]\nrepository = https://nexus.acme-corp.net/repository/pypi/\n"
        "username = deploy\npassword = "
        + (doc.s("generic", g.password()) if g.chance(0.5) else doc.d("dummy", "changeme"))
        + "\n"
    )


def t_markdown(g: Gen, doc: Doc) -> str:
    s = svc(g)
    kind = g.r.randint(0, 2)
    parts = [
        f"# {s.capitalize()} service\n\n## Setup\n\nCopy `.env.example` to `.env` and set your credentials:\n\n```sh\n"
    ]
    parts.append(r_env(g, doc, kv_block(g, doc, (0, 0), (2, 4), (1, 2))))
    parts.append(
        "```\n\nThe AWS SDK reads the usual variables; the docs use the placeholder key "
        f"`{doc.d('documented-example', AWS_EXAMPLE_ID)}`.\n\n"
    )
    if kind == 0:
        parts.append(
            '## Calling the API\n\n```sh\ncurl https://api.acme-corp.net/v1/orders \\\n  -H "Authorization: Bearer '
            + (doc.s("jwt", g.jwt()) if g.chance(0.4) else doc.d("documented-example", JWT_IO))
            + '"\n```\n'
        )
    elif kind == 1:
        parts.append(
            "## Troubleshooting\n\nIf the pipeline fails with 401, the token was rotated. Last working one (remove!):\n\n"
            f"    SLACK_TOKEN={doc.s('slack', g.slack_token()) if g.chance(0.5) else doc.d('documented-example', SLACK_DOC_TOKEN)}\n"
        )
    else:
        parts.append(
            "## Integrity\n\nVerify downloads:\n\n| file | sha256 |\n|---|---|\n"
            + "".join(f"| {s}-{i}.tar.gz | {doc.d('hash', g.sha('sha256'))} |\n" for i in range(3))
        )
    if g.chance(0.4):
        parts.append(
            "\nGitHub tokens look like `"
            + doc.d("bad-checksum", g.github_bad_checksum())
            + "` (40 characters).\n"
        )
    parts.append("\nPasswords must be at least 12 characters. Never commit real tokens.\n")
    return "".join(parts)


def t_notebook(g: Gen, doc: Doc) -> str:
    key_line = (
        f'openai.api_key = "{doc.s("openai", g.openai())}"\n'
        if g.chance(0.35)
        else f'os.environ["HF_TOKEN"] = "{doc.s("huggingface", g.huggingface())}"\n'
        if g.chance(0.3)
        else 'openai.api_key = os.environ["OPENAI_API_KEY"]\n'
    )
    img = doc.d("base64-image", "iVBORw0KGgoAAAANSUhEUgAA" + g.b64_blob(600))
    cells = [
        {
            "cell_type": "markdown",
            "metadata": {},
            "source": ["# Exploration\n", "Load the data and try the model."],
        },
        {
            "cell_type": "code",
            "execution_count": 1,
            "metadata": {},
            "outputs": [],
            "source": ["import os\n", "import openai\n", "import pandas as pd\n", key_line],
        },
        {
            "cell_type": "code",
            "execution_count": 2,
            "metadata": {},
            "source": ["df.plot()"],
            "outputs": [
                {
                    "data": {"image/png": img, "text/plain": ["<Figure size 640x480 with 1 Axes>"]},
                    "metadata": {},
                    "output_type": "display_data",
                }
            ],
        },
    ]
    nb = {
        "cells": cells,
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    return json.dumps(nb, indent=1) + "\n"


def t_minjs(g: Gen, doc: Doc) -> str:
    chunks = ",".join(f'{i}:"{doc.d("chunk-hash", g.chars(HEX, 20))}"' for i in range(g.r.randint(4, 9)))
    font = doc.d("base64-font", "d09GMgABAAAAA" + g.b64_blob(900))
    leak = ""
    if g.chance(0.4):
        leak = f'var cfg={{apiKey:"{doc.s("gcp", g.gcp_api_key())}",env:"prod"}};'
    elif g.chance(0.5):
        leak = f'var stripe=Stripe("{doc.d("publishable", g.stripe_publishable())}");'
    return (
        f'!function(e){{var t={{}};function n(r){{return t[r]}}n.p="/static/";n.h={{{chunks}}};}}([]);{leak}'
        f'var css="@font-face{{font-family:Inter;src:url(data:font/woff2;base64,{font}) format(\\"woff2\\")}}";'
        f'var nonce="{doc.d("nonce", g.b64_blob(16))}";function a(e,t){{return e.password===t?1:0}}\n'
    )


def t_lockfile(g: Gen, doc: Doc) -> str:
    kind = g.r.randint(0, 3)
    pkgs = ("lodash", "express", "debug", "ms", "chalk", "semver", "uuid", "axios", "qs", "ws")
    if kind == 0:
        deps = ",\n".join(
            f'    "node_modules/{p}": {{\n      "version": "{g.r.randint(1, 9)}.{g.r.randint(0, 20)}.{g.r.randint(0, 9)}",\n'
            f'      "resolved": "https://registry.npmjs.org/{p}/-/{p}-1.0.0.tgz",\n'
            f'      "integrity": "{doc.d("sri", g.sri())}"\n    }}'
            for p in g.r.sample(pkgs, 6)
        )
        return '{\n  "name": "app",\n  "lockfileVersion": 3,\n  "packages": {\n' + deps + "\n  }\n}\n"
    if kind == 1:
        return "".join(
            f'{p}@^1.0.0:\n  version "1.{g.r.randint(0, 9)}.0"\n  resolved "https://registry.yarnpkg.com/{p}/-/{p}-1.0.0.tgz#'
            f'{doc.d("hash", g.sha("sha1"))}"\n  integrity {doc.d("sri", g.sri())}\n\n'
            for p in g.r.sample(pkgs, 6)
        )
    if kind == 2:
        return "".join(
            f'[[package]]\nname = "{p}"\nversion = "1.{g.r.randint(0, 9)}.0"\nfiles = [\n'
            f'    {{file = "{p}-1.0.0-py3-none-any.whl", hash = "sha256:{doc.d("hash", g.sha("sha256"))}"}},\n]\n\n'
            for p in ("requests", "urllib3", "idna", "certifi", "boto3")
        )
    return "".join(
        f"github.com/{g.word()}/{p} v1.{g.r.randint(0, 9)}.0 h1:{doc.d('hash', g.b64_blob(32))}\n"
        for p in pkgs[:6]
    )


def t_csv(g: Gen, doc: Doc) -> str:
    year = g.r.randint(2019, 2024)
    if g.chance(0.5):
        doc.name = f"users-{year}.csv"
        rows = ["id,email,password_hash,created_at"]
        rows += [
            f"{i},{g.pick(FIRST)}{i}@example.com,{doc.d('hash', g.bcrypt())},2024-0{g.r.randint(1, 9)}-1{i % 10}"
            for i in range(1, g.r.randint(4, 9))
        ]
        return "\n".join(rows) + "\n"
    doc.name = f"{g.pick(('integrations', 'keys', 'api-clients'))}-{year}.csv"
    rows = ["service,owner,api_key,rotated"]
    for i in range(g.r.randint(3, 6)):
        if g.chance(0.5):
            v = doc.s("generic", g.api_key())
        else:
            v = doc.d("redacted", g.pick(("***", "<rotated>", "n/a", "see vault")))
        rows.append(f"{svc(g)},{g.pick(FIRST)},{v},2024-0{i + 1}-01")
    return "\n".join(rows) + "\n"


def t_log(g: Gen, doc: Doc) -> str:
    lines = []
    for i in range(g.r.randint(6, 14)):
        ts = f"2024-05-{10 + i % 18:02d}T12:{i:02d}:0{i % 10}Z"
        r = g.r.random()
        if r < 0.15:
            lines.append(
                f"{ts} INFO request_id={doc.d('uuid', g.uuid())} trace={doc.d('trace-id', g.chars(HEX, 32))} GET /v1/items 200"
            )
        elif r < 0.25:
            lines.append(
                f"{ts} DEBUG outgoing headers: {{'Authorization': 'Bearer {doc.s('jwt', g.jwt())}'}}"
            )
        elif r < 0.32:
            lines.append(f"{ts} ERROR connect failed: {db_url(g, doc)} (timeout)")
        elif r < 0.38:
            lines.append(f"{ts} WARN login failed for user={g.pick(FIRST)} password=******** ip=10.0.{i}.4")
        elif r < 0.44:
            lines.append(
                f'{ts} INFO deployed commit {doc.d("git-sha", g.sha("sha1"))} etag="{doc.d("hash", g.sha("md5"))}"'
            )
        elif r < 0.48:
            lines.append(f"{ts} DEBUG env AWS_SECRET_ACCESS_KEY={doc.s('aws', g.aws_secret())}")
        else:
            lines.append(
                f"{ts} INFO {g.pick(('job finished', 'cache warm', 'healthcheck ok', 'token refreshed'))} in {g.r.randint(3, 900)}ms"
            )
    return "\n".join(lines) + "\n"


def t_pem(g: Gen, doc: Doc) -> str:
    r = g.r.random()
    pem, key = g.private_key_pem()
    openssh = pem.startswith("-----BEGIN OPENSSH")
    if r < 0.45:
        doc.name = (
            "id_ed25519"
            if openssh
            else g.pick(("server.key", "id_rsa", "deploy_key", "jwt-signing.pem", "tls.key"))
        )
        return doc.s("private-key", pem)
    if r < 0.6:
        doc.name = g.pick(("public.pem", "jwt.pub", "signing-key.pub.pem"))
        return doc.d("public-key", g.public_pem(key))
    if r < 0.75:
        doc.name = g.pick(("id_ed25519.pub", "authorized_keys", "deploy_key.pub"))
        return doc.d("public-key", g.ssh_public(key)) + "\n"
    if r < 0.9:
        doc.name = g.pick(("ca.crt", "tls.crt", "server.pem"))
        return doc.d("certificate", g.certificate())
    doc.name = "bundle.pem"
    return "# bundle\n" + doc.d("certificate", g.certificate()) + doc.s("private-key", pem)


def t_netrc(g: Gen, doc: Doc) -> str:
    pw = doc.s("generic", g.password()) if g.chance(0.5) else doc.s("github", g.github_token("ghp_"))
    return f"machine {g.pick(('api.github.com', 'nexus.acme-corp.net', 'git.acme-corp.net'))}\n  login {g.pick(FIRST)}\n  password {pw}\n"


def t_sql(g: Gen, doc: Doc) -> str:
    pw = doc.s("generic", g.password()) if g.chance(0.6) else doc.d("dummy", "changeme")
    return (
        "-- migration: create reporting user\n"
        f"CREATE USER reporting WITH PASSWORD '{pw}';\nGRANT SELECT ON ALL TABLES IN SCHEMA public TO reporting;\n"
        "ALTER TABLE users ADD COLUMN password_hash TEXT NOT NULL DEFAULT '';\n"
    )


def t_locale(g: Gen, doc: Doc) -> str:
    items = {
        "login.password": doc.d("i18n", "Password"),
        "login.passwordPlaceholder": doc.d("i18n", "Enter your password"),
        "login.token": doc.d("i18n", "Access token"),
        "settings.apiKey": doc.d("i18n", "API key"),
        "errors.passwordTooShort": doc.d("i18n", "Password must be at least 12 characters"),
        "settings.secretKey": doc.d("i18n", "Secret key"),
        "auth.password": doc.d("i18n", g.pick(("Passwort", "Mot de passe", "Contraseña"))),
    }
    return json.dumps(items, indent=2, ensure_ascii=False) + "\n"


def t_css(g: Gen, doc: Doc) -> str:
    return (
        f".logo{{background:url(data:image/png;base64,{doc.d('base64-image', 'iVBORw0KGgo' + g.b64_blob(700))})}}\n"
        f"/* build {doc.d('chunk-hash', g.chars(HEX, 8))} */\n"
    )


def t_csp(g: Gen, doc: Doc) -> str:
    h1, h2 = doc.d("csp-hash", "sha256-" + g.b64_blob(32)), doc.d("csp-hash", "sha384-" + g.b64_blob(48))
    return (
        "server {\n  listen 443 ssl;\n  server_name app.acme-corp.net;\n  ssl_certificate /etc/ssl/app.crt;\n"
        "  ssl_certificate_key /etc/ssl/app.key;\n"
        f"  add_header Content-Security-Policy \"script-src 'self' '{h1}' '{h2}'\";\n"
        + (
            '  proxy_set_header Authorization "Basic '
            + doc.s("generic", base64.b64encode(f"admin:{g.password()}".encode()).decode())
            + '";\n'
            if g.chance(0.4)
            else ""
        )
        + "}\n"
    )


TEMPLATES: list[tuple[str, Template, int, Callable[[Gen, int], str]]] = [
    # (name, template, count at scale 1, path maker)
    (
        "env",
        t_env,
        26,
        lambda g, i: f"{svc(g)}/{g.pick(('.env', '.env.production', '.env.local', 'config/.env'))}",
    ),
    ("env-example", t_env_example, 6, lambda g, i: f"{svc(g)}/.env.example"),
    (
        "compose",
        t_compose,
        15,
        lambda g, i: f"{svc(g)}/docker-compose{g.pick(('', '.prod', '.override'))}.yml",
    ),
    (
        "k8s",
        t_k8s,
        26,
        lambda g, i: f"deploy/k8s/{g.pick(('prod', 'staging', 'base'))}/{svc(g)}/manifest.yaml",
    ),
    ("gha", t_gha, 14, lambda g, i: f"{svc(g)}/.github/workflows/{g.pick(('ci', 'release', 'deploy'))}.yml"),
    ("helm", t_helm, 12, lambda g, i: f"charts/{svc(g)}/values{g.pick(('', '-prod', '-staging'))}.yaml"),
    (
        "ansible",
        t_ansible,
        10,
        lambda g, i: f"ansible/inventories/{g.pick(('prod', 'stage'))}/group_vars/{svc(g)}.yml",
    ),
    ("package-json", t_package_json, 10, lambda g, i: f"web/{svc(g)}/package.json"),
    (
        "gcp-sa",
        t_gcp_sa,
        8,
        lambda g, i: f"{svc(g)}/{g.pick(('credentials', 'service-account', 'gcp-key', 'sa'))}.json",
    ),
    ("docker-config", t_docker_config, 6, lambda g, i: f"home/{g.pick(FIRST)}/.docker/config.json"),
    (
        "python",
        t_python,
        28,
        lambda g, i: f"{svc(g)}/{g.pick(('settings', 'config', 'client', 'tasks', 'db', 'upload'))}.py",
    ),
    ("py-test", t_py_test, 8, lambda g, i: f"{svc(g)}/tests/test_{g.pick(('auth', 'login', 'tokens'))}.py"),
    ("js", t_js, 14, lambda g, i: f"{svc(g)}/src/{g.pick(('config', 'server', 'index'))}.js"),
    ("ts", t_ts, 14, lambda g, i: f"{svc(g)}/src/{g.pick(('settings', 'env', 'payments'))}.ts"),
    ("go", t_go, 14, lambda g, i: f"{svc(g)}/internal/config/{g.pick(('config', 'secrets', 'defaults'))}.go"),
    (
        "java",
        t_java,
        14,
        lambda g, i: f"{svc(g)}/src/main/java/com/acme/{g.pick(('Config', 'Constants', 'Secrets'))}.java",
    ),
    (
        "spring-props",
        t_spring_props,
        10,
        lambda g, i: f"{svc(g)}/src/main/resources/application{g.pick(('', '-prod', '-dev'))}.properties",
    ),
    ("spring-yml", t_spring_yml, 6, lambda g, i: f"{svc(g)}/src/main/resources/application.yml"),
    ("csharp", t_csharp, 8, lambda g, i: f"{pascal(svc(g))}/Secrets.cs"),
    (
        "appsettings",
        t_appsettings,
        10,
        lambda g, i: f"{pascal(svc(g))}/appsettings{g.pick(('', '.Production', '.Development'))}.json",
    ),
    ("webconfig", t_webconfig, 8, lambda g, i: f"{pascal(svc(g))}/Web{g.pick(('', '.Release'))}.config"),
    ("ruby", t_ruby, 8, lambda g, i: f"{svc(g)}/config/initializers/{svc(g)}.rb"),
    ("rails-db", t_rails_db, 5, lambda g, i: f"{svc(g)}/config/database.yml"),
    (
        "php",
        t_php,
        10,
        lambda g, i: f"{svc(g)}/{g.pick(('wp-config.php', 'config/app.php', 'config/services.php'))}",
    ),
    (
        "ini",
        t_ini,
        10,
        lambda g, i: f"{svc(g)}/{g.pick(('alembic.ini', 'my.cnf', 'settings.ini', 'setup.cfg'))}",
    ),
    ("maven", t_maven, 6, lambda g, i: f"home/{g.pick(FIRST)}/.m2/settings.xml"),
    (
        "terraform",
        t_terraform,
        16,
        lambda g, i: f"infra/{svc(g)}/{g.pick(('main.tf', 'terraform.tfvars', 'rds.tf', 'providers.tf'))}",
    ),
    (
        "shell",
        t_shell,
        16,
        lambda g, i: f"scripts/{g.pick(('deploy', 'backup', 'smoke', 'bootstrap', 'run'))}.sh",
    ),
    ("dockerfile", t_dockerfile, 12, lambda g, i: f"{svc(g)}/Dockerfile{g.pick(('', '', '.prod'))}"),
    ("npmrc", t_npmrc, 6, lambda g, i: f"web/{svc(g)}/.npmrc"),
    ("pypirc", t_pypirc, 5, lambda g, i: f"home/{g.pick(FIRST)}/.pypirc"),
    (
        "markdown",
        t_markdown,
        20,
        lambda g, i: (
            f"{svc(g)}/{g.pick(('README.md', 'docs/setup.md', 'docs/runbook.md', 'CONTRIBUTING.md'))}"
        ),
    ),
    (
        "notebook",
        t_notebook,
        8,
        lambda g, i: f"notebooks/{g.word()}-{g.pick(('eda', 'finetune', 'eval'))}.ipynb",
    ),
    ("minjs", t_minjs, 6, lambda g, i: f"web/{svc(g)}/dist/main.{g.chars(HEX, 8)}.min.js"),
    (
        "lockfile",
        t_lockfile,
        12,
        lambda g, i: f"{svc(g)}/{g.pick(('package-lock.json', 'yarn.lock', 'poetry.lock', 'go.sum'))}",
    ),
    (
        "csv",
        t_csv,
        6,
        lambda g, i: f"data/exports/{g.pick(('crm', 'billing', 'ops'))}/export.csv",
    ),
    ("log", t_log, 12, lambda g, i: f"logs/{svc(g)}-{g.r.randint(1, 28):02d}.log"),
    (
        "pem",
        t_pem,
        14,
        lambda g, i: f"{svc(g)}/{g.pick(('certs', 'keys', 'secrets', 'tls', 'deploy'))}/key.pem",
    ),
    ("netrc", t_netrc, 4, lambda g, i: f"home/{g.pick(FIRST)}/.netrc"),
    ("sql", t_sql, 4, lambda g, i: f"{svc(g)}/migrations/00{g.r.randint(10, 99)}_reporting_user.sql"),
    ("locale", t_locale, 5, lambda g, i: f"web/{svc(g)}/locales/{g.pick(('en', 'de', 'fr', 'es'))}.json"),
    ("css", t_css, 3, lambda g, i: f"web/{svc(g)}/dist/app.{g.chars(HEX, 8)}.css"),
    ("nginx", t_csp, 4, lambda g, i: f"deploy/nginx/{svc(g)}.conf"),
]


def generate(out_dir: Path | str, scale: float = 1.0, seed: int = SEED) -> tuple[list[Label], list[Decoy]]:
    """Write the corpus under ``out_dir`` and return its labels; identical for identical arguments."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    g = Gen(seed)
    labels: list[Label] = []
    decoys: list[Decoy] = []
    used: set[str] = set()
    plan: list[tuple[Template, Callable[[Gen, int], str]]] = []
    for _name, tmpl, count, path_fn in TEMPLATES:
        plan += [(tmpl, path_fn)] * max(1, round(count * scale))
    g.r.shuffle(plan)
    for i, (tmpl, path_fn) in enumerate(plan):
        path = path_fn(g, i)
        doc = Doc(path)
        body = tmpl(g, doc)
        if doc.name:
            path = path.rsplit("/", 1)[0] + "/" + doc.name
        while path in used:  # same service, another package of the monorepo
            head, _, tail = path.partition("/")
            sub = g.pick(("legacy", "v2", "worker", "api", "admin", "internal", "cli", "jobs"))
            path = f"{head}/{sub}/{tail}" if g.chance(0.5) else f"{head}/{sub}-{g.r.randint(2, 9)}/{tail}"
        used.add(path)
        doc.path = path
        text, lab, dec = doc.render(body)
        dest = out / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text, encoding="utf-8")
        labels += lab
        decoys += dec
    (out / LABELS_FILE).write_text(json.dumps([asdict(x) for x in labels], indent=1) + "\n", encoding="utf-8")
    (out / DECOYS_FILE).write_text(json.dumps([asdict(x) for x in decoys], indent=1) + "\n", encoding="utf-8")
    return labels, decoys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every template's file count")
    ap.add_argument("--seed", type=int, default=SEED)
    a = ap.parse_args(argv)
    labels, decoys = generate(a.out_dir, a.scale, a.seed)
    files = sum(1 for p in Path(a.out_dir).rglob("*") if p.is_file() and p.name not in META_FILES)
    print(f"wrote {files} files, {len(labels)} positives, {len(decoys)} planted negatives to {a.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
