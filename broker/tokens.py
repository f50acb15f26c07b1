"""Short-lived EdDSA (Ed25519) JWTs bound to a peer uid: signing keys, issuance, verification, revocation.

Why it exists: the sidecar's third layer. Peer credentials say *who* is connected; a token says what
that uid was granted (role, scopes) for a few minutes, so a request does not re-run the policy lookup,
and a token copied to another process is useless there (its ``uid`` claim must equal the presenting
connection's peer uid).

Signing keys (``KeyRing``)
--------------------------
* One current Ed25519 key signs; it is replaced every ``rotate_every`` seconds (lazily, on the first
  ``signing_key()`` after it is due). A replaced key keeps verifying for ``max_token_ttl + leeway``
  after its retirement (every token it signed has expired by then), then it is dropped.
* ``kid`` is the RFC 7638 JWK thumbprint of the public key, so the same key always has the same id and
  tokens survive a restart that reloads the key file.
* ``key_file``: a PEM file (PKCS#8 ``PRIVATE KEY`` blocks, unencrypted). It must be a regular file owned
  by our effective uid with no group/other permission bits, else ``ConfigError(file, "tokens.key_file",
  reason)``: a signing key others can read lets them mint tokens for any uid. A missing file is
  generated; rotations rewrite it. Writes are atomic (temp file 0600 in the same directory, fsync,
  rename, fsync the directory). The file lists the current key first, then retired keys still in
  their grace period, each preceded by a ``# key kid=… created=… [retired=…]`` comment (text outside
  PEM boundaries, which PEM readers ignore), under a ``format`` header line so the layout can be
  upgraded. A plain single-key PEM (``openssl genpkey -algorithm ed25519``) is accepted too; its
  creation time is taken from the file's mtime. If a rotation cannot be written (a read-only mount),
  it is kept in memory with a warning: a restart then goes back to the file's key, whose tokens still
  verify, and clients holding tokens from the in-memory key simply ask for new ones.
* One process per key file: two sidecars sharing a writable key file would overwrite each other's
  rotations.

Verification (``TokenService.verify``)
--------------------------------------
Algorithm allow-list ``["EdDSA"]`` (checked on the header before any key lookup, and again by pyjwt),
``kid`` lookup in the key ring, signature, then our own checks of required claims, issuer, audience
(exactly one string, equal to ours), claim types, ``exp``/``nbf``/``iat`` against the injectable clock
with ``leeway``, the revocation list by ``jti``, and finally the peer uid. Each distinct token string is
verified once and its ``Claims`` cached (LRU, ``cache_size`` entries) until it expires: an Ed25519
verification through pyjwt costs tens of microseconds, a cached read one dict lookup. The cached path
still checks expiry, not-before, revocation and uid on every call. Only tokens that passed the
signature and claim checks are cached; an edited token is another string, so it is verified afresh.

Every failure raises ``Unauthorized(reason)`` with ``reason`` one of ``malformed``, ``bad_signature``,
``unknown_key``, ``bad_algorithm``, ``expired``, ``not_yet_valid``, ``bad_audience``, ``bad_issuer``,
``revoked``, ``missing_claim``; a valid token from another uid raises ``Forbidden("uid_mismatch")``.

This module never logs, formats or puts into an exception a token or key material; logs name ``kid``s
(public key hashes) only.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import os
import re
import stat
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from depthguard.errors import ConfigError, Forbidden, Unauthorized
from depthguard.fsutil import fsync_dir

__all__ = [
    "ALGORITHM",
    "KEY_FILE_FORMAT",
    "MAX_TOKEN_CHARS",
    "REQUIRED_CLAIMS",
    "Claims",
    "KeyRing",
    "TokenService",
    "key_id",
]

log = logging.getLogger(__name__)

ALGORITHM: Final = "EdDSA"
"""The only JWS algorithm accepted: asymmetric, so the verification key cannot be abused as an HMAC secret."""
REQUIRED_CLAIMS: Final = ("iss", "aud", "sub", "role", "scopes", "uid", "iat", "nbf", "exp", "jti")
MAX_TOKEN_CHARS: Final = 8192
"""Longer strings are refused before any parsing (our tokens are well under 1 KiB)."""
KEY_FILE_FORMAT: Final = 1
CONFIG_KEY: Final = "tokens.key_file"

_HEADER_LINE = f"# depthguard token signing keys, format {KEY_FILE_FORMAT}."
_HEADER_RE = re.compile(r"^# depthguard token signing keys, format (\d+)\.", re.M)
_BLOCK_RE = re.compile(
    r"(?:^# key (?P<meta>[^\n]*)\r?\n)?"
    r"(?P<pem>-----BEGIN (?P<label>[A-Z0-9 ]+)-----.*?-----END (?P=label)-----)",
    re.S | re.M,
)
# Claim checks are ours (clock injectable, exact reasons); pyjwt checks the algorithm and signature.
_PYJWT = jwt.PyJWT(
    options={
        "verify_signature": True,
        "verify_exp": False,
        "verify_nbf": False,
        "verify_iat": False,
        "verify_aud": False,
        "verify_iss": False,
        "verify_sub": False,
        "verify_jti": False,
        "require": [],
    }
)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def key_id(public: Ed25519PublicKey) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url) of an Ed25519 public key: a stable, public ``kid``."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    jwk = '{"crv":"Ed25519","kty":"OKP","x":"' + _b64url(raw) + '"}'  # members in lexicographic order
    return _b64url(hashlib.sha256(jwk.encode("ascii")).digest())


# -------------------------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class _Key:
    kid: str
    private: Ed25519PrivateKey = field(repr=False)
    public: Ed25519PublicKey = field(repr=False)
    created: float
    retired: float | None = None
    """When a newer key replaced this one; ``None`` for the current key."""

    @classmethod
    def new(cls, private: Ed25519PrivateKey, created: float, retired: float | None = None) -> _Key:
        public = private.public_key()
        return cls(key_id(public), private, public, created, retired)


@dataclass(frozen=True)
class _Ring:
    """An immutable snapshot: readers take a reference without locking, writers swap in a new one."""

    current: _Key
    previous: tuple[_Key, ...] = ()


class KeyRing:
    """Ed25519 signing keys: rotated on a schedule; previous keys verify until their tokens have expired.

    Thread-safe: rotation happens under a lock; lookups read an immutable snapshot."""

    def __init__(
        self,
        *,
        key_file: Path | None = None,
        rotate_every: float = 86400.0,
        max_token_ttl: float = 3600.0,
        now: Callable[[], float] = time.time,
        leeway: float = 5.0,
    ) -> None:
        """``max_token_ttl`` must be at least the token service's cap; ``leeway`` its clock leeway (both
        set how long a retired key keeps verifying)."""
        if not rotate_every > 0:
            raise ValueError("rotate_every must be positive")
        if not max_token_ttl > 0:
            raise ValueError("max_token_ttl must be positive")
        if leeway < 0:
            raise ValueError("leeway must not be negative")
        self._file = key_file
        self._rotate_every = rotate_every
        self._max_token_ttl = max_token_ttl
        self._grace = max_token_ttl + leeway
        self._now = now
        self._lock = threading.Lock()
        self._ring = self._initial_ring()

    def __repr__(self) -> str:
        ring = self._ring
        return f"KeyRing(kid={ring.current.kid!r}, previous={len(ring.previous)}, file={self._file!r})"

    @property
    def max_token_ttl(self) -> float:
        """The longest token lifetime this ring's grace period covers."""
        return self._max_token_ttl

    @property
    def current_kid(self) -> str:
        """The ``kid`` of the key that signs now (without rotating)."""
        return self._ring.current.kid

    def kids(self) -> list[str]:
        """Every ``kid`` that verifies now, current first."""
        now = self._now()
        ring = self._ring
        return [ring.current.kid] + [k.kid for k in ring.previous if self._in_grace(k, now)]

    def signing_key(self) -> tuple[str, Ed25519PrivateKey]:
        """The current ``(kid, key)``, rotating first when ``rotate_every`` has passed."""
        ring = self._ring
        if self._now() - ring.current.created >= self._rotate_every:
            with self._lock:
                ring = self._ring
                if self._now() - ring.current.created >= self._rotate_every:  # re-check: another thread won
                    ring = self._rotate_locked()
        return ring.current.kid, ring.current.private

    def rotate(self) -> str:
        """Replace the signing key now (scheduled rotation, or an operator's response to a suspected leak);
        returns the new ``kid``. The old key keeps verifying through its grace period."""
        with self._lock:
            return self._rotate_locked().current.kid

    def verification_key(self, kid: str) -> Ed25519PublicKey | None:
        """The public key for ``kid``, or ``None`` when it is unknown or its grace period is over."""
        ring = self._ring
        if kid == ring.current.kid:
            return ring.current.public
        now = self._now()
        for key in ring.previous:
            if key.kid == kid:
                return key.public if self._in_grace(key, now) else None
        return None

    # ------------------------------------------------------------------------------------- internals

    def _in_grace(self, key: _Key, now: float) -> bool:
        return key.retired is None or now < key.retired + self._grace

    def _rotate_locked(self) -> _Ring:
        now = self._now()
        old = self._ring
        retired = _Key(old.current.kid, old.current.private, old.current.public, old.current.created, now)
        keep = tuple(k for k in (retired, *old.previous) if self._in_grace(k, now))
        ring = _Ring(_Key.new(Ed25519PrivateKey.generate(), now), keep)
        if self._file is not None:
            try:
                _write_key_file(self._file, ring, replace=True)
            except OSError as exc:
                # Availability over persistence: see the module docstring. Never log key material.
                log.warning(
                    "token signing key rotated in memory only: cannot write %s (%s); a restart reverts to "
                    "the key in that file", self._file, exc.strerror or exc.__class__.__name__,
                )
        self._ring = ring
        log.info("token signing key rotated: kid %s replaces %s (verifies for %.0f s more)",
                 ring.current.kid, retired.kid, self._grace)
        return ring

    def _initial_ring(self) -> _Ring:
        now = self._now()
        path = self._file
        if path is None:
            return _Ring(_Key.new(Ed25519PrivateKey.generate(), now))
        ring = _read_key_file(path, now)
        if ring is None:
            ring = _Ring(_Key.new(Ed25519PrivateKey.generate(), now))
            try:
                path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
                won = _write_key_file(path, ring, replace=False)
            except OSError as exc:
                reason = f"cannot write key file: {exc.strerror or exc}"
                raise ConfigError(str(path), CONFIG_KEY, reason) from exc
            if not won:  # another process created it between our stat and our link: use its keys
                ring = _read_key_file(path, now)
                if ring is None:
                    raise ConfigError(str(path), CONFIG_KEY, "key file vanished while it was being created")
            else:
                log.info("generated token signing key %s in %s", ring.current.kid, path)
        previous = tuple(k for k in ring.previous if self._in_grace(k, now))
        return _Ring(ring.current, previous)


