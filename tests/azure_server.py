"""An HTTPS Azure Key Vault test server, faithful enough that the real ``SecretClient`` runs unmodified.

Why not a mock: the backend's value is in how it behaves with the real SDK (challenge-based auth,
TLS verification, retries, error mapping), so the tests drive ``azure-keyvault-secrets`` over real
HTTPS against a throw-away CA. Only what the SDK uses for secrets is implemented, following the
documented REST API (Get Secret / Set Secret, the secret bundle JSON and the Key Vault error body):

* a request without a bearer token gets ``401`` with the Key Vault challenge
  (``WWW-Authenticate: Bearer authorization=".../<tenant>", resource="https://vault.azure.net"``);
* ``Authorization: Bearer <token>`` is accepted for known tokens, ``401`` otherwise, ``403`` for
  tokens registered as lacking permission;
* ``GET /secrets/{name}[/{version}]?api-version=...`` returns the secret bundle;
* ``PUT /secrets/{name}?api-version=...`` creates a new version (test setup through ``set_secret``);
* unknown names or versions get ``404`` with ``{"error": {"code": "SecretNotFound", ...}}``.

It never logs request bodies or values. Not for production use: it is an in-memory test double.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import socket
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from azure.core.credentials import AccessToken
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TEST_TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
TEST_TOKEN = "depthguard-test-token"
"""The bearer token the server accepts by default (what ``StaticTokenCredential()`` hands out)."""
VAULT_RESOURCE = "https://vault.azure.net"
API_VERSION = "2026-04-01"
"""What azure-keyvault-secrets 4.12 sends; the server accepts any api-version but requires one."""


# --------------------------------------------------------------------------------------------- TLS
@dataclass(frozen=True)
class TestCA:
    """A throw-away CA and a server certificate for ``localhost`` / ``127.0.0.1`` (PEM files)."""

    __test__ = False  # not a pytest test class despite the name

    ca_path: Path
    cert_path: Path
    key_path: Path


def make_test_ca(directory: Path) -> TestCA:
    """Create a CA and a leaf signed by it. The leaf carries SAN, EKU serverAuth and key ids so that
    strict X.509 verification (OpenSSL 3, ``VERIFY_X509_STRICT``) accepts it too."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "depthguard test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = directory / "ca.pem"
    cert_path = directory / "server.pem"
    key_path = directory / "server.key"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return TestCA(ca_path, cert_path, key_path)


# ----------------------------------------------------------------------------------- credential
class StaticTokenCredential:
    """A real (not mocked) ``TokenCredential`` handing out one fixed bearer token.

    Records the scopes and tenants it was asked for, so tests can check that the SDK followed the
    server's challenge (scope ``https://vault.azure.net/.default``, the challenge's tenant).
    """

    def __init__(self, token: str = TEST_TOKEN, expires_in: int = 3600) -> None:
        self.token = token
        self.expires_in = expires_in
        self.requests: list[tuple[tuple[str, ...], str | None]] = []

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        self.requests.append((scopes, tenant_id))
        return AccessToken(self.token, int(time.time()) + self.expires_in)

    def close(self) -> None:
        """Nothing to release; present because ``TokenCredential`` users may call it."""


# --------------------------------------------------------------------------------------- server
@dataclass
class _Version:
    version: str
    value: str
    content_type: str | None
    tags: dict[str, str] | None
    enabled: bool
    created: int
    updated: int
    nbf: int | None = None
    exp: int | None = None


