"""VaultBackend against real hvac over HTTP: the project's Vault test server, or a real
``vault server -dev`` when ``VAULT_ADDR`` and ``VAULT_TOKEN`` are set (tests needing the test
server's roles, clock or stop are then skipped)."""

from __future__ import annotations

import uuid
from pathlib import Path

import hvac
import pytest

from broker.backends.interface import (
    BackendAuthError,
    BackendError,
    BackendUnavailable,
    LeaseExpired,
    SecretNotFound,
    SecretRef,
)
from broker.backends.vault import VaultAuth, VaultBackend
from tests import vault_server as _vault_fixtures
from tests.vault_server import VaultTarget, VaultTestServer

# the fixtures live next to the server so other test modules can reuse them
vault = _vault_fixtures.vault
vault_server = _vault_fixtures.vault_server

pytestmark = pytest.mark.integration


def ref(text: str) -> SecretRef:
    return SecretRef.parse(text)


def root_backend(v: VaultTarget, **kwargs: object) -> VaultBackend:
    return VaultBackend("vault", v.address, VaultAuth(token=v.root_token), **kwargs)  # type: ignore[arg-type]


def admin(v: VaultTarget) -> hvac.Client:
    return hvac.Client(url=v.address, token=v.root_token)


def test_kv_v1_key_and_whole_json(vault: VaultTarget) -> None:
    mount = f"kv1-{uuid.uuid4().hex[:8]}"
    client = admin(vault)
    client.sys.enable_secrets_engine("kv", path=mount, options={"version": "1"})
    client.secrets.kv.v1.create_or_update_secret("app/db", {"password": "s3cr3t-v1", "port": 5432},
                                                 mount_point=mount)
    backend = root_backend(vault)
    got = backend.read(ref(f"vault:{mount}/app/db#password"))
    assert got.value == b"s3cr3t-v1" and got.version is None and got.lease is None
    assert backend.read(ref(f"vault:{mount}/app/db#port")).value == b"5432"
    assert backend.read(ref(f"vault:{mount}/app/db")).value == b'{"password":"s3cr3t-v1","port":5432}'
    with pytest.raises(SecretNotFound) as missing_key:
        backend.read(ref(f"vault:{mount}/app/db#nope"))
    assert "s3cr3t" not in str(missing_key.value)
    with pytest.raises(SecretNotFound):
        backend.read(ref(f"vault:{mount}/app/db#password@2"))  # KV v1 has no versions


def test_kv_v2_versions_and_keys(vault: VaultTarget) -> None:
    name = f"app-{uuid.uuid4().hex[:8]}"
    client = admin(vault)
    client.secrets.kv.v2.create_or_update_secret(name, secret={"password": "pw-one"}, mount_point="secret")
    client.secrets.kv.v2.create_or_update_secret(name, secret={"password": "pw-two"}, mount_point="secret",
                                                 cas=1)
    backend = root_backend(vault)
    latest = backend.read(ref(f"vault:secret/data/{name}#password"))
    assert (latest.value, latest.version) == (b"pw-two", "2")
    first = backend.read(ref(f"vault:secret/data/{name}#password@1"))
    assert (first.value, first.version) == (b"pw-one", "1")
    assert backend.read(ref(f"vault:secret/{name}#password")).value == b"pw-two"  # short form
    assert backend.read(ref(f"vault:secret/data/{name}")).value == b'{"password":"pw-two"}'
    for bad in (f"secret/data/{name}#password@9", f"secret/data/{name}#password@latest",
                f"secret/data/missing-{name}"):
        with pytest.raises(SecretNotFound) as exc:
            backend.read(ref(f"vault:{bad}"))
        assert "pw-" not in str(exc.value)
    # configured kv_version: no mount detection
    pinned = root_backend(vault, kv_version=2)
    assert pinned.read(ref(f"vault:secret/data/{name}#password@1")).value == b"pw-one"


def dyn_backend(server: VaultTestServer) -> VaultBackend:
    return VaultBackend("vault", server.address, VaultAuth(token=server.root_token), clock=server.now)