def _read_key_file(path: Path, now: float) -> _Ring | None:
    """Load a key file; ``None`` if it does not exist. Refuses loose permissions and foreign owners."""
    file = str(path)
    try:
        st = path.stat()  # follows symlinks on purpose: Kubernetes secret mounts are symlinks
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(file, CONFIG_KEY, f"cannot read key file: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(file, CONFIG_KEY, "not a regular file")
    # Security: whoever can read the signing key can mint a token for any uid and role.
    if st.st_uid != os.geteuid():
        raise ConfigError(
            file, CONFIG_KEY,
            f"key file is owned by uid {st.st_uid}, not by this process's uid {os.geteuid()}",
        )
    if st.st_mode & 0o077:
        raise ConfigError(
            file, CONFIG_KEY,
            f"key file mode is {stat.S_IMODE(st.st_mode):04o}; it must be 0600 or stricter "
            f"(chmod 600 {path})",
        )
    try:
        text = path.read_bytes().decode("ascii")
    except UnicodeDecodeError:
        raise ConfigError(file, CONFIG_KEY, "not a PEM file (non-ASCII bytes)") from None
    except OSError as exc:
        raise ConfigError(file, CONFIG_KEY, f"cannot read key file: {exc.strerror or exc}") from None
    return _parse_key_file(text, file, min(st.st_mtime, now))


def _parse_key_file(text: str, file: str, mtime: float) -> _Ring:
    header = _HEADER_RE.search(text)
    if header is not None and int(header.group(1)) > KEY_FILE_FORMAT:
        raise ConfigError(
            file, CONFIG_KEY,
            f"key file format {header.group(1)} is newer than this depthguard understands "
            f"({KEY_FILE_FORMAT})",
        )
    keys: list[_Key] = []
    for n, match in enumerate(_BLOCK_RE.finditer(text), start=1):
        if "ENCRYPTED" in match["label"]:
            raise ConfigError(file, CONFIG_KEY, f"key {n} is encrypted; store it unencrypted with mode 0600")
        try:
            private = serialization.load_pem_private_key(match["pem"].encode("ascii"), password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise ConfigError(file, CONFIG_KEY, f"key {n} is not a readable PEM private key") from None
        if not isinstance(private, Ed25519PrivateKey):
            raise ConfigError(file, CONFIG_KEY, f"key {n} is not an Ed25519 key")
        meta = _parse_meta(match["meta"] or "", file, n)
        if not keys:  # the first key signs; without metadata its age is the file's
            keys.append(_Key.new(private, min(meta.get("created", mtime), mtime)))
        else:  # an older key: verifies only; retired no later than the file was written
            keys.append(_Key.new(private, meta.get("created", mtime), min(meta.get("retired", mtime), mtime)))
    if not keys:
        raise ConfigError(file, CONFIG_KEY, "no PEM private key found")
    return _Ring(keys[0], tuple(keys[1:]))


def _parse_meta(meta: str, file: str, n: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in meta.split():
        name, sep, value = item.partition("=")
        if not sep or name not in ("created", "retired"):
            continue  # kid= and future fields are informational
        try:
            out[name] = float(value)
        except ValueError:
            raise ConfigError(file, CONFIG_KEY, f"key {n}: bad {name} time") from None
        if not math.isfinite(out[name]):
            raise ConfigError(file, CONFIG_KEY, f"key {n}: bad {name} time")
    return out


def _serialize(ring: _Ring) -> bytes:
    lines = [
        _HEADER_LINE + " The first key signs new tokens; the others only",
        "# verify tokens they signed until those expire. Written by depthguard: keep it mode 0600.",
    ]
    for key in (ring.current, *ring.previous):
        meta = f"# key kid={key.kid} created={key.created:.6f}"
        if key.retired is not None:
            meta += f" retired={key.retired:.6f}"
        pem = key.private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode("ascii")
        lines.append(meta)
        lines.append(pem.rstrip("\n"))
    return ("\n".join(lines) + "\n").encode("ascii")


def _write_key_file(path: Path, ring: _Ring, *, replace: bool) -> bool:
    """Write ``ring`` atomically, mode 0600. With ``replace=False`` an existing file wins (returns False)."""
    data = _serialize(ring)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # created 0600
    try:
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # atomic create-if-absent: never clobbers a concurrent first start
            except FileExistsError:
                return False
    finally:
        if os.path.lexists(tmp):  # gone after a rename; after a link (or a failure) ours to remove
            os.unlink(tmp)
    fsync_dir(path.parent)
    return True


# ------------------------------------------------------------------------------------------ tokens


@dataclass(frozen=True)
class Claims:
    """A verified (or just issued) token's claims; times are epoch seconds."""

    jti: str
    """Unique token id (uuid4 hex): what revocation names."""
    sub: str
    """``uid:<uid>``."""
    role: str
    scopes: tuple[str, ...]
    """Globs over secret names (``broker.policy``)."""
    uid: int
    """The peer uid the token is bound to: it must equal the presenting connection's uid."""
    iat: float
    nbf: float
    exp: float
    kid: str
    """The signing key's id (from the header)."""


class TokenService:
    """Issues and verifies this sidecar instance's tokens. Thread-safe."""

    def __init__(
        self,
        keyring: KeyRing,
        *,
        issuer: str,
        audience: str,
        leeway: float = 5.0,
        max_ttl: float = 3600.0,
        now: Callable[[], float] = time.time,
        cache_size: int = 10_000,
    ) -> None:
        """``max_ttl`` is capped by ``keyring.max_token_ttl``: a token must never outlive the grace period of
        the key that signed it."""
        if not max_ttl > 0:
            raise ValueError("max_ttl must be positive")
        if leeway < 0:
            raise ValueError("leeway must not be negative")
        if cache_size < 1:
            raise ValueError("cache_size must be at least 1")
        self._keyring = keyring
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway
        self._max_ttl = min(max_ttl, keyring.max_token_ttl)
        self._now = now
        self._cache_size = cache_size
        self._cache: OrderedDict[str, Claims] = OrderedDict()
        self._lock = threading.Lock()
        self._revoked: dict[str, float] = {}  # jti -> exp
        self._revocations = 0

    def __repr__(self) -> str:
        return f"TokenService(issuer={self._issuer!r}, audience={self._audience!r})"

    @property
    def max_ttl(self) -> float:
        """The longest lifetime ``issue`` grants."""
        return self._max_ttl

    @property
    def keyring(self) -> KeyRing:
        return self._keyring

    # ----------------------------------------------------------------------------------------- issue

    def issue(self, *, uid: int, role: str, scopes: Sequence[str], ttl: float) -> tuple[str, Claims]:
        """Sign a token for ``uid`` in ``role`` with ``scopes``, valid for ``min(ttl, max_ttl)`` seconds.

        The caller has already decided the peer may use ``role`` (``broker.policy``); this only signs."""
        if isinstance(uid, bool) or not isinstance(uid, int) or uid < 0:
            raise ValueError("uid must be a non-negative int")
        if not ttl > 0:
            raise ValueError("ttl must be positive")
        kid, key = self._keyring.signing_key()
        now = self._now()
        claims = Claims(
            jti=uuid.uuid4().hex,
            sub=f"uid:{uid}",
            role=role,
            scopes=tuple(scopes),
            uid=uid,
            iat=now,
            nbf=now,
            exp=now + min(ttl, self._max_ttl),
            kid=kid,
        )
        payload: dict[str, Any] = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": claims.sub,
            "role": claims.role,
            "scopes": list(claims.scopes),
            "uid": claims.uid,
            "iat": claims.iat,
            "nbf": claims.nbf,
            "exp": claims.exp,
            "jti": claims.jti,
        }
        token = jwt.encode(payload, key, algorithm=ALGORITHM, headers={"kid": kid})
        return token, claims

    # ---------------------------------------------------------------------------------------- verify

    def verify(self, token: str, *, peer_uid: int) -> Claims:
        """The claims of a valid, unrevoked, current token presented by ``peer_uid``.

        Raises ``Unauthorized(reason)`` for an invalid token and ``Forbidden("uid_mismatch")`` for a valid
        token presented by another uid."""
        now = self._now()
        with self._lock:
            claims = self._cache.get(token)
            if claims is not None:
                self._cache.move_to_end(token)
        if claims is None:
            claims = self._verify_signed(token)
            self._check_live(claims, now)
            with self._lock:
                self._cache[token] = claims
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        else:
            # Order matters: the cache must never skip the checks that change over time.
            try:
                self._check_live(claims, now)
            except Unauthorized as exc:
                if exc.reason == "expired":
                    with self._lock:
                        self._cache.pop(token, None)
                raise
        if claims.uid != peer_uid:
            raise Forbidden("uid_mismatch", "token was issued to another uid")
        return claims

    def _check_live(self, claims: Claims, now: float) -> None:
        """The checks that depend on time or on revocation: run on every verify, cached or not."""
        if now >= claims.exp + self._leeway:
            raise Unauthorized("expired", "token has expired")
        if now + self._leeway < claims.nbf or now + self._leeway < claims.iat:
            raise Unauthorized("not_yet_valid", "token is not valid yet")
        if self._revoked and self.is_revoked(claims.jti):
            raise Unauthorized("revoked", "token has been revoked")

    def _verify_signed(self, token: str) -> Claims:
        """Algorithm, key, signature and claim checks: the expensive part, run once per token string."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            raise Unauthorized("malformed", "token is not a JWT")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise Unauthorized("malformed", "token is not a JWT") from None
        # Security: the algorithm comes from the allow-list, never from the token ("alg": "none", HS256
        # keyed with our public key, RS256... are all refused here and again by pyjwt below).
        if header.get("alg") != ALGORITHM:
            raise Unauthorized("bad_algorithm", "token algorithm is not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise Unauthorized("unknown_key", "token names no signing key")
        public = self._keyring.verification_key(kid)
        if public is None:
            raise Unauthorized("unknown_key", "token was signed by an unknown or retired key")
        try:
            payload = _PYJWT.decode(token, public, algorithms=[ALGORITHM])
        except jwt.InvalidSignatureError:
            raise Unauthorized("bad_signature", "token signature does not verify") from None
        except jwt.InvalidAlgorithmError:
            raise Unauthorized("bad_algorithm", "token algorithm is not allowed") from None
        except jwt.InvalidTokenError:
            raise Unauthorized("malformed", "token is not a JWT") from None
        return self._claims(payload, kid)

    def _claims(self, payload: Mapping[str, Any], kid: str) -> Claims:
        """Check the signed payload's claims (not the time-dependent ones) and build ``Claims``."""
        for name in REQUIRED_CLAIMS:
            if payload.get(name) is None:
                raise Unauthorized("missing_claim", f"token lacks the {name!r} claim")
        if payload["iss"] != self._issuer:
            raise Unauthorized("bad_issuer", "token was issued by someone else")
        if payload["aud"] != self._audience:  # one string, exactly ours: no lists, no prefixes
            raise Unauthorized("bad_audience", "token is meant for another audience")
        uid, scopes = payload["uid"], payload["scopes"]
        times = [payload["iat"], payload["nbf"], payload["exp"]]
        if (
            isinstance(uid, bool) or not isinstance(uid, int) or uid < 0
            or not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes)
            or not all(isinstance(payload[n], str) and payload[n] for n in ("sub", "role", "jti"))
            or not all(_is_time(t) for t in times)
        ):
            raise Unauthorized("malformed", "token claims have the wrong types")
        return Claims(
            jti=payload["jti"],
            sub=payload["sub"],
            role=payload["role"],
            scopes=tuple(scopes),
            uid=uid,
            iat=float(payload["iat"]),
            nbf=float(payload["nbf"]),
            exp=float(payload["exp"]),
            kid=kid,
        )

    # ------------------------------------------------------------------------------------ revocation

    def revoke(self, jti: str, exp: float) -> None:
        """Refuse the token ``jti`` from now on. Remembered until ``exp`` (plus leeway), when the token
        would be refused as expired anyway, so the list stays bounded by the tokens alive at once."""
        with self._lock:
            self._revoked[jti] = exp
            self._revocations += 1
            if self._revocations % 256 == 0:
                limit = self._now() - self._leeway
                for old in [j for j, e in self._revoked.items() if e <= limit]:
                    del self._revoked[old]

    def is_revoked(self, jti: str) -> bool:
        """Whether ``jti`` was revoked and its token could still be accepted otherwise."""
        exp = self._revoked.get(jti)
        if exp is None:
            return False
        if self._now() >= exp + self._leeway:
            with self._lock:
                self._revoked.pop(jti, None)
            return False
        return True


def _is_time(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
