"""A Vault-API-compatible test server, so the Vault backend's tests run hvac unmodified over real HTTP.

It implements only what ``broker/backends/vault.py`` uses, following Vault's documented HTTP API:
``X-Vault-Token`` auth with token TTL / max TTL (``auth/token/lookup-self``, ``renew-self``,
``create``), AppRole, Kubernetes and JWT logins, KV v1 and KV v2 (versions, check-and-set, metadata),
a ``database`` engine issuing leased credentials, ``sys/leases/renew|revoke|lookup``, ``sys/health``,
``sys/mounts`` (enable) and ``sys/internal/ui/mounts/<path>`` (the mount preflight the vault CLI uses).

Deliberate simplifications (documented so nobody mistakes them for Vault's behaviour): every valid
token may do everything (no policies); leases are not revoked when the token that created them
expires; namespaces are accepted and recorded, not isolated. The server has its own clock
(``advance()``) so TTL tests need no sleeping.

Details hvac depends on: it sends the verb ``LIST``; it parses error bodies only when
``Content-Type`` is exactly ``application/json``; it returns a dict only on 200.

Set ``VAULT_ADDR`` and ``VAULT_TOKEN`` to run the same tests against a real ``vault server -dev``;
tests that need the test server's knobs (``vault_server`` fixture) are then skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

ROOT_TOKEN = "root"
KV1_LEASE_DURATION = 2764800  # Vault's default 768h "refresh interval" hint on KV v1 reads


class VaultHTTPError(Exception):
    """Raised inside a handler; turned into Vault's ``{"errors": [...]}`` with the status code."""

    def __init__(self, status: int, *errors: str) -> None:
        super().__init__(status, errors)
        self.status = status
        self.errors = list(errors)


def parse_duration(value: Any, default: float) -> float:
    """Vault accepts durations as integer seconds or Go-style strings ("30s", "5m", "1h")."""
    if value is None or value == "":
        return default
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    if text.isdigit():
        return float(text)
    total = 0.0
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    matches = re.findall(r"(\d+(?:\.\d+)?)([smhd])", text)
    if not matches or "".join(n + u for n, u in matches) != text:
        raise VaultHTTPError(400, f"invalid duration {text!r}")
    for number, unit in matches:
        total += float(number) * units[unit]
    return total


def _rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Token:
    id: str
    policies: list[str]
    ttl: float
    """0 means never expires (root)."""
    max_ttl: float
    issued_at: float
    expires_at: float | None
    renewable: bool
    path: str
    meta: dict[str, str] = field(default_factory=dict)
    accessor: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass
class LeaseState:
    lease_id: str
    issued_at: float
    expires_at: float
    max_expires_at: float
    default_ttl: float
    renewable: bool = True
    last_renewal: float | None = None


@dataclass
class Role:
    """A login role (AppRole / Kubernetes / JWT) or a database role."""

    token_ttl: float = 60.0
    token_max_ttl: float = 300.0
    credentials: set[str] = field(default_factory=set)
    """AppRole: ``role_id:secret_id`` pairs; Kubernetes/JWT: accepted JWTs."""
    policies: list[str] = field(default_factory=lambda: ["default"])


