"""AzureKeyVaultBackend against the HTTPS Key Vault test server, through the real ``SecretClient``."""

from __future__ import annotations

import json

import pytest
from azure.keyvault.secrets import SecretClient

from broker.backends.azure import AzureKeyVaultBackend
from broker.backends.interface import (
    BackendAuthError,
    BackendUnavailable,
    SecretNotFound,
    SecretRef,
)
from depthguard.errors import ConfigError
from tests.azure_server import (
    TEST_TENANT,
    KeyVaultTestServer,
    StaticTokenCredential,
    azure_kv_server,  # noqa: F401 - fixture
    azure_vault,  # noqa: F401 - fixture
)

pytestmark = pytest.mark.integration

VaultInfo = tuple[str, str, type[StaticTokenCredential]]

CANARY = "s3cr3t-canary-value-7f2c"
"""A value that must never show up in an error message."""


def _backend(
    vault: VaultInfo, credential: StaticTokenCredential | None = None, **kw: object
) -> AzureKeyVaultBackend:
    url, ca, cred_cls = vault
    return AzureKeyVaultBackend(
        "azure",
        url,
        credential=credential or cred_cls(),
        connection_verify=ca,
        verify_challenge_resource=False,  # 127.0.0.1 is not under vault.azure.net
        **kw,  # type: ignore[arg-type]
    )


def _sdk(vault: VaultInfo) -> SecretClient:
    """Test setup writes through the SDK's own set_secret (PUT), not into server internals."""
    url, ca, cred_cls = vault
    return SecretClient(url, cred_cls(), verify_challenge_resource=False, connection_verify=ca)


def test_latest_and_pinned_versions(azure_vault: VaultInfo) -> None:  # noqa: F811
    sdk = _sdk(azure_vault)
    v1 = sdk.set_secret("web-tls", "cert-one").properties.version
    v2 = sdk.set_secret("web-tls", "cert-two").properties.version
    assert v1 and v2 and v1 != v2
    cred = azure_vault[2]()
    backend = _backend(azure_vault, cred)
    try:
        latest = backend.read(SecretRef.parse("azure:web-tls"))
        assert (latest.value, latest.version) == (b"cert-two", v2)
        pinned = backend.read(SecretRef.parse(f"azure:web-tls@{v1}"))
        assert (pinned.value, pinned.version) == (b"cert-one", v1)
        assert "cert-" not in repr(pinned)
        # The SDK followed the challenge: Key Vault scope and the challenge's tenant.
        assert cred.requests[0] == (("https://vault.azure.net/.default",), TEST_TENANT)
    finally:
        backend.close()


def test_key_selects_json_field(azure_vault: VaultInfo) -> None:  # noqa: F811
    _sdk(azure_vault).set_secret(
        "db",
        json.dumps({"username": "app", "password": CANARY, "port": 5432}),
        content_type="application/json",
    )
    backend = _backend(azure_vault)
    try:
        assert backend.read(SecretRef.parse("azure:db#password")).value == CANARY.encode()
        assert backend.read(SecretRef.parse("azure:db#port")).value == b"5432"
        with pytest.raises(SecretNotFound) as info:
            backend.read(SecretRef.parse("azure:db#missing"))
        assert "azure:db#missing" in str(info.value)
        assert CANARY not in str(info.value)
    finally:
        backend.close()


def test_key_on_non_json_value_does_not_echo_it(azure_vault: VaultInfo) -> None:  # noqa: F811
    _sdk(azure_vault).set_secret("plain", CANARY)
    backend = _backend(azure_vault)
    try:
        with pytest.raises(SecretNotFound) as info:
            backend.read(SecretRef.parse("azure:plain#x"))
        assert CANARY not in str(info.value)
        assert info.value.__cause__ is None  # the JSON error (which holds the text) is not chained
    finally:
        backend.close()


def test_not_found(azure_vault: VaultInfo) -> None:  # noqa: F811
    _sdk(azure_vault).set_secret("exists", CANARY)
    backend = _backend(azure_vault)
    try:
        with pytest.raises(SecretNotFound, match="azure:nope"):
            backend.read(SecretRef.parse("azure:nope"))
        with pytest.raises(SecretNotFound, match="azure:exists@0123abcd") as info:
            backend.read(SecretRef.parse("azure:exists@0123abcd"))
        assert CANARY not in str(info.value)
        with pytest.raises(SecretNotFound, match="not a Key Vault secret name"):
            backend.read(SecretRef.parse("azure:bad/name"))
    finally:
        backend.close()


