"""``sidecar/app.py`` + ``sidecar/service.py``: design.md's HTTP API over a real Unix socket."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from broker.backends.interface import BackendUnavailable, Health, SecretBackend, SecretRef, SecretValue
from depthguard.errors import ConfigError
from tests.sidecar.conftest import (
    IN_SCOPE,
    SECRETS,
    Running,
    StartSidecar,
    base_config,
    flush_audit,
    write_config,
)

pytestmark = pytest.mark.integration


def error_of(body: Any) -> tuple[str, str]:
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    return body["error"]["code"], body["error"]["message"]


# ------------------------------------------------------------------------------------------ tokens


def test_token_for_the_peer_uid(sc: Running) -> None:
    status, body = sc.json("POST", "/v1/token")
    assert status == 200
    assert set(body) == {"token", "token_type", "expires_at", "role", "scopes"}
    assert body["token_type"] == "Bearer" and body["role"] == "app"
    assert body["scopes"] == ["db-password", "api-*", "binary"]
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    header = jwt.get_unverified_header(body["token"])
    assert header["alg"] == "EdDSA" and header["kid"]
    assert claims["uid"] == os.getuid() and claims["sub"] == f"uid:{os.getuid()}"
    assert claims["aud"] == f"depthguard-sidecar:{sc.socket}" and claims["iss"] == "depthguard-sidecar"
    assert claims["exp"] - claims["iat"] == pytest.approx(600) and claims["nbf"] <= time.time()
    assert len(claims["jti"]) == 32 and body["expires_at"] == pytest.approx(claims["exp"])


@pytest.mark.parametrize("body", [b"", b"{}", b'{"role": "app"}', b'{"role": null}'])
def test_token_body_forms(sc: Running, body: bytes) -> None:
    # curl -d sends form content-type: the body is parsed as JSON whatever the header says
    status, answer = sc.json("POST", "/v1/token", body=body,
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200 and answer["role"] == "app"


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"role": 3}', b'{"role": "app", "x": 1}'])
def test_token_bad_body_is_400(sc: Running, body: bytes) -> None:
    status, answer = sc.json("POST", "/v1/token", body=body)
    assert status == 400 and error_of(answer)[0] == "bad_request"


def test_token_for_a_role_the_uid_may_not_use_is_403(start_sidecar: StartSidecar) -> None:
    sc = start_sidecar(roles={
        "app": {"uids": [os.getuid()], "secrets": ["db-password"]},
        "ops": {"uids": [12345], "secrets": ["other-team"]},
    })
    for role in ("ops", "nope"):
        status, body = sc.json("POST", "/v1/token", body=json.dumps({"role": role}).encode())
        assert status == 403 and error_of(body)[0] == "forbidden"
    denials = [r for r in sc.audit_records() if r["event"] == "token.issue" and r["decision"] == "deny"]
    assert [r["reason"] for r in denials] == ["role_not_allowed", "role_not_allowed"]
    assert all(r["uid"] == os.getuid() and r["pid"] == os.getpid() for r in denials)


def test_several_roles_need_a_choice(start_sidecar: StartSidecar) -> None:
    sc = start_sidecar(roles={
        "app": {"uids": [os.getuid()], "secrets": ["db-password"]},
        "batch": {"gids": [os.getgid()], "secrets": ["api-*"]},
    })
    status, body = sc.json("POST", "/v1/token")
    assert status == 400 and "app, batch" in error_of(body)[1]
    status, body = sc.json("POST", "/v1/token", body=b'{"role": "batch"}')
    assert status == 200 and body["scopes"] == ["api-*"]


def test_token_rate_limit_trips_with_429_audit_and_metric(start_sidecar: StartSidecar) -> None:
    sc = start_sidecar(limits={"token_rate_per_minute": 1, "token_burst": 2})
    assert [sc.json("POST", "/v1/token")[0] for _ in range(2)] == [200, 200]
    status, headers, body = sc.request("POST", "/v1/token")
    assert status == 429 and int(headers["retry-after"]) >= 1
    assert json.loads(body)["error"]["code"] == "rate_limited"
    limited = [r for r in sc.audit_records() if r["event"] == "rate.limited"]
    assert limited and limited[0]["reason"] == "token_requests" and limited[0]["uid"] == os.getuid()
    _, _, metrics = sc.request("GET", "/metrics")
    assert b'depthguard_sidecar_rate_limited_total{limit="token_requests"} 1' in metrics


def test_failed_authentications_are_rate_limited_per_uid(start_sidecar: StartSidecar) -> None:
    sc = start_sidecar(limits={"auth_failures_per_minute": 3})
    statuses = [sc.request("GET", "/v1/secrets", token="garbage")[0] for _ in range(5)]
    assert statuses == [401, 401, 401, 429, 429]
    good = sc.token()
    assert sc.request("GET", "/v1/secrets", token=good)[0] == 200  # valid requests are not penalised
    assert sum(r["event"] == "rate.limited" for r in sc.audit_records()) == 1  # audited once, not per hit


# ------------------------------------------------------------------------------------------ secrets


def test_list_shows_only_names_in_scope(sc: Running) -> None:
    status, body = sc.json("GET", "/v1/secrets", token=sc.token())
    assert status == 200 and body == {"secrets": IN_SCOPE}


def test_read_secret(sc: Running) -> None:
    status, body = sc.json("GET", "/v1/secrets/db-password", token=sc.token())
    assert status == 200
    assert body == {"name": "db-password", "value": SECRETS["db-password"].decode(), "encoding": "utf-8",
                    "version": "1", "expires_at": None, "backend": "local"}


def test_binary_value_is_base64(sc: Running) -> None:
    status, body = sc.json("GET", "/v1/secrets/binary", token=sc.token())
    assert status == 200 and body["encoding"] == "base64"
    assert base64.b64decode(body["value"]) == SECRETS["binary"]


def test_out_of_scope_and_unknown_names_look_the_same(sc: Running) -> None:
    token = sc.token()
    answers = [sc.request("GET", f"/v1/secrets/{name}", token=token) for name in ("other-team", "no-such")]
    assert [a[0] for a in answers] == [403, 403]
    assert answers[0][2] == answers[1][2]  # byte-identical: existence outside the scope cannot be probed
    denied = [r for r in sc.audit_records() if r["event"] == "access.denied"]
    assert [(r["secret"], r["reason"]) for r in denied] == [("other-team", "out_of_scope"),
                                                            ("no-such", "out_of_scope")]


def test_in_scope_name_missing_from_the_backend_is_404(start_sidecar: StartSidecar) -> None:
    sc = start_sidecar(
        secrets={**{name: {"ref": f"local:{name}"} for name in SECRETS}, "ghost": {"ref": "local:ghost"}},
        roles={"app": {"uids": [os.getuid()], "secrets": ["ghost", "db-password"]}},
    )
    status, body = sc.json("GET", "/v1/secrets/ghost", token=sc.token())
    assert status == 404 and error_of(body)[0] == "not_found"
    denied = [r for r in sc.audit_records() if r["event"] == "access.denied"]
    assert [(r["secret"], r["reason"]) for r in denied] == [("ghost", "not_found")]


def test_missing_or_malformed_authorization_is_401(sc: Running) -> None:
    status, headers, body = sc.request("GET", "/v1/secrets/db-password")
    assert status == 401 and headers["www-authenticate"] == "Bearer"
    assert json.loads(body)["error"]["code"] == "unauthorized"
    for value in ("Basic Zm9vOmJhcg==", "Bearer", "Bearer ", sc.token()):  # the last: no "Bearer " prefix
        status, _, _ = sc.request("GET", "/v1/secrets", headers={"Authorization": value})
        assert status == 401, value


def test_revoke(sc: Running) -> None:
    token = sc.token()
    assert sc.request("GET", "/v1/secrets/db-password", token=token)[0] == 200
    status, _, body = sc.request("POST", "/v1/token/revoke", token=token)
    assert status == 204 and body == b""
    status, body = sc.json("GET", "/v1/secrets/db-password", token=token)
    assert status == 401 and "revoked" in error_of(body)[1]
    assert sc.request("GET", "/v1/secrets/db-password", token=sc.token())[0] == 200  # a new one works
    events = [r["event"] for r in sc.audit_records()]
    assert "token.revoke" in events


def test_audit_records_reads_without_values(sc: Running) -> None:
    token = sc.token()
    sc.request("GET", "/v1/secrets/db-password", token=token)
    text = sc.audit_file.read_text()
    reads = [r for r in sc.audit_records() if r["event"] == "secret.read"]
    assert reads[-1]["secret"] == "db-password" and reads[-1]["role"] == "app"
    assert reads[-1]["fingerprint"].startswith("hmac-sha256:")
    assert reads[-1]["uid"] == os.getuid() and reads[-1]["pid"] == os.getpid() and reads[-1]["exe"]
    for value in SECRETS.values():
        assert value.decode("latin-1") not in text
    assert token not in text


def test_read_fingerprints_follow_the_value_not_the_read(start_sidecar: StartSidecar, tmp_path: Path) -> None:
    """Fingerprints are made once per fetch: every read of one fetched value carries the HMAC of
    that value, and a new value fetched later carries its own."""
    import hashlib
    import hmac

    from broker.backends.local import LocalStore, resolve_key

    key_file = tmp_path / "audit.key"
    key_file.write_bytes(b"k" * 32)
    audit_file = tmp_path / "fp-audit.jsonl"
    sc = start_sidecar(audit={"file": str(audit_file), "hmac_key_file": str(key_file)})
    token = sc.token()

    def expected(value: bytes) -> str:
        return "hmac-sha256:" + hmac.new(b"k" * 32, value, hashlib.sha256).hexdigest()

    for _ in range(3):
        assert sc.request("GET", "/v1/secrets/db-password", token=token)[0] == 200
    store_dir = sc.root / "store"
    LocalStore(store_dir, resolve_key(store_dir, None, {}, create=False).key).put("db-password", b"rotated!")
    sc.server.service._state.cache.invalidate("local:db-password")  # the next read fetches again
    status, _, body = sc.request("GET", "/v1/secrets/db-password", token=token)
    assert status == 200 and json.loads(body)["value"] == "rotated!"

    flush_audit(sc.server)
    records = [json.loads(line) for line in audit_file.read_text().splitlines()]
    reads = [r for r in records if r["event"] == "secret.read"]
    first, rotated = expected(SECRETS["db-password"]), expected(b"rotated!")
    assert [r["fingerprint"] for r in reads] == [first] * 3 + [rotated]


# ------------------------------------------------------------------------------------------ backend failure


class FlakyBackend(SecretBackend):
    """Serves fixed values until ``down`` is set, then fails like an unreachable server."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.down = False
        self.reads = 0

    def read(self, ref: SecretRef) -> SecretValue:
        self.reads += 1
        if self.down:
            raise BackendUnavailable(f"{self.name}: connection refused")
        return SecretValue(b"flaky-value", version="7")

    def health(self) -> Health:
        return Health(not self.down, "down" if self.down else "")