class VaultTestServer:
    """State plus an HTTP server in a thread. Thread-safe: one lock guards all state."""

    def __init__(
        self,
        root_token: str = ROOT_TOKEN,
        *,
        db_default_ttl: float = 60.0,
        db_max_ttl: float = 300.0,
    ) -> None:
        self.root_token = root_token
        self.lock = threading.RLock()
        self.offset = 0.0
        self.sealed = False
        self.namespaces_seen: list[str] = []
        self.tokens: dict[str, Token] = {}
        # mount path (no trailing slash) -> (type, options)
        self.mounts: dict[str, tuple[str, dict[str, str]]] = {
            "secret": ("kv", {"version": "2"}),  # like `vault server -dev`
            "database": ("database", {}),
            "sys": ("system", {}),
        }
        self.auth_mounts: dict[str, str] = {"token": "token", "approle": "approle",
                                            "kubernetes": "kubernetes", "jwt": "jwt"}
        self.kv1: dict[str, dict[str, dict[str, Any]]] = {}
        self.kv2: dict[str, dict[str, list[dict[str, Any]]]] = {}
        self.leases: dict[str, LeaseState] = {}
        self.login_roles: dict[str, dict[str, Role]] = {"approle": {}, "kubernetes": {}, "jwt": {}}
        self.db_roles: dict[str, Role] = {
            "app": Role(token_ttl=db_default_ttl, token_max_ttl=db_max_ttl)
        }
        now = self.now()
        self.tokens[root_token] = Token(root_token, ["root"], 0.0, 0.0, now, None, False, "auth/token/root")
        self.connections: set[socket.socket] = set()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ----- knobs for tests -------------------------------------------------------------------
    def now(self) -> float:
        """The server's clock: wall clock plus whatever ``advance`` added."""
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        with self.lock:
            self.offset += seconds

    def add_approle(self, role: str, role_id: str, secret_id: str, *, ttl: float = 60, max_ttl: float = 300
                    ) -> None:
        self.login_roles["approle"][role] = Role(ttl, max_ttl, {f"{role_id}:{secret_id}"})

    def add_login_role(self, method: str, role: str, jwt: str, *, ttl: float = 60, max_ttl: float = 300
                       ) -> None:
        """A Kubernetes or JWT role accepting exactly ``jwt`` (the real one validates it)."""
        self.login_roles[method][role] = Role(ttl, max_ttl, {jwt})

    def add_db_role(self, role: str, *, default_ttl: float, max_ttl: float) -> None:
        self.db_roles[role] = Role(default_ttl, max_ttl)

    @property
    def address(self) -> str:
        assert self._httpd is not None
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> VaultTestServer:
        server = self

        class Handler(_Handler):
            state = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        name="vault-test-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        with self.lock:  # keep-alive connections outlive serve_forever: cut them like a dead server
            for conn in list(self.connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            self.connections.clear()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    # ----- request handling --------------------------------------------------------------------
    def handle(self, method: str, path: str, query: dict[str, list[str]], body: dict[str, Any],
               token: str | None, namespace: str | None) -> tuple[int, dict[str, Any] | None]:
        with self.lock:
            if namespace:
                self.namespaces_seen.append(namespace)
            if path == "sys/health":
                return self._health(query)
            if self.sealed:
                raise VaultHTTPError(503, "Vault is sealed")
            m = re.fullmatch(r"auth/([^/]+(?:/[^/]+)*)/login", path)
            if m and method in ("POST", "PUT"):
                return 200, self._login(m[1], body)
            tok = self._authenticate(token)
            return self._dispatch(method, path, query, body, tok)

    def _health(self, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        body = {"initialized": True, "sealed": self.sealed, "standby": False,
                "performance_standby": False, "replication_performance_mode": "disabled",
                "replication_dr_mode": "disabled", "server_time_utc": int(self.now()),
                "version": "1.15.0-test", "cluster_name": "vault-test", "cluster_id": "test"}
        return (503 if self.sealed else 200), body

    def _authenticate(self, token: str | None) -> Token:
        if not token:
            raise VaultHTTPError(403, "permission denied")
        tok = self.tokens.get(token)
        if tok is None:
            raise VaultHTTPError(403, "permission denied")
        if tok.expires_at is not None and self.now() >= tok.expires_at:
            del self.tokens[token]
            raise VaultHTTPError(403, "permission denied")
        return tok

    def _new_token(self, path: str, ttl: float, max_ttl: float, policies: list[str], renewable: bool = True,
                   meta: dict[str, str] | None = None) -> Token:
        now = self.now()
        tok = Token("hvs." + secrets.token_urlsafe(24), policies, ttl, max_ttl, now,
                    now + ttl if ttl else None, renewable, path, meta or {})
        self.tokens[tok.id] = tok
        return tok

    @staticmethod
    def _auth_block(tok: Token) -> dict[str, Any]:
        return {"client_token": tok.id, "accessor": tok.accessor, "policies": tok.policies,
                "token_policies": tok.policies, "metadata": tok.meta, "lease_duration": int(tok.ttl),
                "renewable": tok.renewable, "entity_id": "", "token_type": "service", "orphan": True,
                "mfa_requirement": None, "num_uses": 0}

    def _login(self, mount: str, body: dict[str, Any]) -> dict[str, Any]:
        kind = self.auth_mounts.get(mount)
        if kind not in self.login_roles:
            raise VaultHTTPError(404, "no handler for route")
        roles = self.login_roles[kind]
        if kind == "approle":
            pair = f"{body.get('role_id', '')}:{body.get('secret_id', '')}"
            role = next((r for r in roles.values() if pair in r.credentials), None)
            if role is None:
                raise VaultHTTPError(400, "invalid role or secret ID")
            name = next(n for n, r in roles.items() if r is role)
        else:
            name = str(body.get("role", ""))
            if not name:
                raise VaultHTTPError(400, "missing role")
            found = roles.get(name)
            if found is None:
                raise VaultHTTPError(400, f'role "{name}" could not be found')
            if str(body.get("jwt", "")) not in found.credentials:
                raise VaultHTTPError(403, "permission denied")
            role = found
        tok = self._new_token(f"auth/{mount}/login", role.token_ttl, role.token_max_ttl, role.policies,
                              meta={"role_name": name})
        return self._envelope(auth=self._auth_block(tok))

    @staticmethod
    def _envelope(data: dict[str, Any] | None = None, *, auth: dict[str, Any] | None = None,
                  lease_id: str = "", lease_duration: int = 0, renewable: bool = False,
                  warnings: list[str] | None = None) -> dict[str, Any]:
        return {"request_id": str(uuid.uuid4()), "lease_id": lease_id, "renewable": renewable,
                "lease_duration": lease_duration, "data": data, "wrap_info": None,
                "warnings": warnings, "auth": auth}

    def _mount_of(self, path: str) -> tuple[str, str, dict[str, str], str] | None:
        """Longest mount prefix: (mount, type, options, rest of the path)."""
        best: str | None = None
        for mount in self.mounts:
            if (path == mount or path.startswith(mount + "/")) and (best is None or len(mount) > len(best)):
                best = mount
        if best is None:
            return None
        kind, options = self.mounts[best]
        return best, kind, options, path[len(best) + 1:]

    def _dispatch(self, method: str, path: str, query: dict[str, list[str]], body: dict[str, Any],
                  tok: Token) -> tuple[int, dict[str, Any] | None]:
        write = method in ("POST", "PUT")
        if path == "auth/token/lookup-self" and method == "GET":
            return 200, self._envelope(self._token_data(tok))
        if path == "auth/token/renew-self" and write:
            return 200, self._renew_token(tok, body)
        if path == "auth/token/create" and write:
            ttl = parse_duration(body.get("ttl"), 2764800.0)
            max_ttl = parse_duration(body.get("explicit_max_ttl"), 0.0) or 2764800.0
            policies = list(body.get("policies") or ["default"])
            new = self._new_token("auth/token/create", ttl, max_ttl, policies,
                                  bool(body.get("renewable", True)), dict(body.get("meta") or {}))
            return 200, self._envelope(auth=self._auth_block(new))
        if path == "auth/token/revoke-self" and write:
            self.tokens.pop(tok.id, None)
            return 204, None
        if path.startswith("sys/internal/ui/mounts/") and method == "GET":
            found = self._mount_of(path[len("sys/internal/ui/mounts/"):])
            if found is None:
                raise VaultHTTPError(403, "permission denied")
            mount, kind, options, _ = found
            return 200, self._envelope({"path": mount + "/", "type": kind, "description": "",
                                        "options": options or None, "accessor": f"{kind}_{mount}",
                                        "local": False, "seal_wrap": False, "config": {}})
        if path.startswith("sys/mounts/") and write:
            return self._enable_mount(path[len("sys/mounts/"):].strip("/"), body)
        if path.startswith("sys/leases/") and write:
            return self._leases(path[len("sys/leases/"):], body)
        found = self._mount_of(path)
        if found is None or found[1] == "system":
            raise VaultHTTPError(404, f"no handler for route {path!r}")
        mount, kind, options, rest = found
        if kind == "kv" and options.get("version") == "2":
            return self._kv2(method, mount, rest, query, body)
        if kind == "kv":
            return self._kv1(method, mount, rest, body)
        if kind == "database":
            return self._database(method, mount, rest, body)
        raise VaultHTTPError(404, f"no handler for route {path!r}")

    def _token_data(self, tok: Token) -> dict[str, Any]:
        now = self.now()
        return {"accessor": tok.accessor, "creation_time": int(tok.issued_at), "creation_ttl": int(tok.ttl),
                "display_name": "token", "entity_id": "",
                "expire_time": _rfc3339(tok.expires_at) if tok.expires_at else None,
                "explicit_max_ttl": int(tok.max_ttl), "id": tok.id, "issue_time": _rfc3339(tok.issued_at),
                "meta": tok.meta or None, "num_uses": 0, "orphan": True, "path": tok.path,
                "policies": tok.policies, "renewable": tok.renewable,
                "ttl": max(0, int(tok.expires_at - now)) if tok.expires_at else 0, "type": "service"}

    def _renew_token(self, tok: Token, body: dict[str, Any]) -> dict[str, Any]:
        if not tok.renewable or tok.expires_at is None:
            raise VaultHTTPError(400, "lease is not renewable")
        now = self.now()
        wanted = parse_duration(body.get("increment"), tok.ttl)
        cap = tok.issued_at + tok.max_ttl - now
        warnings = None
        if wanted > cap:
            warnings = [f'TTL of "{int(wanted)}s" exceeded the effective max_ttl of "{int(cap)}s"; '
                        "TTL value is capped accordingly"]
        granted = max(0.0, min(wanted, cap))
        tok.expires_at = now + granted
        block = self._auth_block(tok)
        block["lease_duration"] = int(granted)
        return self._envelope(auth=block, warnings=warnings)

    def _enable_mount(self, mount: str, body: dict[str, Any]) -> tuple[int, None]:
        if mount in self.mounts:
            raise VaultHTTPError(400, f"path is already in use at {mount}/")
        kind = str(body.get("type", ""))
        options = {k: str(v) for k, v in (body.get("options") or {}).items()}
        if kind == "kv-v2":
            kind, options = "kv", {**options, "version": "2"}
        if kind not in ("kv", "database"):
            raise VaultHTTPError(400, f"plugin not found in the catalog: {kind}")
        if kind == "kv":
            options.setdefault("version", "1")
        self.mounts[mount] = (kind, options)
        return 204, None

    # ----- KV v1 -------------------------------------------------------------------------------
    def _kv1(self, method: str, mount: str, rest: str, body: dict[str, Any]
             ) -> tuple[int, dict[str, Any] | None]:
        store = self.kv1.setdefault(mount, {})
        if method == "GET":
            if rest not in store:
                raise VaultHTTPError(404)
            return 200, self._envelope(dict(store[rest]), lease_duration=KV1_LEASE_DURATION)
        if method in ("POST", "PUT"):
            store[rest] = dict(body)
            return 204, None
        if method == "DELETE":
            store.pop(rest, None)
            return 204, None
        if method == "LIST":
            return self._list(list(store), rest)
        raise VaultHTTPError(405, "unsupported operation")

    def _list(self, keys: list[str], prefix: str) -> tuple[int, dict[str, Any]]:
        prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        out: set[str] = set()
        for key in keys:
            if key.startswith(prefix):
                tail = key[len(prefix):]
                out.add(tail.split("/", 1)[0] + "/" if "/" in tail else tail)
        if not out:
            raise VaultHTTPError(404)
        return 200, self._envelope({"keys": sorted(out)})

    # ----- KV v2 -------------------------------------------------------------------------------
    def _kv2(self, method: str, mount: str, rest: str, query: dict[str, list[str]], body: dict[str, Any]
             ) -> tuple[int, dict[str, Any] | None]:
        store = self.kv2.setdefault(mount, {})
        kind, _, sub = rest.partition("/")
        if kind == "data" and method == "GET":
            versions = store.get(sub)
            if not versions:
                raise VaultHTTPError(404)
            try:
                wanted = int(query.get("version", ["0"])[0] or 0)
            except ValueError as exc:
                raise VaultHTTPError(400, "invalid version") from exc
            if wanted < 0 or wanted > len(versions):
                raise VaultHTTPError(404)
            entry = versions[(wanted or len(versions)) - 1]
            meta = self._version_meta(entry)
            if entry["deletion_time"] or entry["destroyed"]:
                # Vault answers 404 with the metadata so clients can tell "deleted" from "never existed"
                return 404, {"data": {"data": None, "metadata": meta}}
            return 200, self._envelope({"data": dict(entry["data"]), "metadata": meta})
        if kind == "data" and method in ("POST", "PUT"):
            versions = store.setdefault(sub, [])
            cas = (body.get("options") or {}).get("cas")
            if cas is not None and int(cas) != len(versions):
                raise VaultHTTPError(400, "check-and-set parameter did not match the current version")
            data = body.get("data")
            if not isinstance(data, dict):
                raise VaultHTTPError(400, "no data provided")
            entry = {"data": dict(data), "created_time": _rfc3339(self.now()), "deletion_time": "",
                     "destroyed": False, "version": len(versions) + 1}
            versions.append(entry)
            return 200, self._envelope(self._version_meta(entry))
        if kind == "data" and method == "DELETE":
            versions = store.get(sub)
            if versions:
                versions[-1]["deletion_time"] = _rfc3339(self.now())
            return 204, None
        if kind == "metadata" and method == "GET":
            versions = store.get(sub)
            if not versions:
                raise VaultHTTPError(404)
            return 200, self._envelope({
                "cas_required": False, "created_time": versions[0]["created_time"],
                "current_version": len(versions), "custom_metadata": None, "delete_version_after": "0s",
                "max_versions": 0, "oldest_version": 0, "updated_time": versions[-1]["created_time"],
                "versions": {str(v["version"]): {"created_time": v["created_time"],
                                                 "deletion_time": v["deletion_time"],
                                                 "destroyed": v["destroyed"]} for v in versions}})
        if kind == "metadata" and method == "LIST":
            return self._list(list(store), sub)
        if kind == "metadata" and method == "DELETE":
            store.pop(sub, None)
            return 204, None
        raise VaultHTTPError(404)

    @staticmethod
    def _version_meta(entry: dict[str, Any]) -> dict[str, Any]:
        return {"created_time": entry["created_time"], "custom_metadata": None,
                "deletion_time": entry["deletion_time"], "destroyed": entry["destroyed"],
                "version": entry["version"]}

    # ----- database engine and leases ----------------------------------------------------------
    def _database(self, method: str, mount: str, rest: str, body: dict[str, Any]
                  ) -> tuple[int, dict[str, Any] | None]:
        kind, _, name = rest.partition("/")
        if kind == "creds" and method == "GET":
            role = self.db_roles.get(name)
            if role is None:
                raise VaultHTTPError(400, f"unknown role: {name}")
            now = self.now()
            lease = LeaseState(f"{mount}/creds/{name}/{secrets.token_hex(12)}", now, now + role.token_ttl,
                               now + role.token_max_ttl, role.token_ttl)
            self.leases[lease.lease_id] = lease
            creds = {"username": f"v-token-{name}-{secrets.token_hex(4)}",
                     "password": secrets.token_urlsafe(20)}
            return 200, self._envelope(creds, lease_id=lease.lease_id, lease_duration=int(role.token_ttl),
                                       renewable=True)
        if kind == "roles" and method in ("POST", "PUT"):
            self.db_roles[name] = Role(parse_duration(body.get("default_ttl"), 3600.0),
                                       parse_duration(body.get("max_ttl"), 86400.0))
            return 204, None
        raise VaultHTTPError(404)

    def _leases(self, op: str, body: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        lease_id = str(body.get("lease_id", ""))
        if not lease_id:
            raise VaultHTTPError(400, "missing lease ID")
        now = self.now()
        lease = self.leases.get(lease_id)
        if lease is not None and now >= lease.expires_at:
            del self.leases[lease_id]  # Vault revokes expired leases
            lease = None
        if op == "revoke":
            self.leases.pop(lease_id, None)
            return 204, None
        if lease is None:
            raise VaultHTTPError(400, "lease not found")
        if op == "lookup":
            return 200, self._envelope({
                "id": lease.lease_id, "issue_time": _rfc3339(lease.issued_at),
                "expire_time": _rfc3339(lease.expires_at),
                "last_renewal": _rfc3339(lease.last_renewal) if lease.last_renewal else None,
                "renewable": lease.renewable, "ttl": int(lease.expires_at - now)})
        if op == "renew":
            if not lease.renewable:
                raise VaultHTTPError(400, "lease is not renewable")
            wanted = parse_duration(body.get("increment"), lease.default_ttl)
            cap = lease.max_expires_at - now
            warnings = None
            if wanted > cap:
                warnings = [f'TTL of "{int(wanted)}s" exceeded the effective max_ttl of "{int(cap)}s"; '
                            "TTL value is capped accordingly"]
            granted = max(0.0, min(wanted, cap))
            lease.expires_at = now + granted
            lease.last_renewal = now
            return 200, self._envelope(None, lease_id=lease.lease_id, lease_duration=int(granted),
                                       renewable=True, warnings=warnings)
        raise VaultHTTPError(404)


class _Handler(BaseHTTPRequestHandler):
    state: VaultTestServer
    protocol_version = "HTTP/1.1"  # keep-alive, like Vault; every response sets Content-Length
    disable_nagle_algorithm = True  # else each keep-alive request waits ~40 ms for delayed ACKs

    def setup(self) -> None:
        super().setup()
        with self.state.lock:
            self.state.connections.add(self.connection)

    def finish(self) -> None:
        with self.state.lock:
            self.state.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read pytest's output
        pass

    def _serve(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        status: int
        payload: dict[str, Any] | None
        try:
            if not url.path.startswith("/v1/"):
                raise VaultHTTPError(404)
            try:
                body = json.loads(raw) if raw.strip() else {}
            except ValueError as exc:
                raise VaultHTTPError(400, "failed to parse JSON input") from exc
            if not isinstance(body, dict):
                raise VaultHTTPError(400, "failed to parse JSON input")
            query = parse_qs(url.query)
            method = self.command
            if method == "GET" and query.get("list", [""])[0] in ("true", "1"):
                method = "LIST"
            status, payload = self.state.handle(
                method, url.path[len("/v1/"):].strip("/"), query, body,
                self.headers.get("X-Vault-Token"), self.headers.get("X-Vault-Namespace"))
        except VaultHTTPError as exc:
            status, payload = exc.status, {"errors": exc.errors}
        if self.command == "HEAD":
            payload = None
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        if payload is not None:
            self.send_header("Content-Type", "application/json")  # exactly: hvac checks equality
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_LIST = do_HEAD = _serve


@dataclass(frozen=True)
class VaultTarget:
    """What the tests talk to: the test server (``server`` set) or a real ``vault server -dev``."""

    address: str
    root_token: str
    server: VaultTestServer | None = None

    def __iter__(self) -> Iterator[str]:  # unpacks as (address, root_token)
        return iter((self.address, self.root_token))


def real_vault_from_env() -> VaultTarget | None:
    addr, token = os.environ.get("VAULT_ADDR"), os.environ.get("VAULT_TOKEN")
    return VaultTarget(addr, token) if addr and token else None


@pytest.fixture
def vault() -> Iterator[VaultTarget]:
    """A Vault to talk to: ``VAULT_ADDR``/``VAULT_TOKEN`` if set, else a fresh test server (stopped after)."""
    real = real_vault_from_env()
    if real is not None:
        yield real
        return
    server = VaultTestServer().start()
    try:
        yield VaultTarget(server.address, server.root_token, server)
    finally:
        server.stop()


@pytest.fixture
def vault_server(vault: VaultTarget) -> VaultTestServer:
    """The test server itself, for tests that need its knobs (roles, clock, stop); skipped on real Vault."""
    if vault.server is None:
        pytest.skip("needs the Vault test server (uses its roles, clock or stop)")
    return vault.server
