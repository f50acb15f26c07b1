"""The local encrypted store: a directory of AES-256-GCM records, one file per secret name.

Used by ``depthguard store`` and by ``depthguard sidecar run --dev``, and as the ``local`` backend for
single-host deployments. It exists so that secrets at rest on one machine are never plain text and
cannot be tampered with or swapped between names without detection.

Record file ``DIR/NAME.dgs`` (binary)::

    magic  b"DGLS"           4 bytes   identifies the file
    format 1 byte            format version; see ``_UPGRADES`` for the upgrade path
    nonce  12 bytes          random per write (never reused with the same key)
    ciphertext + 16-byte GCM tag of a JSON payload:
        {"name": NAME, "latest": N,
         "versions": [{"version": N, "created_at": EPOCH, "value": BASE64}, ...]}

The associated data is ``magic + format + NAME``: a record copied onto another name's file, or whose
format byte was edited, fails authentication exactly like a wrong key or a flipped ciphertext bit.

Versions: every ``put`` gets the next integer of a per-name counter kept inside the record. The last
``max_versions`` (default 10) values are kept so ``@VERSION`` can pin one of them; pinning a version
that was pruned raises ``SecretNotFound`` saying so. ``rm`` deletes the whole record, counter included:
a later ``put`` of the same name starts again at version 1.

Key: 32 bytes, from a key file (mode 0600 or stricter, raw 32 bytes or base64 text) or the
``DEPTHGUARD_STORE_KEY`` environment variable (base64); for development ``resolve_key`` can create a
0600 key file inside the store directory (``DIR/.key``) on first use and reports that it did.

This module never logs, and never puts a value (or anything derived from one) in an exception
message or a ``repr``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import os
import re
import stat
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broker.backends.interface import (
    BackendAuthError,
    BackendError,
    BackendUnavailable,
    Health,
    SecretBackend,
    SecretNotFound,
    SecretRef,
    SecretValue,
)
from depthguard.errors import ConfigError
from depthguard.fsutil import fsync_dir

__all__ = [
    "ENV_KEY",
    "FORMAT_VERSION",
    "KEY_FILE_NAME",
    "InvalidSecretName",
    "LocalBackend",
    "LocalStore",
    "RecordAuthError",
    "RecordFormatError",
    "StoreEntry",
    "StoreError",
    "StoreKey",
    "StoreKeyError",
    "resolve_key",
    "validate_name",
]

ENV_KEY = "DEPTHGUARD_STORE_KEY"
KEY_FILE_NAME = ".key"
"""The development key file inside the store directory. Names cannot start with ``.``, so it never
collides with a record."""
MAGIC = b"DGLS"
FORMAT_VERSION = 1
RECORD_SUFFIX = ".dgs"
KEY_BYTES = 32
NONCE_BYTES = 12
_HEADER = struct.Struct(">4sB")
_TAG_BYTES = 16
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,199}$")
_LOCK_FILE = ".lock"


class StoreError(BackendError):
    """Base of the local store's own failures."""


class RecordAuthError(StoreError, BackendAuthError):
    """A record failed authentication: wrong key, tampered bytes, or a record moved to another name.

    Fail closed: nothing of the record is returned, and the message names only the secret and file."""


class RecordFormatError(StoreError):
    """A record file is not a store record, is truncated, or has a format this version cannot read."""


class InvalidSecretName(StoreError, ValueError):
    """A name that could escape the store directory or collide with its bookkeeping files."""


class StoreKeyError(ConfigError):
    """The store key is missing, malformed, or its file is readable by other users (a usage error)."""


# Upgrade hook (detect-secrets' ``core/upgrades`` idea): ``_UPGRADES[n]`` turns a decrypted payload of
# format ``n`` into format ``n + 1``. Reading applies the chain up to ``FORMAT_VERSION``; the next
# ``put`` rewrites the record in the current format. Format 1 is the first, so the table is empty.
Payload = dict[str, Any]
_UPGRADES: dict[int, Callable[[Payload], Payload]] = {}


def upgrade_payload(format_version: int, payload: Payload) -> Payload:
    """Bring a decrypted payload from ``format_version`` up to ``FORMAT_VERSION``."""
    if format_version > FORMAT_VERSION:
        raise RecordFormatError(
            f"record format {format_version} is newer than this depthguard understands ({FORMAT_VERSION})"
        )
    for n in range(format_version, FORMAT_VERSION):
        step = _UPGRADES.get(n)
        if step is None:
            raise RecordFormatError(f"no upgrade from record format {n} to {n + 1}")
        payload = step(payload)
    return payload


