"""HashiCorp Vault backend (via hvac): KV v1/v2 and leased dynamic secrets, token upkeep, health.

References (design.md): ``vault:secret/data/app#password`` (KV v2; ``secret/app`` works too),
``vault:secret/data/app#password@3`` (a pinned KV v2 version), ``vault:kv1/app#key`` (KV v1) and
``vault:database/creds/app`` (dynamic: any non-KV path, read with a lease). Without ``#key`` the
value is the JSON of the secret's data.

hvac is untyped: it is handled as ``Any`` at this boundary and every hvac, requests or socket error
is translated into the ``BackendError`` family here (``_map_errors``). This module never logs or puts
into a message a secret value or a token: messages name the backend and the reference only.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions as hvac_exc
import requests

from broker.backends.interface import (
    BackendAuthError,
    BackendError,
    BackendUnavailable,
    Health,
    Lease,
    LeaseExpired,
    SecretBackend,
    SecretNotFound,
    SecretRef,
    SecretValue,
)
from depthguard.errors import ConfigError

__all__ = ["VaultAuth", "VaultBackend"]

K8S_JWT_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token"
_AUTH_METHODS = ("token", "approle", "kubernetes", "jwt", "oidc")


@dataclass(frozen=True, slots=True)
class VaultAuth:
    """How to obtain a Vault token (the config's ``auth:`` block)."""

    method: str = "token"
    """One of ``token``, ``approle``, ``kubernetes``, ``jwt`` (``oidc`` is an alias: a role + a JWT)."""
    token: str | None = None
    """``token`` method; falls back to ``token_file`` then ``VAULT_TOKEN``."""
    token_file: str | None = None
    role: str | None = None
    """Kubernetes / JWT role name."""
    role_id: str | None = None
    secret_id: str | None = None
    secret_id_file: str | None = None
    jwt: str | None = None
    jwt_file: str | None = None
    """Kubernetes: the service-account token file (re-read on every login, it is rotated)."""
    mount: str | None = None
    """Where the auth method is mounted; defaults to the method's name."""

    @classmethod
    def from_config(cls, options: Mapping[str, Any]) -> VaultAuth:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError("", "auth", f"unknown key(s) {', '.join(unknown)}")
        values: dict[str, Any] = {k: (None if v is None else str(v)) for k, v in options.items()}
        auth = cls(**values)
        if auth.method not in _AUTH_METHODS:
            raise ConfigError("", "auth.method", f"must be one of {', '.join(_AUTH_METHODS)}")
        if auth.method == "approle" and not auth.role_id:
            raise ConfigError("", "auth.role_id", "required for approle")
        if auth.method in ("kubernetes", "jwt", "oidc") and not auth.role:
            raise ConfigError("", "auth.role", f"required for {auth.method}")
        return auth


@contextlib.contextmanager
def _map_errors(where: str) -> Iterator[None]:
    """Translate hvac/requests errors into ours. ``where`` names the backend and reference; hvac's own
    message is deliberately dropped (it can echo request URLs and server text, never needed here)."""
    try:
        yield
    except hvac_exc.InvalidPath as exc:
        raise SecretNotFound(f"{where}: not found") from exc
    except (hvac_exc.Forbidden, hvac_exc.Unauthorized) as exc:
        raise BackendAuthError(f"{where}: Vault refused our credentials") from exc
    except (hvac_exc.VaultDown, hvac_exc.InternalServerError, hvac_exc.BadGateway,
            hvac_exc.VaultNotInitialized, hvac_exc.RateLimitExceeded) as exc:
        raise BackendUnavailable(f"{where}: Vault is unavailable ({type(exc).__name__})") from exc
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise BackendUnavailable(f"{where}: cannot reach Vault ({type(exc).__name__})") from exc
    except hvac_exc.VaultError as exc:
        raise BackendError(f"{where}: Vault rejected the request ({type(exc).__name__})") from exc


@dataclass(frozen=True, slots=True)
class _Mount:
    path: str
    """Mount path without the trailing slash."""
    kv_version: int | None
    """1 or 2 for KV mounts; ``None`` for anything else (dynamic engines)."""


class VaultBackend(SecretBackend):
    """One Vault server (and namespace) with one identity. Safe to share between threads: token
    upkeep is serialised by a lock; reads share hvac's connection pool."""

    def __init__(
        self,
        name: str,
        address: str,
        auth: VaultAuth | None = None,
        *,
        namespace: str | None = None,
        kv_version: int | None = None,
        kv_mount: str | None = None,
        timeout: float = 10.0,
        verify: bool | str = True,
        renew_fraction: float = 1 / 3,
        clock: Callable[[], float] = time.time,
        client: Any = None,
    ) -> None:
        """``kv_version`` (1 or 2) skips mount detection; ``kv_mount`` then names the mount (default:
        the first path segment). The token is renewed once less than ``renew_fraction`` of its TTL
        remains. ``clock`` exists so tests can share the test server's clock."""
        if kv_version not in (None, 1, 2):
            raise ConfigError("", f"backends.{name}.kv_version", "must be 1 or 2")
        self.name = name
        self.auth = auth or VaultAuth()
        self.namespace = namespace
        self.kv_version = kv_version
        self.kv_mount = kv_mount.strip("/") if kv_mount else None
        self.renew_fraction = renew_fraction
        self._clock = clock
        self._lock = threading.RLock()
        self._mounts: dict[str, _Mount] = {}
        self._client: Any = client or hvac.Client(url=address, token=None, namespace=namespace,
                                                  timeout=timeout, verify=verify)
        self._client.token = None  # never pick up VAULT_TOKEN / ~/.vault-token implicitly
        self._token_expires_at: float | None = None
        """``None`` with a token set: a token that never expires (e.g. root)."""
        self._token_ttl = 0.0
        self._token_max_expires_at: float | None = None
        self._token_renewable = False
        self._have_token = False

    @classmethod
    def from_config(cls, name: str, options: Mapping[str, Any], **kwargs: Any) -> VaultBackend:
        """Build from the config's ``backends: {NAME: {type: vault, address, auth, namespace, ...}}``."""
        opts = {k: v for k, v in options.items() if k != "type"}
        known = {"address", "auth", "namespace", "kv_version", "kv_mount", "timeout", "verify"}
        unknown = sorted(set(opts) - known)
        if unknown:
            raise ConfigError("", f"backends.{name}", f"unknown key(s) {', '.join(unknown)}")
        if not opts.get("address"):
            raise ConfigError("", f"backends.{name}.address", "required")
        auth = VaultAuth.from_config(opts.pop("auth", None) or {})
        kv = opts.pop("kv_version", None)
        return cls(name, str(opts.pop("address")), auth, kv_version=None if kv is None else int(kv),
                   **opts, **kwargs)

    # ----- token upkeep --------------------------------------------------------------------------
    def _read_file(self, path: str, what: str) -> str:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise BackendAuthError(f"{self.name}: cannot read {what} file {path!r}") from exc

    def _login(self) -> None:
        """Obtain a fresh token with the configured method (the JWT and secret-id files are re-read,
        because Kubernetes rotates projected service-account tokens)."""
        a = self.auth
        where = f"{self.name}: {a.method} login"
        if a.method == "token":
            token = a.token or (self._read_file(a.token_file, "token") if a.token_file else None)
            token = token or os.environ.get("VAULT_TOKEN")
            if not token:
                raise BackendAuthError(f"{self.name}: no Vault token configured")
            self._client.token = token
            self._load_token_info()
            return
        try:
            with _map_errors(where):
                if a.method == "approle":
                    secret_id = a.secret_id or (
                        self._read_file(a.secret_id_file, "secret_id") if a.secret_id_file else None)
                    resp = self._client.auth.approle.login(role_id=a.role_id, secret_id=secret_id,
                                                           mount_point=a.mount or "approle")
                elif a.method == "kubernetes":
                    jwt = a.jwt or self._read_file(a.jwt_file or K8S_JWT_FILE, "service-account token")
                    resp = self._client.auth.kubernetes.login(role=a.role, jwt=jwt,
                                                              mount_point=a.mount or "kubernetes")
                else:  # jwt / oidc: a role and a JWT issued by an identity provider
                    jwt = a.jwt or (self._read_file(a.jwt_file, "JWT") if a.jwt_file else "")
                    resp = self._client.auth.jwt.jwt_login(role=a.role, jwt=jwt, path=a.mount or a.method)
        except BackendError as exc:
            if isinstance(exc, BackendUnavailable):
                raise
            raise BackendAuthError(f"{where} refused") from exc
        self._set_token_info(resp["auth"])

    def _set_token_info(self, auth: Mapping[str, Any]) -> None:
        now = self._clock()
        ttl = float(auth.get("lease_duration") or 0)
        self._token_ttl = ttl
        self._token_expires_at = now + ttl if ttl else None
        self._token_renewable = bool(auth.get("renewable"))
        self._have_token = True

    def _load_token_info(self) -> None:
        """For a given token, learn its TTL and max TTL from ``lookup-self``."""
        with _map_errors(f"{self.name}: token lookup"):
            data = self._client.auth.token.lookup_self()["data"]
        now = self._clock()
        ttl = float(data.get("ttl") or 0)
        self._token_ttl = float(data.get("creation_ttl") or ttl)
        self._token_expires_at = now + ttl if ttl else None
        self._token_renewable = bool(data.get("renewable"))
        max_ttl = float(data.get("explicit_max_ttl") or 0)
        created = data.get("creation_time")
        self._token_max_expires_at = float(created) + max_ttl if max_ttl and created else None
        self._have_token = True

    def ensure_token(self) -> None:
        """Make sure the client holds a token good for a while: log in if there is none or it has
        expired; renew it (``renew-self``) once less than ``renew_fraction`` of its TTL remains; log in
        again when renewal cannot extend it (max TTL reached). Leases are not touched: they belong to
        Vault, and renewing them with the new token works the same."""
        with self._lock:
            if not self._have_token:
                self._token_max_expires_at = None
                self._login()
                return
            if self._token_expires_at is None:
                return
            now = self._clock()
            remaining = self._token_expires_at - now
            if remaining > self._token_ttl * self.renew_fraction:
                return
            if remaining > 0 and self._token_renewable and self._renew_token(now):
                return
            if self.auth.method == "token":
                if remaining <= 0:
                    raise BackendAuthError(f"{self.name}: the Vault token has expired")
                return  # a static token: nothing better to do than use what is left of it
            self._have_token = False
            self._token_max_expires_at = None
            self._login()

    def _renew_token(self, now: float) -> bool:
        """``renew-self``; true when it bought more time than the token had."""
        try:
            with _map_errors(f"{self.name}: token renewal"):
                resp = self._client.auth.token.renew_self(increment=int(self._token_ttl) or None)
        except BackendError as exc:
            if isinstance(exc, BackendUnavailable):
                raise
            return False
        old = self._token_expires_at or now
        granted = float(resp["auth"].get("lease_duration") or 0)
        if now + granted <= old + 1.0:  # Vault capped it at the max TTL: renewing is no longer useful
            self._token_expires_at = now + granted
            return False
        self._token_expires_at = now + granted
        return True

    # ----- reads ---------------------------------------------------------------------------------
    def _mount_for(self, path: str) -> _Mount:
        if self.kv_version is not None:
            return _Mount(self.kv_mount or path.split("/", 1)[0], self.kv_version)
        with self._lock:
            for prefix, cached in self._mounts.items():
                if path == prefix or path.startswith(prefix + "/"):
                    return cached
        try:
            with _map_errors(f"{self.name}: mount lookup"):
                data = self._client.adapter.get(f"/v1/sys/internal/ui/mounts/{path}")["data"]
        except BackendError as exc:
            if isinstance(exc, BackendUnavailable):
                raise
            # Not allowed to look (a narrow policy) or unknown: read the path as it is; a
            # "<mount>/data/..." shape is the only hint that it is KV v2.
            parts = path.split("/")
            return _Mount(parts[0], 2 if len(parts) > 2 and parts[1] == "data" else None)
        mount_path = str(data.get("path") or path.split("/", 1)[0]).strip("/")
        version: int | None = None
        if data.get("type") in ("kv", "generic"):
            version = int((data.get("options") or {}).get("version") or 1)
        found = _Mount(mount_path, version)
        with self._lock:
            self._mounts[mount_path] = found
        return found

    def read(self, ref: SecretRef) -> SecretValue:
        """Read a KV secret or issue a dynamic one. Raises ``SecretNotFound`` (also for a missing
        ``#key`` or an unusable ``@version``), ``BackendAuthError`` or ``BackendUnavailable``."""
        where = f"{self.name}: {ref}"
        path = ref.path.strip("/")
        with _map_errors(where):
            self.ensure_token()
            mount = self._mount_for(path)
            rest = path[len(mount.path):].strip("/")
            now = self._clock()
            if mount.kv_version == 2:
                if rest.startswith("data/"):
                    rest = rest[len("data/"):]
                version: int | None = None
                if ref.version is not None:
                    try:
                        version = int(ref.version)
                    except ValueError:
                        raise SecretNotFound(f"{where}: KV v2 versions are numbers") from None
                resp = self._client.secrets.kv.v2.read_secret_version(
                    path=rest, version=version, mount_point=mount.path, raise_on_deleted_version=True)
                body = resp["data"]
                data = body.get("data") or {}
                meta = body.get("metadata") or {}
                got = meta.get("version")
                return SecretValue(self._select(data, ref, where), None if got is None else str(got),
                                   fetched_at=now)
            if ref.version is not None:
                raise SecretNotFound(f"{where}: only KV v2 secrets have versions")
            resp = self._client.read(path)
            if resp is None:  # hvac's read() turns 404 into None
                raise SecretNotFound(f"{where}: not found")
            data = resp.get("data") or {}
            lease_id = str(resp.get("lease_id") or "")
            lease = None
            if lease_id:
                lease = Lease(lease_id, now, float(resp.get("lease_duration") or 0),
                              bool(resp.get("renewable")))
            return SecretValue(self._select(data, ref, where), None, lease, fetched_at=now)

    @staticmethod
    def _select(data: Mapping[str, Any], ref: SecretRef, where: str) -> bytes:
        if ref.key is None:
            return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
        if ref.key not in data:
            raise SecretNotFound(f"{where}: no key {ref.key!r}")
        value = data[ref.key]
        return value.encode() if isinstance(value, str) else json.dumps(value).encode()

    # ----- leases --------------------------------------------------------------------------------
    def renew(self, lease: Lease, increment: float | None = None) -> Lease:
        """``sys/leases/renew``. Raises ``LeaseExpired`` when Vault refuses (expired, revoked, not
        renewable) or when the grant no longer extends the lease: its max TTL has been reached, so
        the caller must read a fresh secret instead."""
        where = f"{self.name}: lease {lease.lease_id!r}"
        if not lease.renewable:
            raise LeaseExpired(f"{where} is not renewable")
        wanted = increment if increment is not None else lease.ttl
        try:
            with _map_errors(where):
                self.ensure_token()
                resp = self._client.sys.renew_lease(lease_id=lease.lease_id, increment=int(wanted))
        except BackendError as exc:
            if isinstance(exc, BackendUnavailable | BackendAuthError):
                raise
            raise LeaseExpired(f"{where} cannot be renewed") from exc
        now = self._clock()
        granted = float(resp.get("lease_duration") or 0)
        max_expires_at = lease.max_expires_at
        if granted < wanted:  # capped: now we know where the max TTL ends
            max_expires_at = now + granted
            if granted <= 0 or now + granted <= lease.expires_at + 1.0:
                raise LeaseExpired(f"{where} reached its max TTL")
        return Lease(str(resp.get("lease_id") or lease.lease_id), now, granted,
                     bool(resp.get("renewable", True)), max_expires_at)

    def revoke(self, lease: Lease) -> None:
        """``sys/leases/revoke``: give dynamic credentials back early (on shutdown)."""
        with _map_errors(f"{self.name}: lease {lease.lease_id!r}"):
            self.ensure_token()
            self._client.sys.revoke_lease(lease_id=lease.lease_id)

    # ----- health --------------------------------------------------------------------------------
    def health(self) -> Health:
        """``sys/health`` (initialised, unsealed, active or standby) and then our token is accepted."""
        try:
            with _map_errors(f"{self.name}: health"):
                resp = self._client.sys.read_health_status(method="GET")
        except BackendError:
            return Health(False, "unreachable")
        status = 200 if isinstance(resp, dict) else int(getattr(resp, "status_code", 0))
        if status not in (200, 429, 473):  # 429: standby, 473: performance standby (both serve reads)
            return Health(False, f"sys/health answered {status}")
        try:
            with _map_errors(f"{self.name}: health"):
                self.ensure_token()
                self._client.auth.token.lookup_self()
        except BackendAuthError:
            return Health(False, "credentials refused")
        except BackendError:
            return Health(False, "unreachable")
        return Health(True, "ok")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.adapter.close()
