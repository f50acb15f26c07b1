"""Fixtures that run the real sidecar on a real Unix socket (no TestClient).

``sidecar`` starts ``SidecarServer`` in a background thread (uvicorn with our protocol, uvloop), with a
local encrypted store holding a few secrets, a signing key file the security tests can forge with, and
an audit file; it waits for readiness and always stops what it started. The socket lives in a short
``mkdtemp`` directory (mode 0750: root's group may traverse it, so a forked child that drops to
uid 65534 but keeps gid 0 can still connect through the socket's 0660 group bits). Tests that need
signals or a process boundary run the CLI as a subprocess instead (``cli``).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from broker.backends.local import LocalStore, resolve_key
from sidecar.client import SidecarClient, UnixHTTPConnection
from sidecar.config import SidecarConfig, load_config
from sidecar.server import SidecarServer

SECRETS: dict[str, bytes] = {
    "db-password": b"pg-pass-7f3a91",
    "api-key": b"api-key-c0ffee",
    "api-token": b"api-token-d00d",
    "binary": b"\x00\xff\xfe-binary",
    "other-team": b"other-team-secret-5150",
}
"""The store's contents; role ``app`` may read all but ``other-team``."""

IN_SCOPE = ["api-key", "api-token", "binary", "db-password"]

def cli(*args: str, input: bytes | None = None, timeout: float = 60.0,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "depthguard", *args], input=input, capture_output=True,
                          timeout=timeout, env=env)


def short_dir(prefix: str = "dg-") -> Path:
    """A short directory under /tmp (Unix socket paths are limited to 107 bytes)."""
    d = Path(tempfile.mkdtemp(prefix=prefix))
    d.chmod(0o750)
    return d


def make_store(path: Path, secrets: dict[str, bytes] = SECRETS) -> LocalStore:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    store = LocalStore(path, resolve_key(path, None, {}, create=True).key)
    for name, value in secrets.items():
        store.put(name, value)
    return store


def base_config(root: Path, sock: Path, **overrides: Any) -> dict[str, Any]:
    """A config document: local store at root/store, role ``app`` for our uid, generous limits (the
    security tests send many bad tokens on purpose), key and audit files under ``root``."""
    doc: dict[str, Any] = {
        "listen": {"socket": str(sock), "mode": "0660"},
        "backends": {"local": {"type": "local", "path": str(root / "store")}},
        "secrets": {name: {"ref": f"local:{name}"} for name in SECRETS},
        "roles": {"app": {"uids": [os.getuid()], "secrets": ["db-password", "api-*", "binary"],
                          "token_ttl": "10m"}},
        "audit": {"file": str(root / "audit.jsonl"), "heartbeat": "30s"},
        "tokens": {"key_file": str(root / "keys" / "signing.pem")},
        "limits": {"token_rate_per_minute": 100000, "token_burst": 10000,
                   "auth_failures_per_minute": 100000},
        "drain_seconds": 2,
    }
    for key, value in overrides.items():
        doc[key] = value
    return doc


def write_config(path: Path, doc: dict[str, Any]) -> SidecarConfig:
    path.write_text(yaml.safe_dump(doc))
    return load_config(path)


@dataclass
class Running:
    """A sidecar serving in a background thread, and helpers to talk to it."""

    server: SidecarServer
    root: Path
    config_file: Path
    thread: threading.Thread
    _conns: list[http.client.HTTPConnection] = field(default_factory=list)

    @property
    def socket(self) -> Path:
        return self.server.socket_path

    @property
    def audit_file(self) -> Path:
        return self.root / "audit.jsonl"

    @property
    def key_file(self) -> Path:
        return self.root / "keys" / "signing.pem"

    def client(self, **kw: Any) -> SidecarClient:
        return SidecarClient(self.socket, **kw)

    def request(self, method: str, path: str, *, token: str | None = None, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """One request on a fresh connection: (status, lower-cased headers, body)."""
        conn = UnixHTTPConnection(self.socket, timeout=10)
        self._conns.append(conn)
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data

    def json(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        status, _, data = self.request(method, path, **kw)
        return status, (json.loads(data) if data else None)

    def token(self, role: str | None = None) -> str:
        body_in = json.dumps({"role": role} if role else {}).encode()
        status, body = self.json("POST", "/v1/token", body=body_in)
        assert status == 200, body
        return str(body["token"])

    def audit_records(self) -> list[dict[str, Any]]:
        """The audit file's records so far (waits for the writer to flush what is queued)."""
        flush_audit(self.server)
        return [json.loads(line) for line in self.audit_file.read_text().splitlines() if line.strip()]

    def raw(self, data: bytes, *, read_timeout: float = 5.0) -> bytes:
        """Send raw bytes on a new connection; return everything until the server closes or goes quiet."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(read_timeout)
        s.connect(str(self.socket))
        try:
            # the server may answer and close before reading everything
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                s.sendall(data)
            out = b""
            while True:
                try:
                    chunk = s.recv(65536)
                except (TimeoutError, ConnectionResetError):
                    break
                if not chunk:
                    break
                out += chunk
            return out
        finally:
            s.close()


def flush_audit(server: SidecarServer, timeout: float = 5.0) -> None:
    """Wait until the audit writer has taken everything queued so far."""
    import time

    audit = server.service.audit
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not audit.pending:
            time.sleep(0.05)  # the batch being written: let it land
            if not audit.pending:
                return
        time.sleep(0.01)


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    d = short_dir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


StartSidecar = Callable[..., Running]


@pytest.fixture
def start_sidecar(tmp_path: Path, sock_dir: Path) -> Iterator[StartSidecar]:
    """Factory: ``start_sidecar(**config overrides)`` → a running sidecar (stopped at teardown)."""
    started: list[Running] = []

    def start(*, store_secrets: dict[str, bytes] = SECRETS, **overrides: Any) -> Running:
        root = tmp_path / f"sc{len(started)}"
        root.mkdir()
        make_store(root / "store", store_secrets)
        sock = sock_dir / f"s{len(started)}.sock"
        cfg_file = root / "sidecar.yaml"
        cfg = write_config(cfg_file, base_config(root, sock, **overrides))
        server = SidecarServer(cfg, load=lambda: load_config(cfg_file))
        thread = threading.Thread(target=server.serve, name="sidecar-under-test", daemon=True)
        thread.start()
        if not server.ready.wait(10):
            server.stop()
            raise AssertionError("sidecar did not become ready")
        running = Running(server, root, cfg_file, thread)
        started.append(running)
        return running

    yield start
    for running in started:
        running.server.stop()
        running.thread.join(15)
        assert not running.thread.is_alive(), "sidecar did not stop"


@pytest.fixture
def sc(start_sidecar: StartSidecar) -> Running:
    return start_sidecar()
