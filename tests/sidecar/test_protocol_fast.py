"""Reads the cache can answer at once are answered inside the protocol (no asyncio task, no ASGI
messages). These tests speak raw HTTP/1.x on the Unix socket and check that this shortcut keeps
everything a client can see: bytes, order of pipelined responses, keep-alive and close, metrics."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from sidecar.protocol import ProtocolLimits, make_protocol
from sidecar.server import bind_unix_socket
from tests.sidecar.conftest import SECRETS, Running, StartSidecar


def _connect(sc: Running) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(str(sc.socket))
    return sock


def _read_responses(sock: socket.socket, count: int) -> list[tuple[bytes, dict[bytes, bytes], bytes]]:
    """``count`` responses (status line, headers, body; bodies framed by content-length)."""
    buf = b""
    out: list[tuple[bytes, dict[bytes, bytes], bytes]] = []
    while len(out) < count:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {len(out)} responses"
            buf += chunk
        head, _, buf = buf.partition(b"\r\n\r\n")
        status, *lines = head.split(b"\r\n")
        headers = {k.lower(): v for k, _, v in (line.partition(b": ") for line in lines)}
        size = int(headers[b"content-length"])
        while len(buf) < size:
            chunk = sock.recv(65536)
            assert chunk, "connection closed inside a body"
            buf += chunk
        out.append((status, headers, buf[:size]))
        buf = buf[size:]
    return out


def _get(path: str, token: str, extra: str = "", version: str = "1.1") -> bytes:
    return (f"GET {path} HTTP/{version}\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n"
            f"{extra}\r\n").encode()


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, TimeoutError):
        return False


def test_pipelined_reads_are_answered_in_order_across_both_paths(start_sidecar: StartSidecar) -> None:
    sc = start_sidecar()
    token = sc.token()
    names = ["api-key", "db-password", "api-token", "db-password", "other-team", "binary", "api-key"]
    sc.server.service._state.cache.invalidate("local:api-key")
    with _connect(sc) as sock:
        # The first read misses the cache (the ASGI path, awaiting the backend); the reads queued
        # behind it must wait their turn even where the cache could answer at once.
        sock.sendall(b"".join(_get(f"/v1/secrets/{n}", token) for n in names))
        got = _read_responses(sock, len(names))
    for name, (status, _, body) in zip(names, got, strict=True):
        if name == "other-team":
            assert status == b"HTTP/1.1 403 Forbidden"
            continue
        assert status == b"HTTP/1.1 200 OK", (name, body)
        doc = json.loads(body)
        assert doc["name"] == name
        if doc["encoding"] == "utf-8":
            assert doc["value"].encode() == SECRETS[name]


def test_shortcut_and_asgi_path_answer_the_same_bytes(sc: Running) -> None:
    token = sc.token()
    sc.request("GET", "/v1/secrets/db-password", token=token)  # now cached
    with _connect(sc) as sock:
        sock.sendall(_get("/v1/secrets/db-password", token))  # bodiless: answered by the protocol
        fast = _read_responses(sock, 1)[0]
        # A chunked (empty) body makes the same request go through the task and the app.
        sock.sendall(_get("/v1/secrets/db-password", token, "Transfer-Encoding: chunked\r\n") + b"0\r\n\r\n")
        slow = _read_responses(sock, 1)[0]
        sock.sendall(_get("/v1/secrets/other-team", token))
        fast_403 = _read_responses(sock, 1)[0]
        sock.sendall(_get("/v1/secrets/other-team", token, "Transfer-Encoding: chunked\r\n") + b"0\r\n\r\n")
        slow_403 = _read_responses(sock, 1)[0]
    assert fast == slow and fast[0] == b"HTTP/1.1 200 OK"
    assert fast_403 == slow_403 and fast_403[0] == b"HTTP/1.1 403 Forbidden"
    reads = [r for r in sc.audit_records() if r["event"] == "secret.read"]
    assert len(reads) == 3  # one per 200, whichever path served it


def test_http10_and_connection_close_end_the_connection(sc: Running) -> None:
    token = sc.token()
    sc.request("GET", "/v1/secrets/db-password", token=token)
    for request in (_get("/v1/secrets/db-password", token, version="1.0"),
                    _get("/v1/secrets/db-password", token, "Connection: close\r\n")):
        with _connect(sc) as sock:
            sock.sendall(request)
            status, headers, body = _read_responses(sock, 1)[0]
            assert status == b"HTTP/1.1 200 OK" and json.loads(body)["name"] == "db-password"
            assert headers[b"connection"] == b"close"
            assert _closed(sock)


def test_keep_alive_connection_serves_many_reads(sc: Running) -> None:
    token = sc.token()
    with _connect(sc) as sock:
        for _ in range(50):
            sock.sendall(_get("/v1/secrets/api-token", token))
            status, headers, body = _read_responses(sock, 1)[0]
            assert status == b"HTTP/1.1 200 OK" and b"connection" not in headers
            assert json.loads(body)["value"] == SECRETS["api-token"].decode()
    assert sc.server.service.metrics.requests.value("/v1/secrets/{name}", "GET", "200") == 50


def test_encoded_paths_decode_as_uvicorn_decodes_them(sc: Running) -> None:
    token = sc.token()
    for path, status in (("/v1/secrets/db%2Dpassword", b"HTTP/1.1 200 OK"),
                         ("/v1/secrets/db-password?version=1", b"HTTP/1.1 200 OK"),
                         ("/v1/secrets/..%2Fother-team", b"HTTP/1.1 403 Forbidden"),
                         ("/v1/secrets/db-password%00", b"HTTP/1.1 403 Forbidden")):
        with _connect(sc) as sock:
            sock.sendall(_get(path, token))
            got = _read_responses(sock, 1)[0]
        assert got[0] == status, (path, got)


def test_without_a_token_the_shortcut_refuses_like_the_app(sc: Running) -> None:
    with _connect(sc) as sock:
        sock.sendall(b"GET /v1/secrets/db-password HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = _read_responses(sock, 1)[0]
    assert status == b"HTTP/1.1 401 Unauthorized"
    assert json.loads(body)["error"]["code"] == "unauthorized"
    assert headers[b"content-type"] == b"application/json"


def test_nothing_is_answered_after_a_connection_close_response(sc: Running) -> None:
    token = sc.token()
    with _connect(sc) as sock:
        sock.sendall(_get("/v1/secrets/db-password", token, "Connection: close\r\n")
                     + _get("/v1/secrets/api-key", token))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 ") == 1 and b'"name":"db-password"' in data
    reads = [r["secret"] for r in sc.audit_records() if r["event"] == "secret.read"]
    assert reads == ["db-password"]  # the request after the close was neither served nor recorded


class _Fixed:
    """A FastReader answering every read at once, so only the protocol is under test."""

    def answer_now(self, peer: object, path: str, authorization: str | None) -> tuple[int, bytes, list[Any]]:
        body = json.dumps({"path": path}).encode()
        length = str(len(body)).encode()
        return 200, body, [(b"content-type", b"application/json"), (b"content-length", length)]


async def _not_found(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})


@pytest.fixture
def short_keep_alive(sock_dir: Path) -> Iterator[Path]:
    """A bare uvicorn server with the sidecar protocol, a fixed fast answer and a 1 s keep-alive."""
    path = sock_dir / "ka.sock"
    sock, _ = bind_unix_socket(path, 0o600)
    config = uvicorn.Config(_not_found, http=make_protocol(ProtocolLimits(), _Fixed()), loop="uvloop",
                            lifespan="off", log_config=None, access_log=False, timeout_keep_alive=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    yield path
    server.should_exit = True
    thread.join(10)
    sock.close()


def _raw(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(str(path))
    return sock


def test_an_idle_connection_is_closed_after_the_keep_alive_timeout(short_keep_alive: Path) -> None:
    with _raw(short_keep_alive) as sock:
        sock.sendall(b"GET /v1/secrets/x HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_responses(sock, 1)[0][0] == b"HTTP/1.1 200 OK"
        t0 = time.monotonic()
        assert sock.recv(1) == b""  # closed by the server...
        assert 0.8 < time.monotonic() - t0 < 3  # ...after about the 1 s timeout


def test_a_busy_connection_outlives_the_keep_alive_timeout(short_keep_alive: Path) -> None:
    with _raw(short_keep_alive) as sock:
        t_end = time.monotonic() + 2.5
        n = 0
        while time.monotonic() < t_end:  # a read every 0.3 s: never idle for the 1 s timeout
            sock.sendall(b"GET /v1/secrets/x HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _read_responses(sock, 1)[0][0] == b"HTTP/1.1 200 OK"
            n += 1
            time.sleep(0.3)
        # Interleave a request the fast path does not take (a 404 from the app) and go idle again.
        sock.sendall(b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_responses(sock, 1)[0][0] == b"HTTP/1.1 404 Not Found"
        t0 = time.monotonic()
        assert sock.recv(1) == b""
        assert 0.8 < time.monotonic() - t0 < 3
    assert n >= 7