def test_dynamic_lease_renews_up_to_max_ttl(vault_server: VaultTestServer) -> None:
    vault_server.add_db_role("app", default_ttl=10, max_ttl=30)
    backend = dyn_backend(vault_server)
    got = backend.read(ref("vault:database/creds/app"))
    assert got.lease is not None and got.lease.renewable and got.lease.ttl == 10
    assert got.lease.lease_id.startswith("database/creds/app/")
    password = got.value
    assert backend.read(ref("vault:database/creds/app#username")).value.startswith(b"v-token-app-")
    lease = got.lease
    expiries = [lease.expires_at]
    with pytest.raises(LeaseExpired) as exc:
        for _ in range(10):
            vault_server.advance(6)
            lease = backend.renew(lease)
            assert lease.expires_at > expiries[-1]
            expiries.append(lease.expires_at)
    assert len(expiries) >= 3  # it did grow before the max TTL stopped it
    assert lease.max_expires_at is not None and lease.max_expires_at <= got.lease.issued_at + 30 + 1
    assert password.decode() not in str(exc.value)


def test_renew_with_increment_and_revoke(vault_server: VaultTestServer) -> None:
    vault_server.add_db_role("app", default_ttl=10, max_ttl=100)
    backend = dyn_backend(vault_server)
    lease = backend.read(ref("vault:database/creds/app")).lease
    assert lease is not None
    renewed = backend.renew(lease, increment=40)
    assert renewed.ttl == 40 and renewed.max_expires_at is None
    backend.revoke(renewed)
    with pytest.raises(LeaseExpired):
        backend.renew(renewed)


def test_expired_lease_cannot_be_renewed(vault_server: VaultTestServer) -> None:
    backend = dyn_backend(vault_server)
    lease = backend.read(ref("vault:database/creds/app")).lease
    assert lease is not None
    vault_server.advance(lease.ttl + 1)
    with pytest.raises(LeaseExpired):
        backend.renew(lease)


def test_approle_login_and_bad_secret_id(vault_server: VaultTestServer) -> None:
    vault_server.add_approle("web", "role-1", "secret-1")
    good = VaultBackend("vault", vault_server.address,
                        VaultAuth(method="approle", role_id="role-1", secret_id="secret-1"))
    assert good.health().ok
    bad = VaultBackend("vault", vault_server.address,
                       VaultAuth(method="approle", role_id="role-1", secret_id="wrong-secret-id"))
    with pytest.raises(BackendAuthError) as exc:
        bad.read(ref("vault:secret/data/app#password"))
    assert "wrong-secret-id" not in str(exc.value)
    assert bad.health().ok is False


def test_kubernetes_login_reads_jwt_file(vault_server: VaultTestServer, tmp_path: Path) -> None:
    jwt_file = tmp_path / "token"
    jwt_file.write_text("k8s-sa-jwt\n")
    vault_server.add_login_role("kubernetes", "app", "k8s-sa-jwt")
    admin(VaultTarget(vault_server.address, vault_server.root_token)).secrets.kv.v2.create_or_update_secret(
        "k8s", secret={"password": "from-k8s"}, mount_point="secret")
    backend = VaultBackend.from_config("vault", {
        "type": "vault", "address": vault_server.address, "namespace": "team-a",
        "auth": {"method": "kubernetes", "role": "app", "jwt_file": str(jwt_file)}})
    assert backend.read(ref("vault:secret/data/k8s#password")).value == b"from-k8s"
    assert "team-a" in vault_server.namespaces_seen
    jwt_file.write_text("someone-elses-jwt")
    with pytest.raises(BackendAuthError):
        VaultBackend("vault", vault_server.address,
                     VaultAuth(method="kubernetes", role="app", jwt_file=str(jwt_file))).ensure_token()


def test_jwt_login(vault_server: VaultTestServer) -> None:
    vault_server.add_login_role("jwt", "ci", "oidc-id-token")
    auth = VaultAuth(method="jwt", role="ci", jwt="oidc-id-token")
    backend = VaultBackend("vault", vault_server.address, auth)
    assert backend.health().ok