@dataclass
class _State:
    secrets: dict[str, list[_Version]] = field(default_factory=dict)
    """Versions per (case-insensitive) name, oldest first; the last one is "latest"."""
    tokens: set[str] = field(default_factory=lambda: {TEST_TOKEN})
    forbidden_tokens: set[str] = field(default_factory=set)
    """Tokens that authenticate but lack the secrets/get and secrets/set permissions (403)."""
    faults: list[int] = field(default_factory=list)
    """Status codes to answer the next authenticated requests with, one per request (5xx tests)."""
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's connection pool expects
    disable_nagle_algorithm = True  # small JSON responses must not wait for delayed ACKs
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the test server must not print request lines into test output."""

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    # -- plumbing --------------------------------------------------------------------------
    def _send_json(self, status: int, body: Any, headers: Sequence[tuple[str, str]] = ()) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache")
        self.send_header("x-ms-request-id", str(uuid.uuid4()))
        self.send_header("x-ms-keyvault-service-version", "1.9.0.0")
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, code: str, message: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        self._send_json(status, {"error": {"code": code, "message": message}}, headers)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _challenge(self, message: str) -> None:
        challenge = (
            f'Bearer authorization="https://login.microsoftonline.com/{TEST_TENANT}", '
            f'resource="{VAULT_RESOURCE}"'
        )
        self._error(401, "Unauthorized", message, [("WWW-Authenticate", challenge)])

    def _authorized(self) -> bool:
        """Key Vault's order: authenticate first (401 + challenge), then authorize (403)."""
        auth = self.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token:
            self._challenge("AKV10000: Request is missing a Bearer or PoP token.")
            return False
        state = self.server.state
        if token in state.forbidden_tokens:
            self._error(403, "Forbidden", "Caller is not authorized to perform action on resource.")
            return False
        if token not in state.tokens:
            self._challenge("AKV10032: Invalid issuer or token.")
            return False
        return True

    def _route(self) -> tuple[str, str | None] | None:
        """``/secrets/{name}[/{version}]`` with a required api-version, else answer 400/404."""
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        if not query.get("api-version"):
            self._error(400, "BadParameter", "The request URI contains an invalid api-version.")
            return None
        segments = [unquote(s) for s in parts.path.strip("/").split("/")]
        if len(segments) not in (2, 3) or segments[0] != "secrets" or not segments[1]:
            self._error(404, "NotFound", "The requested resource was not found.")
            return None
        return segments[1], (segments[2] or None) if len(segments) == 3 else None

    def _fault(self) -> bool:
        with self.server.state.lock:
            status = self.server.state.faults.pop(0) if self.server.state.faults else None
        if status is None:
            return False
        self._error(status, "ServiceUnavailable", "Injected fault.")
        return True

    def _bundle(self, name: str, v: _Version) -> dict[str, Any]:
        host = self.headers.get("Host") or f"127.0.0.1:{self.server.server_address[1]}"
        attributes: dict[str, Any] = {
            "enabled": v.enabled,
            "created": v.created,
            "updated": v.updated,
            "recoveryLevel": "Recoverable+Purgeable",
            "recoverableDays": 90,
        }
        if v.nbf is not None:
            attributes["nbf"] = v.nbf
        if v.exp is not None:
            attributes["exp"] = v.exp
        bundle: dict[str, Any] = {
            "value": v.value,
            "id": f"https://{host}/secrets/{name}/{v.version}",
            "attributes": attributes,
        }
        if v.content_type is not None:
            bundle["contentType"] = v.content_type
        if v.tags is not None:
            bundle["tags"] = v.tags
        return bundle

    # -- verbs -----------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._read_body()
        route = self._route()
        if route is None or not self._authorized() or self._fault():
            return
        name, version = route
        with self.server.state.lock:
            versions = list(self.server.state.secrets.get(name.lower(), []))
        found = (
            next((v for v in versions if v.version == version), None)
            if version
            else (versions[-1] if versions else None)
        )
        if found is None:
            what = f"{name}/{version}" if version else name
            self._error(
                404,
                "SecretNotFound",
                f"A secret with (name/id) {what} was not found in this key vault. If you recently "
                "deleted this secret you may be able to recover it using the correct recovery command.",
            )
            return
        if not found.enabled:
            self._error(403, "Forbidden", "Operation get is not allowed on a disabled secret.")
            return
        stored_name = next(n for n in self._names() if n.lower() == name.lower())
        self._send_json(200, self._bundle(stored_name, found))

    def do_PUT(self) -> None:
        body = self._read_body()  # the SDK's first, token-less attempt is body-less (Content-Length: 0)
        route = self._route()
        if route is None or not self._authorized() or self._fault():
            return
        name, version = route
        if version is not None:
            self._error(405, "BadParameter", "Method not allowed on a secret version.")
            return
        try:
            payload = json.loads(body or b"null")
        except ValueError:
            payload = None
        if not isinstance(payload, dict) or not isinstance(payload.get("value"), str):
            self._error(400, "BadParameter", "Property value is required.")
            return
        attrs = payload.get("attributes") or {}
        now = int(time.time())
        new = _Version(
            version=uuid.uuid4().hex,
            value=payload["value"],
            content_type=payload.get("contentType"),
            tags=payload.get("tags"),
            enabled=bool(attrs.get("enabled", True)),
            created=now,
            updated=now,
            nbf=attrs.get("nbf"),
            exp=attrs.get("exp"),
        )
        with self.server.state.lock:
            self.server.state.secrets.setdefault(name.lower(), []).append(new)
            self.server.names.setdefault(name.lower(), name)
        self._send_json(200, self._bundle(self.server.names[name.lower()], new))

    def _names(self) -> list[str]:
        with self.server.state.lock:
            return list(self.server.names.values())


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, tls: ssl.SSLContext) -> None:
        self.state = _State()
        self.names: dict[str, str] = {}
        """Lower-cased name -> name as first created (Key Vault names are case-insensitive)."""
        self._tls = tls
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet for client-side TLS rejections and resets (expected in tests); loud otherwise."""
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, ssl.SSLError | ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        # Handshake lazily in the handler thread (first read), so one slow client cannot stall accept().
        return self._tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def track(self, conn: socket.socket) -> None:
        with self._conns_lock:
            self._conns.add(conn)

    def untrack(self, conn: socket.socket) -> None:
        with self._conns_lock:
            self._conns.discard(conn)

    def drop_connections(self) -> None:
        """Cut kept-alive connections too, so a stopped server is really gone for pooled clients."""
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class KeyVaultTestServer:
    """Runs the server in a thread on a free loopback port; ``start()``/``stop()`` or a context."""

    def __init__(self, directory: Path) -> None:
        self.ca = make_test_ca(directory)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.ca.cert_path, self.ca.key_path)
        self._httpd = _Server(ctx)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def vault_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def state(self) -> _State:
        return self._httpd.state

    def add_token(self, token: str, *, forbidden: bool = False) -> None:
        """Accept another bearer token; ``forbidden`` ones authenticate but get 403."""
        with self.state.lock:
            (self.state.forbidden_tokens if forbidden else self.state.tokens).add(token)

    def inject_faults(self, *statuses: int) -> None:
        """Answer the next authenticated requests with these statuses (e.g. 503), one each."""
        with self.state.lock:
            self.state.faults.extend(statuses)

    def start(self) -> KeyVaultTestServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name=f"keyvault-test-{self.port}",
        )
        self._thread.start()
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 5.0) -> None:
        """Ready means a TLS handshake with our CA succeeds, not just that the port is bound."""
        ctx = ssl.create_default_context(cafile=str(self.ca.ca_path))
        deadline = time.monotonic() + timeout
        while True:
            try:
                with (
                    socket.create_connection(("127.0.0.1", self.port), timeout=1) as raw,
                    ctx.wrap_socket(raw, server_hostname="127.0.0.1"),
                ):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()
        self._httpd.drop_connections()

    def __enter__(self) -> KeyVaultTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -------------------------------------------------------------------------------------- fixtures
@pytest.fixture
def azure_kv_server() -> Iterator[KeyVaultTestServer]:
    """A fresh server per test (own CA, own port, empty vault); always stopped afterwards."""
    with tempfile.TemporaryDirectory(prefix="depthguard-akv-") as tmp, KeyVaultTestServer(Path(tmp)) as srv:
        yield srv


@pytest.fixture
def azure_vault(
    azure_kv_server: KeyVaultTestServer,
) -> Iterator[tuple[str, str, type[StaticTokenCredential]]]:
    """``(vault_url, ca_path, credential class)``; ``credential_class()`` holds an accepted token."""
    yield azure_kv_server.vault_url, str(azure_kv_server.ca.ca_path), StaticTokenCredential
