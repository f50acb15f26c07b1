"""The one small interface every secrets backend implements, and the values that cross it.

A backend reads a reference and returns a value with its version and (for dynamic secrets) a lease;
it renews and revokes leases and reports its health. SDK exceptions are translated into the
project's ``BackendError`` family *inside* each backend module; nothing above this interface ever
sees an hvac, botocore or azure-core exception. Values never appear in ``repr``, logs or messages.
"""

from __future__ import annotations

import re
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from depthguard.errors import (
    BackendAuthError,
    BackendError,
    BackendUnavailable,
    ConfigError,
    LeaseExpired,
    SecretNotFound,
)

__all__ = [
    "BackendAuthError",
    "BackendError",
    "BackendUnavailable",
    "Health",
    "Lease",
    "LeaseExpired",
    "SecretBackend",
    "SecretNotFound",
    "SecretRef",
    "SecretValue",
]

_REF = re.compile(
    r"^(?P<backend>[A-Za-z][A-Za-z0-9_-]{0,63}):(?P<path>[^#@]+?)(?:#(?P<key>[^#@]+))?(?:@(?P<version>[^#@]+))?$"
)


@dataclass(frozen=True, slots=True)
class SecretRef:
    """``BACKEND:PATH[#KEY][@VERSION]`` (design.md), e.g. ``aws:prod/stripe#api_key@AWSPREVIOUS``."""

    backend: str
    """A name from the config's ``backends:`` (not the backend type)."""
    path: str
    key: str | None = None
    """Select one field of a JSON (or KV) secret."""
    version: str | None = None
    """A version id, a version number, or a stage label, as the backend understands it."""

    @classmethod
    def parse(cls, text: str) -> SecretRef:
        m = _REF.match(text.strip())
        if not m:
            expected = "BACKEND:PATH[#KEY][@VERSION]"
            raise ConfigError("", "ref", f"not a secret reference {text!r} (expected {expected})")
        return cls(m["backend"], m["path"], m["key"], m["version"])

    def __str__(self) -> str:
        out = f"{self.backend}:{self.path}"
        if self.key:
            out += f"#{self.key}"
        if self.version:
            out += f"@{self.version}"
        return out


@dataclass(frozen=True, slots=True)
class Lease:
    """A time-limited grant (Vault dynamic secrets, tokens). Times are wall-clock epoch seconds."""

    lease_id: str
    issued_at: float
    ttl: float
    """Seconds the lease was granted for at ``issued_at``."""
    renewable: bool = True
    max_expires_at: float | None = None
    """When the backend will refuse further renewals (its max TTL), if known."""

    @property
    def expires_at(self) -> float:
        return self.issued_at + self.ttl

    def remaining(self, now: float | None = None) -> float:
        return self.expires_at - (time.time() if now is None else now)


@dataclass(frozen=True, slots=True)
class SecretValue:
    """What a read returns. ``value`` is bytes so callers can avoid copies and never log text by
    accident; ``repr`` shows only a length."""

    value: bytes = field(repr=False)
    version: str | None = None
    lease: Lease | None = None
    fetched_at: float = field(default_factory=time.time)
    origin: bytes | None = field(default=None, repr=False, compare=False)
    """Set by ``SecretCache`` to a token unique to the fetch this value was decrypted from, so a
    caller can do per-value work (an audit fingerprint) once per fetch, not once per read: equal
    ``origin`` means equal ``value``. Backends leave it ``None``."""

    @property
    def expires_at(self) -> float | None:
        return self.lease.expires_at if self.lease else None

    def __repr__(self) -> str:
        return f"SecretValue(<{len(self.value)} bytes>, version={self.version!r}, lease={self.lease!r})"


@dataclass(frozen=True, slots=True)
class Health:
    ok: bool
    detail: str = ""


class SecretBackend(ABC):
    """One configured backend instance. Implementations must be safe to call from several threads."""

    name: str

    @abstractmethod
    def read(self, ref: SecretRef) -> SecretValue:
        """Fetch the value (raise ``SecretNotFound``, ``BackendAuthError`` or ``BackendUnavailable``)."""

    def renew(self, lease: Lease, increment: float | None = None) -> Lease:
        """Extend a lease; raise ``LeaseExpired`` when it cannot be extended any more."""
        raise LeaseExpired(f"{self.name}: lease {lease.lease_id!r} is not renewable")

    def revoke(self, lease: Lease) -> None:  # noqa: B027 - optional hook: static secrets have no lease
        """Give a lease back early (on shutdown). Static secrets have nothing to revoke."""

    @abstractmethod
    def health(self) -> Health:
        """Whether the backend answers and our credentials are accepted."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and stop background renewals."""