def test_token_renew_self_then_relogin_keeps_leases(vault_server: VaultTestServer) -> None:
    vault_server.add_approle("web", "role-1", "secret-1", ttl=30, max_ttl=70)
    vault_server.add_db_role("app", default_ttl=120, max_ttl=600)
    backend = VaultBackend("vault", vault_server.address,
                           VaultAuth(method="approle", role_id="role-1", secret_id="secret-1"),
                           clock=vault_server.now)
    lease = backend.read(ref("vault:database/creds/app")).lease
    assert lease is not None
    first = backend._client.token
    vault_server.advance(25)  # 5 s of 30 left: renew-self
    backend.ensure_token()
    assert backend._client.token == first
    assert vault_server.tokens[first].expires_at is not None
    assert vault_server.tokens[first].expires_at - vault_server.now() > 25
    vault_server.advance(25)  # 50 s in: renewal is capped at the max TTL (70) but still buys time
    backend.ensure_token()
    assert backend._client.token == first
    vault_server.advance(15)  # 65 s in: renewal cannot extend any more, so log in again before it dies
    backend.ensure_token()
    assert backend._client.token != first
    renewed = backend.renew(lease, increment=60)  # the lease survived the new token
    assert renewed.ttl == 60


def test_static_token_renew_self(vault: VaultTarget) -> None:
    created = admin(vault).auth.token.create(ttl="60s", explicit_max_ttl="600s", renewable=True)
    token = created["auth"]["client_token"]
    clock_offset = [0.0]

    def clock() -> float:
        import time

        return time.time() + clock_offset[0]

    backend = VaultBackend("vault", vault.address, VaultAuth(token=token), clock=clock)
    backend.ensure_token()
    clock_offset[0] = 50  # our view: 10 s left of 60 → renew-self (the server grants a fresh 60 s)
    backend.ensure_token()
    assert backend._token_expires_at is not None
    assert backend._token_expires_at - clock() > 50


def test_bad_token_and_not_found(vault: VaultTarget) -> None:
    with pytest.raises(BackendAuthError):
        VaultBackend("vault", vault.address, VaultAuth(token="not-a-real-token")).read(
            ref("vault:secret/data/app#password"))
    backend = root_backend(vault)
    with pytest.raises(SecretNotFound) as exc:
        backend.read(ref(f"vault:secret/data/nothing-{uuid.uuid4().hex}#password"))
    assert "vault:secret/data/nothing-" in str(exc.value)
    assert backend.health().ok


def test_unavailable_when_stopped_or_sealed(vault_server: VaultTestServer) -> None:
    backend = dyn_backend(vault_server)
    vault_server.sealed = True
    with pytest.raises(BackendUnavailable):
        backend.read(ref("vault:secret/data/app#password"))
    assert backend.health().ok is False
    vault_server.sealed = False
    assert backend.health().ok
    vault_server.stop()
    with pytest.raises(BackendUnavailable):
        backend.read(ref("vault:secret/data/app#password"))
    assert backend.health().ok is False


def test_values_never_in_messages_or_repr(vault_server: VaultTestServer) -> None:
    client = admin(VaultTarget(vault_server.address, vault_server.root_token))
    client.secrets.kv.v2.create_or_update_secret("leaky", secret={"password": "TOPSECRET-123"},
                                                 mount_point="secret")
    backend = dyn_backend(vault_server)
    got = backend.read(ref("vault:secret/data/leaky#password"))
    assert "TOPSECRET" not in repr(got)
    messages: list[str] = []
    for text in ("vault:secret/data/leaky#nope", "vault:secret/data/leaky#password@7"):
        with pytest.raises(BackendError) as exc:
            backend.read(ref(text))
        messages.append(str(exc.value))
    vault_server.stop()
    with pytest.raises(BackendError) as down:
        backend.read(ref("vault:secret/data/leaky#password"))
    messages.append(str(down.value))
    assert all("TOPSECRET" not in m and vault_server.root_token + "'" not in m for m in messages)
