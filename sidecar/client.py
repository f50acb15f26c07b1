"""``SidecarClient``: what an application imports to read secrets from the sidecar.

Why ``http.client`` over ``AF_UNIX`` with keep-alive and not httpx: a read must cost well under a
millisecond end to end, and httpx over a Unix socket adds 0.25–0.9 ms per call, ``http.client`` ~0.08.

The token is invisible to callers: the client asks for one on first use, reuses it, asks again when
less than 20 % of its lifetime is left, and once more (then gives up) if the sidecar answers 401 (a
restart with a new key, a revocation). A connection the server closed while idle is reopened and the
request retried once (every call here is safe to repeat). One connection per thread; the token is
shared. Errors are the project's exceptions (``Unauthorized``, ``Forbidden``, ``SecretNotFound``,
``BackendUnavailable``…); their messages never contain a value or a token.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

from depthguard.errors import (
    AccessError,
    BackendUnavailable,
    DepthguardError,
    Forbidden,
    SecretNotFound,
    Unauthorized,
    UsageError,
)

__all__ = ["SidecarClient", "SidecarError", "UnixHTTPConnection"]


class SidecarError(DepthguardError):
    """The sidecar answered something this client does not understand (or an unexpected status)."""


class UnixHTTPConnection(http.client.HTTPConnection):
    """``http.client`` over a Unix stream socket (the host name is only used for the Host header)."""

    def __init__(self, path: str | Path, timeout: float = 10.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def _error(status: int, body: bytes) -> DepthguardError:
    """The project exception for an error answer (``{"error": {"code", "message"}}``)."""
    try:
        err = json.loads(body)["error"]
        code, message = str(err["code"]), str(err["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "", f"HTTP {status}"
    if status == 401:
        return Unauthorized(code or "unauthorized", message)
    if status == 403:
        return Forbidden(code or "forbidden", message)
    if status == 429:
        return AccessError("rate_limited", message)
    if status == 404:
        return SecretNotFound(message)
    if status == 503:
        return BackendUnavailable(message)
    if status in (400, 413, 422, 431):
        return UsageError(message)
    return SidecarError(f"sidecar answered HTTP {status}: {message}")


class SidecarClient:
    """Read secrets from a depthguard sidecar over its Unix socket."""

    def __init__(
        self,
        socket_path: str | Path,
        *,
        role: str | None = None,
        timeout: float = 10.0,
        refresh_fraction: float = 0.2,
        now: Callable[[], float] = time.time,
    ) -> None:
        """``role`` is needed only when the calling uid may use several roles. A token is refreshed
        when less than ``refresh_fraction`` of its lifetime remains."""
        self.socket_path = str(socket_path)
        self.role = role
        self.timeout = timeout
        self.refresh_fraction = refresh_fraction
        self._now = now
        self._local = threading.local()
        self._lock = threading.Lock()
        self._token: str | None = None
        self._refresh_at = 0.0
        self._expires_at = 0.0

    def __repr__(self) -> str:  # never the token
        return f"SidecarClient({self.socket_path!r}, role={self.role!r})"

    def __enter__(self) -> SidecarClient:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close this thread's connection (other threads' close when they are collected)."""
        conn: UnixHTTPConnection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # ----------------------------------------------------------------------------- transport

    def _conn(self) -> UnixHTTPConnection:
        conn: UnixHTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = UnixHTTPConnection(self.socket_path, self.timeout)
        return conn

    def _request(self, method: str, path: str, *, body: bytes | None = None,
                 token: str | None = None) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if token is not None:
            headers["Authorization"] = "Bearer " + token
        for attempt in (1, 2):
            conn = self._conn()
            reused = conn.sock is not None
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                conn.close()
                if reused and attempt == 1:
                    continue  # the server closed an idle keep-alive connection: once more, fresh
                raise BackendUnavailable(f"sidecar at {self.socket_path} closed the connection") from exc
            except (FileNotFoundError, ConnectionRefusedError, PermissionError) as exc:
                conn.close()
                raise BackendUnavailable(
                    f"cannot connect to the sidecar at {self.socket_path}: {exc.strerror or exc}") from exc
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise BackendUnavailable(
                    f"talking to the sidecar at {self.socket_path} failed: {type(exc).__name__}") from exc
            if resp.will_close:
                conn.close()
            return resp.status, data
        raise AssertionError("unreachable")  # pragma: no cover

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        status, data = self._request(method, path, **kw)
        if status >= 300:
            raise _error(status, data)
        try:
            return json.loads(data) if data else None
        except ValueError:
            raise SidecarError(f"sidecar sent invalid JSON for {method} {path}") from None

    # ----------------------------------------------------------------------------- tokens

    def token(self, role: str | None = None) -> str:
        """A fresh token for the calling uid (and ``role``, default the client's); it becomes the
        token this client uses."""
        body = json.dumps({"role": role or self.role} if (role or self.role) else {}).encode()
        answer = self._json("POST", "/v1/token", body=body)
        try:
            token, expires_at = str(answer["token"]), float(answer["expires_at"])
        except (TypeError, KeyError, ValueError):
            raise SidecarError("sidecar sent a token answer without token/expires_at") from None
        now = self._now()
        with self._lock:
            self._token = token
            self._expires_at = expires_at
            self._refresh_at = expires_at - max(expires_at - now, 0.0) * self.refresh_fraction
        return token

    def _bearer(self) -> str:
        with self._lock:
            token, refresh_at = self._token, self._refresh_at
        if token is None or self._now() >= refresh_at:
            token = self.token()
        return token

    def _authed(self, method: str, path: str) -> tuple[int, bytes]:
        status, data = self._request(method, path, token=self._bearer())
        if status == 401:  # revoked, expired early, or the sidecar restarted with a new key: once more
            status, data = self._request(method, path, token=self.token())
        return status, data

    def revoke(self) -> None:
        """Revoke the current token (e.g. at shutdown); the next call obtains a new one."""
        with self._lock:
            token, self._token = self._token, None
        if token is not None:
            status, data = self._request("POST", "/v1/token/revoke", token=token)
            if status != 204 and status != 401:
                raise _error(status, data)

    # ----------------------------------------------------------------------------- secrets

    def secret(self, name: str) -> dict[str, Any]:
        """The whole answer for ``name`` (``name``, ``value`` as bytes, ``version``, ``expires_at``,
        ``backend``)."""
        status, data = self._authed("GET", "/v1/secrets/" + quote(name, safe=""))
        if status != 200:
            raise _error(status, data)
        try:
            answer: dict[str, Any] = json.loads(data)
            text = answer["value"]
            encoding = answer.get("encoding", "utf-8")
        except (ValueError, KeyError, TypeError):
            raise SidecarError(f"sidecar sent an invalid answer for secret {name!r}") from None
        answer["value"] = base64.b64decode(text) if encoding == "base64" else text.encode("utf-8")
        return answer

    def get(self, name: str) -> bytes:
        """The value of secret ``name``."""
        value: bytes = self.secret(name)["value"]
        return value

    def names(self) -> list[str]:
        """The secret names this uid's token may read."""
        status, data = self._authed("GET", "/v1/secrets")
        if status != 200:
            raise _error(status, data)
        names: list[str] = json.loads(data)["secrets"]
        return names