@pytest.fixture
def flaky(monkeypatch: pytest.MonkeyPatch) -> FlakyBackend:
    import sidecar.service

    backend = FlakyBackend("flaky")
    real = sidecar.service.build_backends  # type: ignore[attr-defined]

    def build(cfg: Any) -> dict[str, SecretBackend]:
        built = real(cfg)
        if "flaky" in built:
            built["flaky"].close()
            built["flaky"] = backend
        return built

    monkeypatch.setattr(sidecar.service, "build_backends", build)
    return backend


def test_backend_down_serves_cache_until_max_staleness_then_503(
        start_sidecar: StartSidecar, flaky: FlakyBackend, tmp_path: Path) -> None:
    sc = start_sidecar(
        backends={"local": {"type": "local", "path": str(tmp_path / "sc0" / "store")},
                  "flaky": {"type": "local", "path": str(tmp_path / "sc0" / "store")}},
        secrets={"db-password": {"ref": "local:db-password"}, "remote": {"ref": "flaky:x", "refresh": 0.3}},
        roles={"app": {"uids": [os.getuid()], "secrets": ["remote"]}},
        cache={"max_staleness": 0.8, "backoff_base": 0.05, "backoff_max": 0.1},
    )
    token = sc.token()
    assert sc.json("GET", "/v1/secrets/remote", token=token)[1]["value"] == "flaky-value"
    flaky.down = True
    time.sleep(0.4)  # past refresh: expired, but within max staleness
    status, body = sc.json("GET", "/v1/secrets/remote", token=token)
    assert status == 200 and body["value"] == "flaky-value"
    time.sleep(1.0)  # past max staleness
    status, body = sc.json("GET", "/v1/secrets/remote", token=token)
    assert status == 503 and error_of(body)[0] == "unavailable"
    assert "flaky-value" not in json.dumps(body)
    _, _, metrics = sc.request("GET", "/metrics")
    assert b'depthguard_sidecar_backend_errors_total{backend="flaky"' in metrics
    events = {r["event"] for r in sc.audit_records()}
    assert "backend.error" in events


