"""Issue 5's acceptance checks end to end: the real cache over the real Vault backend, over HTTP.

Leases are counted on the server, so "one backend call" and "renewed, not re-issued" are observed
where they happen, not inferred from the client.
"""

from __future__ import annotations

import threading

import hvac
import pytest

from broker.backends.interface import SecretRef
from broker.backends.vault import VaultAuth, VaultBackend
from broker.cache import CachePolicy, SecretCache
from depthguard.errors import BackendUnavailable
from tests import vault_server as _vault_fixtures
from tests.vault_server import VaultTestServer

vault = _vault_fixtures.vault
vault_server = _vault_fixtures.vault_server

pytestmark = pytest.mark.integration


def backend_for(server: VaultTestServer) -> VaultBackend:
    return VaultBackend("vault", server.address, VaultAuth(token=server.root_token), clock=server.now)


def test_dynamic_lease_renewed_until_max_ttl_then_reissued(vault_server: VaultTestServer) -> None:
    vault_server.add_db_role("app", default_ttl=30, max_ttl=100)
    cache = SecretCache(CachePolicy(renew_fraction=2 / 3, jitter=0.0), now=vault_server.now)
    ref = SecretRef.parse("vault:database/creds/app#password")
    backend = backend_for(vault_server)
    first = cache.get(ref, backend)
    assert len(vault_server.leases) == 1
    issued = vault_server.now()
    while vault_server.now() - issued < 85:  # well inside the 100 s max TTL
        vault_server.advance(5)
        cache.refresh_due()
        assert cache.get(ref, backend).value == first.value
    assert len(vault_server.leases) == 1, "the lease must be renewed, never re-issued, before max TTL"
    for _ in range(10):
        vault_server.advance(5)
        cache.refresh_due()
    second = cache.get(ref, backend)
    assert len(vault_server.leases) == 2 and second.value != first.value  # re-issued at max TTL
    cache.close(revoke=True)


def test_concurrent_cold_reads_make_one_backend_call(vault_server: VaultTestServer) -> None:
    vault_server.add_db_role("burst", default_ttl=60, max_ttl=600)
    cache = SecretCache(CachePolicy(jitter=0.0))
    ref = SecretRef.parse("vault:database/creds/burst#password")
    backend = backend_for(vault_server)
    results: list[bytes] = []
    start = threading.Barrier(32)

    def reader() -> None:
        start.wait()
        results.append(cache.get(ref, backend).value)

    threads = [threading.Thread(target=reader) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(results) == 32 and len(set(results)) == 1
    assert len(vault_server.leases) == 1
    cache.close(revoke=False)


def test_backend_down_serves_cached_value_until_max_staleness(vault_server: VaultTestServer) -> None:
    admin = hvac.Client(url=vault_server.address, token=vault_server.root_token)
    admin.secrets.kv.v2.create_or_update_secret(
        path="app", secret={"password": "kept-in-cache-1"}, mount_point="secret"
    )
    clock = [1_000_000.0]
    cache = SecretCache(CachePolicy(refresh=10, max_staleness=30, jitter=0.0), now=lambda: clock[0])
    ref = SecretRef.parse("vault:secret/data/app#password")
    backend = VaultBackend("vault", vault_server.address, VaultAuth(token=vault_server.root_token), timeout=2)
    assert cache.get(ref, backend).value == b"kept-in-cache-1"
    vault_server.stop()
    clock[0] += 10 + 29  # expired 29 s ago: within max staleness
    assert cache.get(ref, backend).value == b"kept-in-cache-1"
    clock[0] += 2  # now 31 s past expiry
    with pytest.raises(BackendUnavailable) as err:
        cache.get(ref, backend)
    assert "kept-in-cache-1" not in str(err.value)
    cache.close(revoke=False)
