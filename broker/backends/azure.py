"""Azure Key Vault backend: reads ``azure:NAME[#KEY][@VERSION]`` through the official ``SecretClient``.

Why the SDK and not raw HTTP: Key Vault authentication is a challenge protocol (the vault names the
tenant and resource in a 401) plus Entra ID token acquisition that differs per platform (workload
identity in AKS, managed identity on VMs, client secret/certificate in CI). ``DefaultAzureCredential``
covers all of these from the environment, so the sidecar carries no Azure secret of its own in
config; an explicit credential can be injected instead (tests, custom chains).

Contract: every azure-core / azure-identity exception is translated here into the project's
``BackendError`` family (chained with ``from``); messages name the reference and the HTTP status or
service error code, never a value. This module never logs values.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.keyvault.secrets import SecretClient

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

__all__ = ["AzureKeyVaultBackend"]

_NAME = re.compile(r"^[0-9A-Za-z-]{1,127}$")
"""Key Vault object names: 1-127 alphanumerics and dashes (checked before any request is made)."""
_VERSION = re.compile(r"^[0-9A-Za-z]{1,64}$")

_OPTIONS = frozenset(
    {
        "type",
        "vault_url",
        "connection_verify",
        "ca_bundle",
        "verify_challenge_resource",
        "client_id",
        "connect_timeout",
        "read_timeout",
        "retries",
        "health_probe",
    }
)


@contextmanager
def _map_errors(what: str) -> Iterator[None]:
    """Translate SDK exceptions at the edge (httpx ``map_exceptions`` style).

    ``what`` names the reference (never a value). Order matters: ``ResourceNotFoundError`` and
    ``ClientAuthenticationError`` are ``HttpResponseError`` subclasses, so they are checked first.
    """
    try:
        yield
    except ResourceNotFoundError as exc:
        raise SecretNotFound(f"{what}: not found in the key vault") from exc
    except ClientAuthenticationError as exc:
        # Also azure-identity's CredentialUnavailableError: no usable identity in this environment.
        shown = f" (HTTP {exc.status_code})" if exc.status_code else ""
        raise BackendAuthError(f"{what}: the key vault refused our credentials{shown}") from exc
    except HttpResponseError as exc:
        status = exc.status_code or 0
        code = exc.error.code if exc.error is not None and exc.error.code else "unknown"
        if status == 403:
            raise BackendAuthError(f"{what}: forbidden by the key vault (HTTP 403, {code})") from exc
        if status in (408, 429) or status >= 500:
            raise BackendUnavailable(f"{what}: key vault unavailable (HTTP {status}, {code})") from exc
        raise BackendError(f"{what}: key vault request failed (HTTP {status}, {code})") from exc
    except (ServiceRequestError, ServiceResponseError) as exc:
        # Connection refused, TLS failure, DNS, connect/read timeouts (their Timeout subclasses).
        raise BackendUnavailable(f"{what}: key vault unreachable ({type(exc).__name__})") from exc
    except ValueError as exc:
        # The SDK raises ValueError when the vault's auth challenge names a resource that does not
        # match the vault's domain (a misdirected or spoofed vault URL); refuse to send a token there.
        raise BackendAuthError(f"{what}: the key vault's authentication challenge was rejected") from exc


class AzureKeyVaultBackend(SecretBackend):
    """One Key Vault (``vault_url``). ``SecretClient`` is thread-safe, so one client is shared.

    ``ref.path`` is the secret name, ``@VERSION`` a version id (the last segment of the secret id),
    ``#KEY`` selects a top-level field of a JSON object value. The returned version is the version
    segment of the id the vault answered with, so callers can pin or detect rotation.
    """

    def __init__(
        self,
        name: str,
        vault_url: str,
        *,
        credential: TokenCredential | None = None,
        connection_verify: bool | str = True,
        verify_challenge_resource: bool = True,
        client_id: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        retries: int = 3,
        health_probe: str = "depthguard-health-probe",
    ) -> None:
        """``connection_verify`` is ``True`` (system CAs), a CA bundle path, or ``False`` (never do
        that outside a test). ``verify_challenge_resource=False`` only for a vault not under
        ``vault.azure.net`` (a local test server); it disables a check against token misdirection.
        ``client_id`` picks a user-assigned managed identity / workload identity client."""
        if not vault_url.startswith("https://"):
            # The SDK refuses to send bearer tokens over plain HTTP; fail at start-up, not on first read.
            raise ConfigError("", f"backends.{name}.vault_url", f"must be an https:// URL, got {vault_url!r}")
        if not _NAME.match(health_probe):
            raise ConfigError(
                "", f"backends.{name}.health_probe", f"not a Key Vault secret name: {health_probe!r}"
            )
        self.name = name
        self.vault_url = vault_url
        self._health_probe = health_probe
        self._owns_credential = credential is None
        if credential is None:
            from azure.identity import DefaultAzureCredential  # imported lazily: slow, unused in tests

            kwargs: dict[str, Any] = {}
            if client_id:
                kwargs["managed_identity_client_id"] = client_id
                kwargs["workload_identity_client_id"] = client_id
            credential = DefaultAzureCredential(**kwargs)
        self._credential = credential
        self._client = SecretClient(
            vault_url,
            credential,
            verify_challenge_resource=verify_challenge_resource,
            connection_verify=connection_verify,
            connection_timeout=connect_timeout,
            read_timeout=read_timeout,
            retry_total=retries,
            retry_connect=retries,
            retry_read=retries,
            retry_status=retries,
            retry_backoff_factor=0.2 if retries else 0,
            retry_backoff_max=5,
        )

    @classmethod
    def from_config(cls, name: str, options: Mapping[str, Any]) -> AzureKeyVaultBackend:
        """Build from a ``backends:`` entry, e.g. ``{type: azure, vault_url: "https://my.vault.azure.net"}``.

        Unknown keys are rejected (design.md: config errors name the key path and the reason).
        ``ca_bundle`` is a friendlier spelling of ``connection_verify: /path/to/ca.pem``.
        """
        unknown = sorted(set(options) - _OPTIONS)
        if unknown:
            raise ConfigError("", f"backends.{name}.{unknown[0]}", "unknown option for an azure backend")
        if not isinstance(options.get("vault_url"), str):
            raise ConfigError("", f"backends.{name}.vault_url", "required (https://NAME.vault.azure.net)")
        verify: bool | str = options.get("connection_verify", True)
        if options.get("ca_bundle") is not None:
            verify = str(options["ca_bundle"])
        return cls(
            name,
            options["vault_url"],
            connection_verify=verify,
            verify_challenge_resource=bool(options.get("verify_challenge_resource", True)),
            client_id=options.get("client_id"),
            connect_timeout=float(options.get("connect_timeout", 5.0)),
            read_timeout=float(options.get("read_timeout", 30.0)),
            retries=int(options.get("retries", 3)),
            health_probe=str(options.get("health_probe", "depthguard-health-probe")),
        )

    def read(self, ref: SecretRef) -> SecretValue:
        what = str(ref)
        if not _NAME.match(ref.path):
            raise SecretNotFound(f"{what}: not a Key Vault secret name (1-127 letters, digits, dashes)")
        if ref.version is not None and not _VERSION.match(ref.version):
            raise SecretNotFound(f"{what}: not a Key Vault secret version id")
        with _map_errors(what):
            secret = self._client.get_secret(ref.path, ref.version)
        text = secret.value or ""
        version = secret.properties.version
        if ref.key is None:
            return SecretValue(text.encode(), version=version)
        return SecretValue(_select_key(text, ref.key, what), version=version)

    def health(self) -> Health:
        """Reachable and our token accepted: a read of a probe name that should not exist.

        Key Vault has no read-metadata-only call on the data plane, and listing needs the extra
        ``secrets/list`` permission a sidecar should not hold; a 404 for the probe proves the TLS
        path, the token and the get permission. A probe value, if one exists, is discarded unread.
        """
        try:
            with _map_errors(f"{self.name}:{self._health_probe}"):
                self._client.get_secret(self._health_probe)
        except SecretNotFound:
            return Health(True, "reachable, credentials accepted")
        except BackendError as exc:
            return Health(False, str(exc))
        return Health(True, "reachable, credentials accepted")

    def close(self) -> None:
        self._client.close()
        if self._owns_credential:
            close = getattr(self._credential, "close", None)
            if callable(close):
                close()


def _select_key(text: str, key: str, what: str) -> bytes:
    """``#KEY``: a top-level field of a JSON object value; strings as-is, other JSON re-encoded.

    Errors say what is wrong with the structure, never echo the (secret) content.
    """
    try:
        data = json.loads(text)
    except ValueError:
        raise SecretNotFound(f"{what}: value is not JSON, cannot select key {key!r}") from None
    if not isinstance(data, dict):
        raise SecretNotFound(f"{what}: value is not a JSON object, cannot select key {key!r}")
    if key not in data:
        raise SecretNotFound(f"{what}: key {key!r} not in the secret")
    field = data[key]
    return field.encode() if isinstance(field, str) else json.dumps(field).encode()