def test_bad_token_is_auth_error(azure_vault: VaultInfo) -> None:  # noqa: F811
    _sdk(azure_vault).set_secret("web-tls", CANARY)
    backend = _backend(azure_vault, StaticTokenCredential("not-a-valid-token"))
    try:
        with pytest.raises(BackendAuthError, match="azure:web-tls") as info:
            backend.read(SecretRef.parse("azure:web-tls"))
        assert CANARY not in str(info.value)
        assert "not-a-valid-token" not in str(info.value)
        assert not backend.health().ok
    finally:
        backend.close()


def test_forbidden_is_auth_error(azure_vault: VaultInfo, azure_kv_server: KeyVaultTestServer) -> None:  # noqa: F811
    azure_kv_server.add_token("no-permission", forbidden=True)
    backend = _backend(azure_vault, StaticTokenCredential("no-permission"))
    try:
        with pytest.raises(BackendAuthError, match="403"):
            backend.read(SecretRef.parse("azure:web-tls"))
    finally:
        backend.close()


def test_5xx_is_unavailable(azure_vault: VaultInfo, azure_kv_server: KeyVaultTestServer) -> None:  # noqa: F811
    _sdk(azure_vault).set_secret("web-tls", CANARY)
    backend = _backend(azure_vault, retries=0)
    try:
        backend.read(SecretRef.parse("azure:web-tls"))  # challenge done, token cached
        azure_kv_server.inject_faults(503)
        with pytest.raises(BackendUnavailable, match="503") as info:
            backend.read(SecretRef.parse("azure:web-tls"))
        assert CANARY not in str(info.value)
    finally:
        backend.close()


def test_5xx_is_retried(azure_vault: VaultInfo, azure_kv_server: KeyVaultTestServer) -> None:  # noqa: F811
    _sdk(azure_vault).set_secret("web-tls", "v")
    backend = _backend(azure_vault, retries=2)
    try:
        backend.read(SecretRef.parse("azure:web-tls"))
        azure_kv_server.inject_faults(503)
        assert backend.read(SecretRef.parse("azure:web-tls")).value == b"v"
    finally:
        backend.close()


def test_server_stopped_is_unavailable(azure_vault: VaultInfo, azure_kv_server: KeyVaultTestServer) -> None:  # noqa: F811
    _sdk(azure_vault).set_secret("web-tls", CANARY)
    backend = _backend(azure_vault, retries=1, connect_timeout=1.0, read_timeout=2.0)
    try:
        assert backend.read(SecretRef.parse("azure:web-tls")).value == CANARY.encode()
        assert backend.health().ok
        azure_kv_server.stop()  # also cuts the client's kept-alive connection
        with pytest.raises(BackendUnavailable, match="azure:web-tls") as info:
            backend.read(SecretRef.parse("azure:web-tls"))
        assert CANARY not in str(info.value)
        health = backend.health()
        assert not health.ok and CANARY not in health.detail
    finally:
        backend.close()


def test_untrusted_ca_is_unavailable(azure_vault: VaultInfo) -> None:  # noqa: F811
    url, _ca, cred_cls = azure_vault
    backend = AzureKeyVaultBackend(
        "azure", url, credential=cred_cls(), verify_challenge_resource=False, retries=0
    )
    try:
        with pytest.raises(BackendUnavailable):
            backend.read(SecretRef.parse("azure:web-tls"))
    finally:
        backend.close()


def test_challenge_resource_checked_by_default(azure_vault: VaultInfo) -> None:  # noqa: F811
    """With verification on, a vault on 127.0.0.1 claiming resource vault.azure.net gets no token."""
    url, ca, cred_cls = azure_vault
    cred = cred_cls()
    backend = AzureKeyVaultBackend("azure", url, credential=cred, connection_verify=ca, retries=0)
    try:
        with pytest.raises(BackendAuthError):
            backend.read(SecretRef.parse("azure:web-tls"))
        assert cred.requests == []
    finally:
        backend.close()


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="https"):
        AzureKeyVaultBackend.from_config("azure", {"type": "azure", "vault_url": "http://my.vault.azure.net"})
    with pytest.raises(ConfigError, match=r"backends\.azure\.bogus"):
        AzureKeyVaultBackend.from_config("azure", {"type": "azure", "vault_url": "https://x", "bogus": 1})
    with pytest.raises(ConfigError, match="vault_url"):
        AzureKeyVaultBackend.from_config("azure", {"type": "azure"})


def test_default_credential_is_default_azure_credential() -> None:
    from azure.identity import DefaultAzureCredential

    backend = AzureKeyVaultBackend.from_config(
        "azure", {"type": "azure", "vault_url": "https://my.vault.azure.net"}
    )
    try:
        assert isinstance(backend._credential, DefaultAzureCredential)
    finally:
        backend.close()
