"""Faults through the cache over real backends: down, slow, 5xx, throttled, credentials revoked,
lease no longer renewable. Each time the cache's documented behaviour holds and nothing crashes:
a cached value is served until ``max_staleness`` past expiry, then refused with
``BackendUnavailable``; a cold read fails fast; an unrenewable lease is re-issued."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import hvac
import pytest
from azure.keyvault.secrets import SecretClient

from broker.backends.aws import AwsSecretsManagerBackend
from broker.backends.azure import AzureKeyVaultBackend
from broker.backends.interface import SecretBackend, SecretRef
from broker.backends.vault import VaultAuth, VaultBackend
from broker.cache import CachePolicy, SecretCache
from depthguard.errors import BackendUnavailable
from tests import vault_server as _vault_fixtures
from tests.azure_server import (
    TEST_TOKEN,
    KeyVaultTestServer,
    StaticTokenCredential,
    azure_kv_server,  # noqa: F401 - fixture
)
from tests.vault_server import VaultTestServer

vault = _vault_fixtures.vault
vault_server = _vault_fixtures.vault_server

pytestmark = pytest.mark.integration

REFRESH, STALE = 10.0, 30.0


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture()
def black_hole() -> Iterator[int]:
    """A port that accepts connections and never answers: the 'slow backend'."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join(timeout=2)
    for c in held:
        c.close()
    srv.close()


def azure_backend(server: KeyVaultTestServer) -> AzureKeyVaultBackend:
    return AzureKeyVaultBackend("azure", server.vault_url, credential=StaticTokenCredential(),
                                connection_verify=str(server.ca.ca_path), verify_challenge_resource=False,
                                retries=0)


def cached_then_outage(backend: SecretBackend, ref: SecretRef, outage: object) -> None:
    """Warm the cache, start the outage, and check stale-then-refused."""
    clock = Clock()
    cache = SecretCache(CachePolicy(refresh=REFRESH, max_staleness=STALE, jitter=0.0), now=clock)
    value = cache.get(ref, backend).value
    outage()  # type: ignore[operator]
    clock.t += REFRESH + STALE - 1
    assert cache.get(ref, backend).value == value  # stale, within the limit
    clock.t += 2
    with pytest.raises(BackendUnavailable) as err:
        cache.get(ref, backend)
    assert value.decode() not in str(err.value)
    cache.close(revoke=False)


@pytest.mark.parametrize("status", [500, 503, 429])
def test_azure_5xx_and_throttling(azure_kv_server: KeyVaultTestServer, status: int) -> None:  # noqa: F811
    server = azure_kv_server
    SecretClient(server.vault_url, StaticTokenCredential(), verify_challenge_resource=False,
                 connection_verify=str(server.ca.ca_path)).set_secret("db", "fault-test-value")
    cached_then_outage(azure_backend(server), SecretRef.parse("azure:db"),
                       lambda: server.inject_faults(*([status] * 20)))


def test_azure_credentials_revoked(azure_kv_server: KeyVaultTestServer) -> None:  # noqa: F811
    server = azure_kv_server
    SecretClient(server.vault_url, StaticTokenCredential(), verify_challenge_resource=False,
                 connection_verify=str(server.ca.ca_path)).set_secret("db", "fault-test-value")

    def revoke() -> None:
        with server.state.lock:
            server.state.tokens.discard(TEST_TOKEN)

    cached_then_outage(azure_backend(server), SecretRef.parse("azure:db"), revoke)


def test_vault_down(vault_server: VaultTestServer) -> None:
    admin = hvac.Client(url=vault_server.address, token=vault_server.root_token)
    admin.secrets.kv.v2.create_or_update_secret(
        path="svc", secret={"k": "fault-test-value"}, mount_point="secret"
    )
    backend = VaultBackend("vault", vault_server.address, VaultAuth(token=vault_server.root_token), timeout=2)
    cached_then_outage(backend, SecretRef.parse("vault:secret/data/svc#k"), vault_server.stop)


def test_vault_sealed(vault_server: VaultTestServer) -> None:
    admin = hvac.Client(url=vault_server.address, token=vault_server.root_token)
    admin.secrets.kv.v2.create_or_update_secret(
        path="svc", secret={"k": "fault-test-value"}, mount_point="secret"
    )
    backend = VaultBackend("vault", vault_server.address, VaultAuth(token=vault_server.root_token), timeout=2)

    def seal() -> None:
        vault_server.sealed = True

    cached_then_outage(backend, SecretRef.parse("vault:secret/data/svc#k"), seal)


def test_revoked_lease_is_reissued_not_crashed(vault_server: VaultTestServer) -> None:
    vault_server.add_db_role("app", default_ttl=30, max_ttl=600)
    backend = VaultBackend("vault", vault_server.address, VaultAuth(token=vault_server.root_token),
                           clock=vault_server.now)
    cache = SecretCache(CachePolicy(jitter=0.0), now=vault_server.now)
    ref = SecretRef.parse("vault:database/creds/app#password")
    first = cache.get(ref, backend)
    (lease_id,) = vault_server.leases
    hvac.Client(url=vault_server.address, token=vault_server.root_token).sys.revoke_lease(lease_id)
    vault_server.advance(25)  # past 2/3 of the TTL: the cache tries to renew, Vault refuses
    cache.refresh_due()
    second = cache.get(ref, backend)
    (new_lease_id,) = vault_server.leases  # the revoked one is gone, a new one was issued
    assert new_lease_id != lease_id and second.value != first.value
    cache.close(revoke=True)


@pytest.mark.parametrize("kind", ["vault", "aws"])
def test_slow_backend_cold_read_fails_fast(
    black_hole: int, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # dummies: the request must go out
        monkeypatch.setenv(var, "testing")
    address = f"http://127.0.0.1:{black_hole}"
    backend: SecretBackend
    if kind == "vault":
        backend = VaultBackend("vault", address, VaultAuth(token="t"), timeout=0.5)
        ref = SecretRef.parse("vault:secret/data/app#k")
    else:
        backend = AwsSecretsManagerBackend("aws", region="eu-west-1", endpoint_url=address, max_attempts=1,
                                           connect_timeout=0.5, read_timeout=0.5)
        ref = SecretRef.parse("aws:prod/app")
    cache = SecretCache(CachePolicy(jitter=0.0))
    started = time.monotonic()
    with pytest.raises(BackendUnavailable):
        cache.get(ref, backend)
    assert time.monotonic() - started < 10
    cache.close(revoke=False)