def validate_name(name: str) -> str:
    """Refuse names that are not a single safe file name (no separators, no ``..``, no leading dot)."""
    if not _NAME.match(name) or ".." in name:
        shown = name if len(name) <= 80 else name[:80] + "…"
        raise InvalidSecretName(
            f"invalid secret name {shown!r}: use letters, digits, '.', '_' and '-' "
            "(no path separators, no '..', not starting with '.', at most 200 characters)"
        )
    return name


# --------------------------------------------------------------------------------------------- key


@dataclass(frozen=True, slots=True)
class StoreKey:
    """A resolved store key and where it came from (so the CLI can warn about a dev key)."""

    key: bytes = field(repr=False)
    origin: str
    """``"key-file:PATH"``, ``"env:DEPTHGUARD_STORE_KEY"`` or ``"store-key-file:PATH"``."""
    created: bool = False
    """True when this call created the development key file inside the store directory."""


def _decode_key(data: bytes, where: str, file: str) -> bytes:
    if len(data) == KEY_BYTES:
        return data
    try:
        key = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise StoreKeyError(file, where, f"not {KEY_BYTES} raw bytes and not valid base64") from None
    if len(key) != KEY_BYTES:
        raise StoreKeyError(file, where, f"key must be {KEY_BYTES} bytes (AES-256), got {len(key)}")
    return key


