"""``sidecar/client.py`` and ``depthguard sidecar token|get``: transparent tokens, keep-alive, errors."""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import pytest
import yaml

from depthguard.errors import BackendUnavailable, Forbidden, SecretNotFound
from sidecar.client import SidecarClient
from sidecar.config import load_config
from sidecar.server import SidecarServer
from tests.sidecar.conftest import IN_SCOPE, SECRETS, Running, StartSidecar, cli

pytestmark = pytest.mark.integration


def issued(sc: Running) -> int:
    _, _, metrics = sc.request("GET", "/metrics")
    m = re.search(rb'depthguard_sidecar_tokens_issued_total\{role="app"\} (\d+)', metrics)
    return int(m.group(1)) if m else 0


def test_get_and_names(sc: Running) -> None:
    with sc.client() as client:
        assert client.get("db-password") == SECRETS["db-password"]
        assert client.get("binary") == SECRETS["binary"]  # base64 on the wire, bytes here
        assert client.names() == IN_SCOPE
        answer = client.secret("api-key")
        assert answer["version"] == "1" and answer["backend"] == "local"
    assert issued(sc) == 1  # one token, reused


def test_one_connection_is_kept_alive(sc: Running) -> None:
    with sc.client() as client:
        client.get("db-password")
        conn = client._local.conn
        sock = conn.sock
        for _ in range(20):
            client.get("db-password")
        assert client._local.conn is conn and conn.sock is sock


def test_token_is_refreshed_when_less_than_20_percent_is_left(sc: Running) -> None:
    clock = [time.time()]
    client = sc.client(now=lambda: clock[0])
    client.get("db-password")
    assert issued(sc) == 1
    clock[0] += 0.79 * 600
    client.get("db-password")
    assert issued(sc) == 1
    clock[0] += 0.02 * 600  # 81 % of the 10-minute lifetime gone
    client.get("db-password")
    assert issued(sc) == 2


def test_a_401_gets_one_new_token(sc: Running) -> None:
    client = sc.client()
    client.get("db-password")
    token = client._token
    assert token is not None
    assert sc.request("POST", "/v1/token/revoke", token=token)[0] == 204  # revoked behind its back
    assert client.get("db-password") == SECRETS["db-password"]
    assert client._token != token and issued(sc) == 2


def test_errors_are_project_exceptions(sc: Running, sock_dir: Path) -> None:
    client = sc.client()
    with pytest.raises(Forbidden) as exc:
        client.get("other-team")
    assert exc.value.reason == "forbidden" and "other-team-secret" not in str(exc.value)
    with pytest.raises(Forbidden):
        client.get("no-such-secret")
    with pytest.raises(BackendUnavailable, match="cannot connect"):
        SidecarClient(sock_dir / "absent.sock").get("db-password")


def test_not_found_in_scope(start_sidecar: StartSidecar) -> None:
    sc = start_sidecar(
        secrets={**{n: {"ref": f"local:{n}"} for n in SECRETS}, "ghost": {"ref": "local:ghost"}},
        roles={"app": {"uids": [os.getuid()], "secrets": ["ghost"]}},
    )
    with pytest.raises(SecretNotFound):
        sc.client().get("ghost")


def test_reconnects_after_the_server_restarts(sc: Running) -> None:
    client = sc.client()
    assert client.get("db-password") == SECRETS["db-password"]
    sc.server.stop()
    sc.thread.join(10)
    server = SidecarServer(load_config(sc.config_file))  # same socket, same key file
    t = threading.Thread(target=server.serve, daemon=True)
    t.start()
    try:
        assert server.ready.wait(10)
        assert client.get("db-password") == SECRETS["db-password"]  # stale connection replaced
    finally:
        server.stop()
        t.join(10)


def test_threads_share_the_token_not_the_connection(sc: Running) -> None:
    client = sc.client()
    client.token()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(30):
                assert client.get("api-key") == SECRETS["api-key"]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and issued(sc) == 1


def test_client_cost_per_cached_read(sc: Running) -> None:
    client = sc.client()
    client.get("db-password")
    n = 300
    t0 = time.perf_counter()
    for _ in range(n):
        client.get("db-password")
    per_call = (time.perf_counter() - t0) / n
    print(f"client.get round trip: {per_call * 1e3:.3f} ms")
    assert per_call < 0.005  # ~0.15 ms here; generous for a loaded CI box


def test_repr_never_shows_the_token(sc: Running) -> None:
    client = sc.client()
    token = client.token()
    assert token not in repr(client)


# ------------------------------------------------------------------------------------ CLI


def test_cli_get_writes_exactly_the_value(sc: Running) -> None:
    r = cli("sidecar", "get", "binary", "--socket", str(sc.socket))
    assert r.returncode == 0 and r.stdout == SECRETS["binary"] and r.stderr == b""


def test_cli_token(sc: Running) -> None:
    r = cli("sidecar", "token", "--socket", str(sc.socket))
    assert r.returncode == 0, r.stderr
    token = r.stdout.decode()
    assert token.endswith("\n") and token.count(".") == 2
    status, body = sc.json("GET", "/v1/secrets", token=token.strip())
    assert status == 200 and body["secrets"] == IN_SCOPE
    r = cli("sidecar", "token", "--role", "nope", "--socket", str(sc.socket))
    assert r.returncode == 2 and r.stdout == b"" and len(r.stderr.splitlines()) == 1


def test_cli_socket_from_the_environment(sc: Running) -> None:
    env = {**os.environ, "DEPTHGUARD_SIDECAR_SOCKET": str(sc.socket)}
    r = cli("sidecar", "get", "db-password", env=env)
    assert r.returncode == 0 and r.stdout == SECRETS["db-password"]


@pytest.mark.parametrize("name, message", [("other-team", "not allowed"), ("nope", "not allowed")])
def test_cli_get_refusals_are_one_line_exit_2(sc: Running, name: str, message: str) -> None:
    r = cli("sidecar", "get", name, "--socket", str(sc.socket))
    assert r.returncode == 2 and r.stdout == b""
    err = r.stderr.decode().strip()
    assert message in err and len(err.splitlines()) == 1
    for value in SECRETS.values():
        assert value not in r.stderr


def test_cli_get_without_a_server(sock_dir: Path) -> None:
    r = cli("sidecar", "get", "x", "--socket", str(sock_dir / "none.sock"))
    assert r.returncode == 2 and b"cannot connect to the sidecar" in r.stderr


def test_cli_exec_passes_secrets_in_the_environment(sc: Running) -> None:
    doc = yaml.safe_load(sc.config_file.read_text())
    doc["secrets"] = {"db-password": doc["secrets"]["db-password"]}  # text only: env vars cannot hold NUL
    doc["roles"]["app"]["secrets"] = ["db-password"]
    cfg = sc.root / "exec.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    r = cli("sidecar", "exec", "--config", str(cfg), "--", "python3", "-c",
            "import os, sys; print(os.environ['DB_PASSWORD']); sys.exit(7)")
    assert r.returncode == 7, r.stderr
    assert r.stdout.decode().strip() == SECRETS["db-password"].decode()


def test_cli_help_lists_the_commands() -> None:
    r = cli("sidecar", "--help")
    assert r.returncode == 0
    for command in ("run", "token", "get", "exec"):
        assert re.search(rf"^\s+{command}\s", r.stdout.decode(), re.M), command