def test_ready_reflects_backends_and_cache(start_sidecar: StartSidecar, flaky: FlakyBackend,
                                           tmp_path: Path) -> None:
    flaky.down = True
    sc = start_sidecar(
        backends={"flaky": {"type": "local", "path": str(tmp_path / "sc0" / "store")}},
        secrets={"remote": {"ref": "flaky:x"}},
        roles={"app": {"uids": [os.getuid()], "secrets": ["remote"]}},
    )
    status, body = sc.json("GET", "/v1/ready")
    assert status == 503 and body["backends"] == {"flaky": False} and body["error"]["code"] == "unavailable"
    assert sc.json("GET", "/v1/health") == (200, {"status": "ok"})


# ------------------------------------------------------------------------------------------ operations


def test_health_ready_metrics(sc: Running) -> None:
    assert sc.json("GET", "/v1/health") == (200, {"status": "ok"})
    assert sc.json("GET", "/v1/ready") == (200, {"status": "ready", "backends": {"local": True}})
    token = sc.token()
    for _ in range(3):
        sc.request("GET", "/v1/secrets/db-password", token=token)
    sc.request("GET", "/v1/secrets/db-password", token="forged")
    status, headers, body = sc.request("GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    text = body.decode()
    assert 'depthguard_sidecar_requests_total{route="/v1/secrets/{name}",method="GET",status="200"} 3' in text
    assert 'depthguard_sidecar_request_duration_seconds_count{route="/v1/secrets/{name}"} 4' in text
    assert 'depthguard_sidecar_cache_events_total{event="hits",ref="local:db-password"}' in text
    assert 'depthguard_sidecar_token_denials_total{reason="malformed"} 1' in text
    assert 'depthguard_sidecar_tokens_issued_total{role="app"} 1' in text
    assert "db-password" not in text.split("cache_events_total")[0]  # names only as cache refs


def test_unknown_routes_and_methods_use_the_error_format(sc: Running) -> None:
    status, body = sc.json("GET", "/v1/nothing")
    assert status == 404 and error_of(body)[0] == "not_found"
    status, body = sc.json("DELETE", "/v1/token")
    assert status == 405 and error_of(body)[0] == "bad_request"
    for path in ("/docs", "/openapi.json", "/redoc"):  # exactly design.md's routes
        assert sc.request("GET", path)[0] == 404


def test_openapi_documents_the_design_routes(sc: Running) -> None:
    schema = sc.server.app.openapi()
    assert set(schema["paths"]) == {"/v1/token", "/v1/token/revoke", "/v1/secrets", "/v1/secrets/{name}",
                                    "/v1/health", "/v1/ready", "/metrics"}
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


# ------------------------------------------------------------------------------------------ reload


def test_reload_applies_a_valid_config_and_narrows_live_tokens(sc: Running) -> None:
    token = sc.token()
    assert sc.request("GET", "/v1/secrets/db-password", token=token)[0] == 200
    doc = base_config(sc.root, sc.socket, roles={"app": {"uids": [os.getuid()], "secrets": ["api-*"]}})
    write_config(sc.config_file, doc)
    assert sc.server._load is not None
    assert sc.server.service.reload(sc.server._load)  # what SIGHUP runs (in a worker thread)
    # the token still says db-password is in scope, the role no longer does: refused
    assert sc.request("GET", "/v1/secrets/db-password", token=token)[0] == 403
    assert sc.request("GET", "/v1/secrets/api-key", token=token)[0] == 200
    reloads = [r for r in sc.audit_records() if r["event"] == "config.reload"]
    assert reloads[-1]["decision"] == "allow"


def test_reload_keeps_the_old_config_on_error(sc: Running) -> None:
    token = sc.token()
    sc.config_file.write_text("roles: {app: {uids: [0], secrets: [nope]}}\nbogus: 1\n")
    assert sc.server._load is not None
    assert not sc.server.service.reload(sc.server._load)
    assert sc.request("GET", "/v1/secrets/db-password", token=token)[0] == 200
    reload = [r for r in sc.audit_records() if r["event"] == "config.reload"][-1]
    assert reload["decision"] == "deny" and str(sc.config_file) in reload["reason"]

    def boom() -> Any:
        raise ConfigError("x.yaml", "backends.v", "bad")

    assert not sc.server.service.reload(boom)
    _, _, metrics = sc.request("GET", "/metrics")
    assert b'depthguard_sidecar_config_reloads_total{result="error"} 2' in metrics


# ------------------------------------------------------------------------------------------ rendering


def test_configured_secrets_are_rendered_to_files(start_sidecar: StartSidecar, tmp_path: Path) -> None:
    out = tmp_path / "rendered"
    out.mkdir()
    target = out / "db.env"
    sc = start_sidecar(secrets={
        **{name: {"ref": f"local:{name}"} for name in SECRETS},
        "db-file": {"ref": "local:db-password", "render": {
            "path": str(target), "mode": "0440", "template": "DB_PASSWORD=${value}\n"}},
    })
    deadline = time.monotonic() + 5
    while not target.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert target.read_bytes() == b"DB_PASSWORD=" + SECRETS["db-password"] + b"\n"
    assert (target.stat().st_mode & 0o777) == 0o440
    assert sc.request("GET", "/v1/health")[0] == 200


def test_reload_keeps_cache_and_backends_when_they_did_not_change(
        start_sidecar: StartSidecar, flaky: FlakyBackend, tmp_path: Path) -> None:
    backends = {"flaky": {"type": "local", "path": str(tmp_path / "sc0" / "store")}}
    secrets = {"remote": {"ref": "flaky:x"}, "other": {"ref": "flaky:y"}}
    sc = start_sidecar(backends=backends, secrets=secrets,
                       roles={"app": {"uids": [os.getuid()], "secrets": ["remote"]}})
    token = sc.token()
    assert sc.request("GET", "/v1/secrets/remote", token=token)[0] == 200
    doc = base_config(sc.root, sc.socket, backends=backends, secrets=secrets,
                      roles={"app": {"uids": [os.getuid()], "secrets": ["remote", "other"]}})
    write_config(sc.config_file, doc)
    assert sc.server._load is not None and sc.server.service.reload(sc.server._load)
    flaky.down = True  # the kept cache still holds the fresh value: no backend call needed
    status, body = sc.json("GET", "/v1/secrets/remote", token=sc.token())
    assert status == 200 and body["value"] == "flaky-value"
