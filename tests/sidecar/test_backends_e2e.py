"""Issue 6's backend acceptance item, end to end: the real sidecar in front of real AWS and Vault APIs.

"With a config pointing at moto (AWS) and the Vault test server, the app reads both through the
sidecar; with the backend stopped, reads keep working from cache until max staleness, then 503."

Everything is real and over the wire: boto3 puts a secret into Secrets Manager (moto's server, or
LocalStack with ``CI``/``DEPTHGUARD_TEST_LOCALSTACK``/``DEPTHGUARD_TEST_AWS_ENDPOINT``), hvac puts one
into Vault KV v2 (the project's test server, or a real ``vault server -dev`` with ``VAULT_ADDR`` and
``VAULT_TOKEN``), the sidecar reads both through its own backends and cache on a Unix socket, and the
app side is ``SidecarClient`` (token obtained transparently; the role grants our uid).

Outages are real too: the backend's server is stopped, not mocked. Stopping is only possible for servers
this test owns, so with a real Vault or LocalStack the outage tests skip (the read test still runs). The
session-wide moto server is shared with other tests, so the AWS outage stops a private moto server.

Timing: ``cache.refresh`` 1 s and ``cache.max_staleness`` 3 s, so after a stop every value is past expiry
within ~1 s (a value read just before the stop) and past max staleness within ~4 s; each outage test
takes about 4-5 s, polling with deadlines rather than sleeping.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import hvac
import pytest
from moto.server import ThreadedMotoServer

from depthguard.errors import BackendUnavailable
from tests import vault_server as _vault_fixtures
from tests.broker.aws_server import REGION, aws_endpoint
from tests.sidecar.conftest import Running, StartSidecar
from tests.vault_server import VaultTarget

pytestmark = pytest.mark.integration

vault = _vault_fixtures.vault
__all__ = ["aws_endpoint", "vault"]  # the fixtures, re-exported so pytest finds them in this module

AWS_SECRET = "aws-api-key"
VAULT_SECRET = "vault-db-password"
REFRESH = 1.0
"""``cache.refresh``: how long a static value is fresh."""
MAX_STALENESS = 3.0
"""``cache.max_staleness``: how long past expiry a value is served while its backend fails."""
REFRESHER_TICK = 1.0
"""The cache's background refresher interval (``SecretCache.start`` default, not configurable): with
refresh-ahead at 0.8 minus up to 10 % jitter, a cached value always expires later than
``now - (REFRESHER_TICK - 0.2 * REFRESH)``, so after a stop it fails closed no earlier than about
``MAX_STALENESS - REFRESHER_TICK + 0.2 * REFRESH`` (2.2 s here)."""
POLL = 0.1
SLACK = 3.0
"""Extra time allowed for backend timeouts (a stopped moto refuses only after ~0.5-1 s) and load."""


@dataclass(frozen=True)
class Deployment:
    """A running sidecar configured with one AWS and one Vault secret, and what they hold."""

    running: Running
    values: dict[str, bytes]
    """Secret name (as the sidecar serves it) → the value put into the backend."""
    refs: dict[str, str]
    """Secret name → its reference (the cache key, a label in ``/metrics``)."""
    backend_of: dict[str, str]
    """Secret name → the backend name in the config."""


def deploy(start_sidecar: StartSidecar, aws_url: str, vault: VaultTarget) -> Deployment:
    """Put one secret into each backend (unique names, so shared servers need no cleanup), then start
    the sidecar with both backends, both secrets, a role for our uid and a fast cache."""
    suffix = uuid.uuid4().hex[:12]
    aws_value = f"sk_e2e_aws_{uuid.uuid4().hex}"
    vault_value = f"pw-e2e-vault-{uuid.uuid4().hex}"
    aws_name = f"depthguard/e2e-{suffix}"
    vault_path = f"depthguard-e2e-{suffix}"

    sm = boto3.client("secretsmanager", endpoint_url=aws_url, region_name=REGION)
    sm.create_secret(Name=aws_name, SecretString=json.dumps({"api_key": aws_value}))
    admin = hvac.Client(url=vault.address, token=vault.root_token)
    admin.secrets.kv.v2.create_or_update_secret(path=vault_path, secret={"password": vault_value},
                                                mount_point="secret")

    refs = {AWS_SECRET: f"aws:{aws_name}#api_key", VAULT_SECRET: f"vault:secret/data/{vault_path}#password"}
    running = start_sidecar(
        backends={
            # Short timeouts and no retries: a stopped backend must fail fast, not after botocore's
            # default 5 attempts or hvac's 30 s.
            "aws": {"type": "aws", "region": REGION, "endpoint_url": aws_url, "max_attempts": 1,
                    "connect_timeout": 0.5, "read_timeout": 2},
            "vault": {"type": "vault", "address": vault.address,
                      "auth": {"method": "token", "token": vault.root_token}, "timeout": 2},
        },
        secrets={name: {"ref": ref} for name, ref in refs.items()},
        roles={"app": {"uids": [os.getuid()], "secrets": [AWS_SECRET, VAULT_SECRET], "token_ttl": "10m"}},
        cache={"refresh": f"{REFRESH}s", "max_staleness": f"{MAX_STALENESS}s"},
    )
    return Deployment(running, {AWS_SECRET: aws_value.encode(), VAULT_SECRET: vault_value.encode()}, refs,
                      {AWS_SECRET: "aws", VAULT_SECRET: "vault"})


# ------------------------------------------------------------------------------------------ helpers


def _aws_target(request: pytest.FixtureRequest) -> str:
    """Which AWS the shared ``aws_endpoint`` is: ``moto``, ``localstack`` or ``external``."""
    callspec = getattr(request.node, "callspec", None)
    return str(callspec.params.get("aws_endpoint", "moto")) if callspec is not None else "moto"


def _metric(metrics: str, name: str, **labels: str) -> float | None:
    """One sample's value from Prometheus text, or ``None`` when the series is absent."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    m = re.search(rf"^{re.escape(name)}\{{{re.escape(want)}\}} (\S+)$", metrics, re.MULTILINE)
    return float(m.group(1)) if m else None