def _read_key_file(path: Path) -> bytes:
    """Read a key file, refusing one that group or others could read or write."""
    try:
        st = path.stat()  # follows symlinks on purpose: Kubernetes secret mounts are symlinks
    except FileNotFoundError:
        raise StoreKeyError(str(path), "key_file", "no such key file") from None
    except OSError as exc:
        raise StoreKeyError(str(path), "key_file", f"cannot read key file: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise StoreKeyError(str(path), "key_file", "not a regular file")
    if st.st_mode & 0o077:
        # Security: a key others can read protects nothing. Mirrors ssh's refusal of loose key files.
        raise StoreKeyError(
            str(path), "key_file",
            f"key file mode is {stat.S_IMODE(st.st_mode):04o}; it must be 0600 or stricter "
            f"(chmod 600 {path})",
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StoreKeyError(str(path), "key_file", f"cannot read key file: {exc.strerror}") from None
    return _decode_key(data, "key_file", str(path))


def _ensure_dir(path: Path) -> None:
    """Create the store directory 0700 (and its parents with the default umask) if missing."""
    if not path.exists():
        path.mkdir(parents=True, mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask


def resolve_key(
    store_dir: Path,
    key_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    create: bool = False,
) -> StoreKey:
    """Find the key: ``key_file``, else ``$DEPTHGUARD_STORE_KEY``, else ``store_dir/.key``.

    With ``create=True`` a missing ``store_dir/.key`` is generated (0600) and ``created`` is set, so the
    caller can warn that a key stored next to the data is for development only.
    """
    env = os.environ if environ is None else environ
    if key_file is not None:
        return StoreKey(_read_key_file(key_file), f"key-file:{key_file}")
    if env.get(ENV_KEY):
        return StoreKey(_decode_key(env[ENV_KEY].encode(), ENV_KEY, "environment"), f"env:{ENV_KEY}")
    dev = store_dir / KEY_FILE_NAME
    if dev.exists() or not create:
        if not dev.exists():
            raise StoreKeyError(
                str(store_dir), "key",
                f"no store key: pass --key-file, set {ENV_KEY}, or create the store with 'put' first",
            )
        return StoreKey(_read_key_file(dev), f"store-key-file:{dev}")
    _ensure_dir(store_dir)
    key = AESGCM.generate_key(bit_length=256)
    try:
        fd = os.open(dev, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # a concurrent first use won the race: use its key
        return StoreKey(_read_key_file(dev), f"store-key-file:{dev}")
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, base64.b64encode(key) + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(store_dir)
    return StoreKey(key, f"store-key-file:{dev}", created=True)


# ------------------------------------------------------------------------------------------- store


@dataclass(frozen=True, slots=True)
class StoreEntry:
    """What ``LocalStore.entries`` lists: never a value."""

    name: str
    version: int
    """The latest version."""
    kept: tuple[int, ...]
    """Versions still readable with ``@VERSION``, oldest first."""


class LocalStore:
    """A directory of encrypted records. Thread-safe; ``put``/``delete`` also take an ``flock`` so two
    processes writing the same store do not lose each other's versions."""

    def __init__(self, path: Path, key: bytes, *, max_versions: int = 10) -> None:
        if len(key) != KEY_BYTES:
            raise StoreKeyError(str(path), "key", f"key must be {KEY_BYTES} bytes (AES-256)")
        if max_versions < 1:
            raise ValueError("max_versions must be at least 1")
        self.path = Path(path)
        self.max_versions = max_versions
        self._aead = AESGCM(key)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.path)!r})"

    # -- record encoding ---------------------------------------------------------------------------

    def _file(self, name: str) -> Path:
        return self.path / (validate_name(name) + RECORD_SUFFIX)

    def _seal(self, name: str, payload: Payload) -> bytes:
        head = _HEADER.pack(MAGIC, FORMAT_VERSION)
        nonce = os.urandom(NONCE_BYTES)
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        return head + nonce + self._aead.encrypt(nonce, body, head + name.encode())

    def _open(self, name: str, blob: bytes, file: Path) -> Payload:
        if len(blob) < _HEADER.size + NONCE_BYTES + _TAG_BYTES:
            raise RecordFormatError(f"{file}: truncated record for {name!r}")
        head = blob[: _HEADER.size]
        magic, fmt = _HEADER.unpack(head)
        if magic != MAGIC:
            raise RecordFormatError(f"{file}: not a depthguard store record")
        nonce = blob[_HEADER.size : _HEADER.size + NONCE_BYTES]
        try:
            body = self._aead.decrypt(nonce, blob[_HEADER.size + NONCE_BYTES :], head + name.encode())
        except InvalidTag as exc:
            raise RecordAuthError(
                f"record for {name!r} ({file}) failed authentication: wrong key, tampered record, "
                "or a record copied from another name"
            ) from exc
        try:
            payload: Payload = json.loads(body)
        except ValueError:
            # from None: the decode error would carry the plaintext in its ``doc`` attribute.
            raise RecordFormatError(f"{file}: authenticated payload for {name!r} is not JSON") from None
        payload = upgrade_payload(fmt, payload)
        if payload.get("name") != name:  # belt and braces: AD already binds the name
            raise RecordAuthError(f"record for {name!r} ({file}) belongs to another name")
        return payload

    def _load(self, name: str) -> Payload | None:
        file = self._file(name)
        try:
            blob = file.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise BackendUnavailable(f"local store: cannot read {file}: {exc.strerror}") from exc
        return self._open(name, blob, file)

    def _write(self, file: Path, data: bytes) -> None:
        """Atomic replace: temp file in the same directory, fsync, rename, fsync the directory."""
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".tmp-", suffix=RECORD_SUFFIX)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, file)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        fsync_dir(self.path)

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        with self._lock:
            fd = os.open(self.path / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing releases the flock

    # -- public API ---------------------------------------------------------------------------------

    def put(self, name: str, value: bytes) -> int:
        """Store ``value`` as the next version of ``name`` and return that version number.

        An existing record that fails authentication is never overwritten (it raises instead), so a
        wrong key cannot silently destroy the history.
        """
        file = self._file(name)
        _ensure_dir(self.path)
        with self._exclusive():
            old = self._load(name)
            latest = int(old["latest"]) + 1 if old else 1
            versions: list[dict[str, Any]] = list(old["versions"]) if old else []
            versions.append(
                {"version": latest, "created_at": time.time(), "value": base64.b64encode(value).decode()}
            )
            payload = {"name": name, "latest": latest, "versions": versions[-self.max_versions :]}
            self._write(file, self._seal(name, payload))
        return latest

    def get(self, name: str, version: int | None = None) -> SecretValue:
        """The latest value of ``name`` or the pinned ``version`` (``SecretNotFound`` if not kept)."""
        payload = self._load(name)
        if payload is None:
            raise SecretNotFound(f"local store: no secret named {name!r}")
        versions = payload["versions"]
        want = int(payload["latest"]) if version is None else version
        for v in versions:
            if int(v["version"]) == want:
                return SecretValue(
                    base64.b64decode(v["value"]), version=str(want), fetched_at=time.time()
                )
        kept = [int(v["version"]) for v in versions]
        if want < min(kept) and want >= 1:
            raise SecretNotFound(
                f"local store: version {want} of {name!r} is no longer kept "
                f"(the store keeps the last {self.max_versions}; kept: {kept[0]}..{kept[-1]})"
            )
        raise SecretNotFound(f"local store: {name!r} has no version {want} (latest is {payload['latest']})")

    def delete(self, name: str) -> None:
        """Remove ``name`` and all its versions (the version counter starts again at 1)."""
        file = self._file(name)
        if not self.path.is_dir():
            raise SecretNotFound(f"local store: no secret named {name!r}")
        with self._exclusive():
            try:
                file.unlink()
            except FileNotFoundError:
                raise SecretNotFound(f"local store: no secret named {name!r}") from None
            fsync_dir(self.path)

    def names(self) -> list[str]:
        """Record names, sorted, without opening them (no key check)."""
        if not self.path.is_dir():
            return []
        out = []
        for p in self.path.iterdir():
            stem = p.name[: -len(RECORD_SUFFIX)]
            if p.name.endswith(RECORD_SUFFIX) and _NAME.match(stem) and ".." not in stem:
                out.append(stem)
        return sorted(out)

    def entries(self) -> list[StoreEntry]:
        """Every secret with its latest and kept versions. Each record is authenticated, so a wrong
        key or a tampered record fails here too rather than being listed as if fine."""
        out = []
        for name in self.names():
            payload = self._load(name)
            if payload is None:  # removed between listing and reading
                continue
            kept = tuple(int(v["version"]) for v in payload["versions"])
            out.append(StoreEntry(name, int(payload["latest"]), kept))
        return out


# ----------------------------------------------------------------------------------------- backend


def _select_field(value: bytes, key: str, name: str) -> bytes:
    """``#key``: one field of a JSON object. Strings come back as UTF-8, anything else as compact JSON.
    The error is raised outside the ``except`` so the decode error, which carries the value in its
    attributes, is never chained onto it."""
    try:
        doc = json.loads(value.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        doc = None
    if not isinstance(doc, dict):
        raise SecretNotFound(f"local store: {name!r} is not a JSON object, so '#{key}' selects nothing")
    if key not in doc:
        raise SecretNotFound(f"local store: {name!r} has no field {key!r}")
    field_value = doc[key]
    if isinstance(field_value, str):
        return field_value.encode("utf-8")
    return json.dumps(field_value, separators=(",", ":")).encode("utf-8")


class LocalBackend(SecretBackend):
    """``local:NAME[#KEY][@VERSION]`` served from a ``LocalStore``. Static secrets: no leases."""

    def __init__(self, name: str, store: LocalStore) -> None:
        self.name = name
        self.store = store

    @classmethod
    def open(
        cls,
        name: str,
        path: Path,
        key_file: Path | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        create_key: bool = False,
        max_versions: int = 10,
    ) -> LocalBackend:
        """Build from config (``{type: local, path, key_file}``); key rules as ``resolve_key``."""
        key = resolve_key(Path(path), key_file, environ, create=create_key)
        return cls(name, LocalStore(Path(path), key.key, max_versions=max_versions))

    def __repr__(self) -> str:
        return f"LocalBackend({self.name!r}, {str(self.store.path)!r})"

    def read(self, ref: SecretRef) -> SecretValue:
        try:
            validate_name(ref.path)
        except InvalidSecretName as exc:
            raise SecretNotFound(f"{self.name}: {exc}") from exc
        version: int | None = None
        if ref.version is not None:
            if not ref.version.isdigit() or int(ref.version) < 1:
                raise SecretNotFound(
                    f"{self.name}: local versions are positive integers, not {ref.version!r}"
                )
            version = int(ref.version)
        got = self.store.get(ref.path, version)
        if ref.key is None:
            return got
        return SecretValue(_select_field(got.value, ref.key, ref.path), version=got.version,
                           fetched_at=got.fetched_at)

    def health(self) -> Health:
        """Healthy when the directory is readable and the key opens a record (if there is one)."""
        if not self.store.path.is_dir():
            return Health(False, f"store directory {self.store.path} does not exist")
        try:
            names = self.store.names()
            if names:
                self.store.get(names[0])
        except RecordAuthError:
            return Health(False, "the configured key does not open the store's records")
        except BackendError as exc:
            return Health(False, str(exc))
        except OSError as exc:
            return Health(False, f"cannot read store directory: {exc.strerror}")
        return Health(True, f"{len(names)} secrets")