def _ready(running: Running) -> tuple[int, dict[str, Any]]:
    status, body = running.json("GET", "/v1/ready")
    assert isinstance(body, dict), body
    return status, body


def _wait_backend_health(running: Running, backend: str, healthy: bool, timeout: float = 8.0
                         ) -> tuple[int, dict[str, Any]]:
    """Poll ``/v1/ready`` until it reports ``backend``'s health as ``healthy`` (answers are cached ~2 s)."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = _ready(running)
        if body.get("backends", {}).get(backend) is healthy:
            return status, body
        assert time.monotonic() < deadline, f"/v1/ready never reported {backend} healthy={healthy}: {body}"
        time.sleep(POLL)


@dataclass(frozen=True)
class Outage:
    """What the app saw for one secret after its backend stopped (times relative to the stop)."""

    served: list[tuple[float, bytes]]
    """(time the read started, value) for each successful read."""
    failed_at: float
    """When the first read that answered 503 started."""


def read_until_unavailable(running: Running, name: str, stopped_at: float) -> Outage:
    """Read ``name`` through ``SidecarClient`` every ``POLL`` s until the sidecar answers 503."""
    deadline = stopped_at + REFRESH + MAX_STALENESS + SLACK
    served: list[tuple[float, bytes]] = []
    with running.client(timeout=10) as client:
        while True:
            started = time.monotonic() - stopped_at
            try:
                served.append((started, client.get(name)))
            except BackendUnavailable:
                return Outage(served, started)
            assert time.monotonic() < deadline, (
                f"{name}: still served {time.monotonic() - stopped_at:.1f} s after its backend stopped "
                f"(refresh {REFRESH} s + max staleness {MAX_STALENESS} s): the sidecar never failed closed")
            time.sleep(POLL)


def check_outage(d: Deployment, down: str, stop: Callable[[], None]) -> None:
    """Stop ``down``'s backend and check the whole stale-if-error-then-fail-closed story for it, and that
    the other secret (on the backend still up) is unaffected."""
    (up,) = set(d.values) - {down}
    running = d.running
    with running.client() as client:
        for name, value in d.values.items():
            assert client.get(name) == value
    _wait_backend_health(running, d.backend_of[down], True)

    stopped_at = time.monotonic()
    stop()
    outage = read_until_unavailable(running, down, stopped_at)

    # Served from cache while within max staleness: every read before the 503 returned the value...
    assert outage.served, "the first read after the stop already failed: no stale-if-error at all"
    assert {value for _, value in outage.served} == {d.values[down]}
    # ...including reads that started after every value fetched before the stop had expired (REFRESH
    # after the stop), so the cache must have served them stale.
    stale = [t for t, _ in outage.served if t > REFRESH + 0.05]
    assert stale, f"no successful read later than {REFRESH} s after the stop: {[t for t, _ in outage.served]}"
    # Then 503, no earlier than max staleness allows and no later than expiry + max staleness (+ slack).
    earliest = MAX_STALENESS - REFRESHER_TICK + 0.2 * REFRESH - 0.5
    assert outage.failed_at >= earliest, f"failed closed after {outage.failed_at:.2f} s, before max staleness"
    assert outage.failed_at <= REFRESH + MAX_STALENESS + SLACK

    # The 503 on the wire: design.md's error body, and neither value nor ref leaks into it.
    status, headers, raw = running.request("GET", f"/v1/secrets/{down}", token=running.token())
    assert status == 503, raw
    assert headers["content-type"].startswith("application/json")
    body = json.loads(raw)
    assert body["error"]["code"] == "unavailable"
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert d.values[down] not in raw and d.values[up] not in raw
    with running.client() as client, pytest.raises(BackendUnavailable) as err:
        client.get(down)
    assert d.values[down].decode() not in str(err.value)

    # The other backend is still up: its secret keeps being served (and refreshed) as before.
    with running.client() as client:
        assert client.get(up) == d.values[up]

    # Operations: the failing backend shows in /metrics and /v1/ready.
    _, _, metrics_raw = running.request("GET", "/metrics")
    metrics = metrics_raw.decode()
    errors = _metric(metrics, "depthguard_sidecar_backend_errors_total", backend=d.backend_of[down],
                     error="refresh")
    assert errors is not None and errors >= 1, "no backend error counted for the stopped backend"
    assert _metric(metrics, "depthguard_sidecar_backend_errors_total", backend=d.backend_of[up],
                   error="refresh") is None
    staleness = _metric(metrics, "depthguard_sidecar_cache_staleness_seconds", ref=d.refs[down])
    assert staleness is not None and 0 < staleness <= MAX_STALENESS, staleness
    status, ready = _wait_backend_health(running, d.backend_of[down], False)
    assert ready["backends"][d.backend_of[up]] is True
    # One secret can no longer be served (its backend is down and its cached value is past max
    # staleness), so the sidecar is not ready, though the other backend still answers.
    assert status == 503 and ready["status"] != "ready"

    # Audit: the refusal is recorded, with the secret's name and never a value.
    audit = running.audit_file.read_bytes()
    assert d.values[down] not in audit and d.values[up] not in audit
    records = running.audit_records()
    assert any(r.get("event") == "access.denied" and r.get("reason") == "backend_unavailable"
               and r.get("secret") == down for r in records), "no audit record for the 503"


# ------------------------------------------------------------------------------------------ fixtures


@dataclass
class MotoHandle:
    """A private moto server (its state is moto's process-wide backends, shared with the session one)."""

    server: ThreadedMotoServer
    url: str
    stopped: bool = False

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.server.stop()  # werkzeug closes the listening socket: new connections are refused


@pytest.fixture
def private_moto(request: pytest.FixtureRequest, aws_endpoint: str) -> Iterator[MotoHandle]:
    """A moto server only this test uses, so stopping it does not break the session-wide one.
    ``aws_endpoint`` is requested for its dummy-credential environment and to know the mode."""
    target = _aws_target(request)
    if target != "moto":
        pytest.skip(f"AWS is {target} ({aws_endpoint}), which this test cannot stop: the AWS outage half "
                    "runs against moto only")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    handle = MotoHandle(server, f"http://{host}:{port}")
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def stoppable_vault(vault: VaultTarget) -> VaultTarget:
    """The Vault test server; with ``VAULT_ADDR``/``VAULT_TOKEN`` (a real Vault) the outage is skipped."""
    if vault.server is None:
        pytest.skip(f"VAULT_ADDR/VAULT_TOKEN point at a real Vault ({vault.address}), which this test "
                    "cannot stop: the Vault outage half runs against the Vault test server only")
    return vault


# ------------------------------------------------------------------------------------------ tests


def test_app_reads_aws_and_vault_secrets_through_the_sidecar(
    start_sidecar: StartSidecar, aws_endpoint: str, vault: VaultTarget
) -> None:
    d = deploy(start_sidecar, aws_endpoint, vault)
    with d.running.client() as client:
        assert client.names() == sorted(d.values)
        for name, value in d.values.items():
            answer = client.secret(name)
            assert answer["value"] == value
            assert answer["backend"] == d.backend_of[name]
            assert client.get(name) == value  # again: from the sidecar's cache, same token
    status, ready = _wait_backend_health(d.running, "vault", True)
    assert status == 200 and ready["backends"] == {"aws": True, "vault": True}
    records = d.running.audit_records()
    assert {r.get("secret") for r in records if r.get("event") == "secret.read"} == set(d.values)
    assert [r.get("role") for r in records if r.get("event") == "token.issue"] == ["app"]  # one token
    audit = d.running.audit_file.read_bytes()
    assert all(value not in audit for value in d.values.values())


def test_vault_down_serves_cache_until_max_staleness_then_503(
    start_sidecar: StartSidecar, aws_endpoint: str, stoppable_vault: VaultTarget
) -> None:
    server = stoppable_vault.server
    assert server is not None
    d = deploy(start_sidecar, aws_endpoint, stoppable_vault)
    check_outage(d, VAULT_SECRET, server.stop)  # also cuts keep-alive connections, like a dead server


def test_aws_down_serves_cache_until_max_staleness_then_503(
    start_sidecar: StartSidecar, private_moto: MotoHandle, vault: VaultTarget
) -> None:
    d = deploy(start_sidecar, private_moto.url, vault)
    check_outage(d, AWS_SECRET, private_moto.stop)


def test_not_ready_when_every_backend_is_down_and_the_cache_is_past_max_staleness(
    start_sidecar: StartSidecar, private_moto: MotoHandle, stoppable_vault: VaultTarget
) -> None:
    server = stoppable_vault.server
    assert server is not None
    d = deploy(start_sidecar, private_moto.url, stoppable_vault)
    with d.running.client() as client:
        for name, value in d.values.items():
            assert client.get(name) == value
    stopped_at = time.monotonic()
    private_moto.stop()
    server.stop()
    for name in d.values:  # both past max staleness: nothing can be served any more
        read_until_unavailable(d.running, name, stopped_at)
    _wait_backend_health(d.running, "aws", False)
    status, ready = _wait_backend_health(d.running, "vault", False)
    # design.md: readiness = "backends reachable or cache warm"; neither holds here.
    assert status == 503, f"/v1/ready answered {status} {ready} while every secret answers 503"
    assert ready["error"]["code"] == "unavailable"
