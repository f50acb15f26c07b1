"""``sidecar/server.py`` and ``depthguard sidecar run``: the socket's safety, signals, shutdown, and
issue 6's acceptance run (a new user's shell session against ``run --dev``)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.audit_verify import verify_file
from broker.backends.interface import Health, Lease, SecretBackend, SecretRef, SecretValue
from depthguard.errors import ConfigError
from sidecar.client import SidecarClient
from sidecar.config import load_config
from sidecar.server import SidecarServer, _remove_if_ours, bind_unix_socket, check_socket_dir
from tests.sidecar.conftest import Running, StartSidecar, base_config, cli, make_store, write_config

pytestmark = pytest.mark.integration


def mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


# ------------------------------------------------------------------------------------ the socket file


def test_socket_is_created_with_the_configured_mode_whatever_the_umask(
        start_sidecar: StartSidecar, sock_dir: Path) -> None:
    old = os.umask(0)
    try:
        sc = start_sidecar(listen={"socket": str(sock_dir / "m.sock"), "mode": "0600"})
    finally:
        os.umask(old)
    assert stat.S_ISSOCK(os.lstat(sc.socket).st_mode) and mode(sc.socket) == 0o600
    assert sorted(p.name for p in sock_dir.iterdir()) == ["m.sock"]  # no temporary names left behind


def test_default_mode_is_0660(sc: Running) -> None:
    assert mode(sc.socket) == 0o660


@pytest.mark.parametrize("dir_mode", [0o777, 0o1777, 0o773])
def test_world_writable_directory_is_refused(sock_dir: Path, dir_mode: int) -> None:
    d = sock_dir / "ww"
    d.mkdir()
    d.chmod(dir_mode)
    with pytest.raises(ConfigError, match="world-writable"):
        bind_unix_socket(d / "s.sock", 0o660)
    assert list(d.iterdir()) == []


def test_directory_of_another_user_is_refused(sock_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to chown a directory to another uid")
    d = sock_dir / "theirs"
    d.mkdir(mode=0o755)
    os.chown(d, 12345, 12345)
    with pytest.raises(ConfigError, match="belongs to uid 12345"):
        check_socket_dir(d / "s.sock")


def test_missing_directory_and_long_path_are_refused(sock_dir: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        check_socket_dir(sock_dir / "nope" / "s.sock")
    with pytest.raises(ConfigError, match="longer than 107 bytes"):
        check_socket_dir(sock_dir / ("x" * 120 + ".sock"))


def test_stale_socket_is_replaced(sock_dir: Path) -> None:
    path = sock_dir / "stale.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # a crash leaves the file behind, nobody listening
    sock, inode = bind_unix_socket(path, 0o660)
    try:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.connect(str(path))  # the new listener answers at the old name
        probe.close()
        assert os.lstat(path).st_ino == inode[1] and mode(path) == 0o660
    finally:
        sock.close()
        _remove_if_ours(path, inode)
    assert not path.exists()


def test_live_socket_is_not_stolen(sc: Running) -> None:
    with pytest.raises(ConfigError, match="another server is already listening"):
        bind_unix_socket(sc.socket, 0o660)
    assert sc.request("GET", "/v1/health")[0] == 200


def test_non_socket_file_is_not_replaced(sock_dir: Path) -> None:
    path = sock_dir / "file.sock"
    path.write_text("precious")
    with pytest.raises(ConfigError, match="not a socket"):
        bind_unix_socket(path, 0o660)
    assert path.read_text() == "precious"


def test_shutdown_removes_only_our_own_socket(sock_dir: Path) -> None:
    path = sock_dir / "ours.sock"
    sock, inode = bind_unix_socket(path, 0o660)
    sock.close()
    os.unlink(path)
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(str(path))  # someone else's socket now has the name
    _remove_if_ours(path, inode)
    assert path.exists()
    other.close()


def test_stop_removes_the_socket_and_writes_stop(start_sidecar: StartSidecar) -> None:
    sc = start_sidecar()
    sc.request("GET", "/v1/health")
    sc.server.stop()
    sc.thread.join(10)
    assert not sc.socket.exists()
    records = [json.loads(line) for line in sc.audit_file.read_text().splitlines()]
    assert records[0]["event"] == "start" and records[-1]["event"] == "stop"
    assert verify_file(sc.audit_file).ok


# ------------------------------------------------------------------------------------ leases at shutdown


class LeasedBackend(SecretBackend):
    def __init__(self, name: str) -> None:
        self.name = name
        self.revoked: list[str] = []

    def read(self, ref: SecretRef) -> SecretValue:
        return SecretValue(b"dyn-cred", version="1", lease=Lease("lease-1", time.time(), 3600.0))

    def revoke(self, lease: Lease) -> None:
        self.revoked.append(lease.lease_id)

    def health(self) -> Health:
        return Health(True)


@pytest.mark.parametrize("revoke", [True, False])
def test_leases_are_revoked_at_shutdown_when_configured(
        start_sidecar: StartSidecar, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, revoke: bool) -> None:
    import sidecar.service

    leased = LeasedBackend("dyn")
    real = sidecar.service.build_backends  # type: ignore[attr-defined]

    def build(cfg: Any) -> dict[str, SecretBackend]:
        built = real(cfg)
        built.pop("dyn").close()
        return {**built, "dyn": leased}

    monkeypatch.setattr(sidecar.service, "build_backends", build)
    sc = start_sidecar(
        backends={"dyn": {"type": "local", "path": str(tmp_path / "sc0" / "store")}},
        secrets={"db-creds": {"ref": "dyn:database/creds/app"}},
        roles={"app": {"uids": [os.getuid()], "secrets": ["db-creds"]}},
        revoke_on_shutdown=revoke,
    )
    body = sc.json("GET", "/v1/secrets/db-creds", token=sc.token())[1]
    assert body["value"] == "dyn-cred" and body["expires_at"] > time.time()
    sc.server.stop()
    sc.thread.join(10)
    assert leased.revoked == (["lease-1"] if revoke else [])


# ------------------------------------------------------------------------------------ the process


class Proc:
    """``depthguard sidecar run ...`` as a subprocess, with its stdout/stderr collected."""

    def __init__(self, *args: str) -> None:
        self.started = time.monotonic()
        self.p = subprocess.Popen([sys.executable, "-m", "depthguard", "sidecar", "run", *args],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.out: list[bytes] = []
        self.err: list[bytes] = []
        threading.Thread(target=self._pump, args=(self.p.stdout, self.out), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.p.stderr, self.err), daemon=True).start()

    @staticmethod
    def _pump(stream: Any, into: list[bytes]) -> None:
        for line in stream:
            into.append(line)

    def wait_ready(self, sock: Path, timeout: float = 15.0) -> float:
        """Seconds from spawn until ``/v1/ready`` answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.p.poll() is not None:
                raise AssertionError(f"sidecar exited {self.p.returncode}: {b''.join(self.err).decode()}")
            try:
                status = _get(sock, "/v1/ready")[0]
                if status == 200:
                    return time.monotonic() - self.started
            except OSError:
                pass
            time.sleep(0.01)
        raise AssertionError("sidecar not ready: " + b"".join(self.err).decode())

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.p.poll() is None:
            self.p.send_signal(sig)
        return self.p.wait(timeout)

    def stdout(self) -> str:
        return b"".join(self.out).decode()

    def stderr(self) -> str:
        return b"".join(self.err).decode()


def _get(sock: Path, path: str, token: str | None = None) -> tuple[int, bytes]:
    from sidecar.client import UnixHTTPConnection

    conn = UnixHTTPConnection(sock, timeout=5)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in started:
        if p.p.poll() is None:
            p.p.kill()
            p.p.wait(10)


def test_sighup_reloads_and_sigterm_shuts_down_cleanly(tmp_path: Path, sock_dir: Path,
                                                       procs: list[Proc]) -> None:
    root = tmp_path
    make_store(root / "store")
    sock = sock_dir / "p.sock"
    cfg_file = root / "sidecar.yaml"
    write_config(cfg_file, base_config(root, sock))
    proc = Proc("--config", str(cfg_file))
    procs.append(proc)
    startup = proc.wait_ready(sock)
    assert startup < 5.0, startup
    client = SidecarClient(sock)
    assert client.get("db-password") == b"pg-pass-7f3a91"

    # a valid new config: the role loses db-password
    narrower = {"app": {"uids": [os.getuid()], "secrets": ["api-*"]}}
    write_config(cfg_file, base_config(root, sock, roles=narrower))
    proc.p.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _get(sock, "/v1/secrets/db-password", client.token())[0] != 403:
        time.sleep(0.05)
    assert _get(sock, "/v1/secrets/db-password", client.token())[0] == 403
    assert client.get("api-key") == b"api-key-c0ffee"

    # a broken config: refused, the running one stays
    cfg_file.write_text("listen: {socket: /x, mode: '0666'}\n")
    proc.p.send_signal(signal.SIGHUP)
    time.sleep(1.0)
    assert client.get("api-key") == b"api-key-c0ffee"
    assert "config reload failed" in proc.stderr() and "world-writable" in proc.stderr()

    assert proc.stop(signal.SIGTERM) == 0
    assert not sock.exists()
    records = [json.loads(line) for line in (root / "audit.jsonl").read_text().splitlines()]
    reloads = [(r["decision"]) for r in records if r["event"] == "config.reload"]
    assert reloads == ["allow", "deny"]
    assert records[-1]["event"] == "stop"
    assert verify_file(root / "audit.jsonl").ok
    for line in proc.stderr().splitlines():  # structured logs: one JSON object per line
        assert isinstance(json.loads(line), dict), line


def test_sigterm_drains_a_keep_alive_connection(tmp_path: Path, sock_dir: Path, procs: list[Proc]) -> None:
    make_store(tmp_path / "store")
    sock = sock_dir / "d.sock"
    write_config(tmp_path / "s.yaml", base_config(tmp_path, sock))
    proc = Proc("--config", str(tmp_path / "s.yaml"))
    procs.append(proc)
    proc.wait_ready(sock)
    client = SidecarClient(sock)
    assert client.get("db-password")  # an idle keep-alive connection stays open
    t0 = time.monotonic()
    assert proc.stop(signal.SIGINT) == 0
    assert time.monotonic() - t0 < 5  # idle connections do not hold up shutdown
    assert not sock.exists()


@pytest.mark.parametrize("args, message", [
    ((), "give --config FILE, or --dev"),
    (("--dev", "--config", "x.yaml"), "cannot be combined"),
    (("--store", "/tmp/x"), "--store is for --dev"),
    (("--config", "/nonexistent/sidecar.yaml"), "/nonexistent/sidecar.yaml: no such file"),
])
def test_run_usage_errors_are_one_line_exit_2(args: tuple[str, ...], message: str) -> None:
    r = cli("sidecar", "run", *args)
    assert r.returncode == 2, r.stderr
    err = r.stderr.decode().strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_run_refuses_an_unsafe_socket_directory(tmp_path: Path) -> None:
    ww = Path("/tmp") / f"dg-ww-{os.getpid()}"
    ww.mkdir(mode=0o777, exist_ok=True)
    ww.chmod(0o777)
    try:
        make_store(tmp_path / "store")
        write_config(tmp_path / "s.yaml", base_config(tmp_path, ww / "s.sock"))
        r = cli("sidecar", "run", "--config", str(tmp_path / "s.yaml"))
        assert r.returncode == 2
        err = r.stderr.decode().strip().splitlines()
        assert "world-writable" in err[-1] and err[-1].startswith("depthguard: ")
    finally:
        shutil.rmtree(ww, ignore_errors=True)


def test_config_errors_name_file_and_key(tmp_path: Path) -> None:
    doc = base_config(tmp_path, tmp_path / "s.sock")
    doc["roles"]["app"]["token_tll"] = "10m"
    (tmp_path / "s.yaml").write_text(json.dumps(doc))
    r = cli("sidecar", "run", "--config", str(tmp_path / "s.yaml"))
    assert r.returncode == 2
    assert f"{tmp_path / 's.yaml'}: roles.app.token_tll: unknown key" in r.stderr.decode()


# ------------------------------------------------------------------------------------ acceptance


def test_acceptance_dev_mode_as_a_new_user(sock_dir: Path, procs: list[Proc]) -> None:
    """Issue 6's acceptance, from a shell: ``run --dev``, put a secret, get a token, read it with curl;
    no token → 401; then the same store under a config whose role excludes a second secret → 403;
    the audit file (continued across both runs) verifies, and one edited byte is caught at its record."""
    store = sock_dir / "store"
    proc = Proc("--dev", "--store", str(store))
    procs.append(proc)
    sock = store / "sidecar.sock"
    startup = proc.wait_ready(sock)
    deadline = time.monotonic() + 5
    while "is ready on" not in proc.stdout() and time.monotonic() < deadline:
        time.sleep(0.02)
    quick = proc.stdout()
    assert f"is ready on {sock}" in quick and "curl" in quick and "--unix-socket" in quick
    assert "depthguard store put" in quick and "depthguard sidecar token" in quick

    # put a secret (after the sidecar started: dev mode picks it up)
    r = cli("store", "put", "db-password", "--store", str(store), input=b"hunter2-acceptance")
    assert r.returncode == 0, r.stderr
    assert cli("store", "put", "other", "--store", str(store), input=b"other-value").returncode == 0

    r = cli("sidecar", "token", "--socket", str(sock))
    assert r.returncode == 0, r.stderr
    token = r.stdout.decode().strip()
    assert token.count(".") == 2 and "\n" not in token

    curl = ["curl", "-s", "--unix-socket", str(sock)]
    out = subprocess.run([*curl, "-H", f"Authorization: Bearer {token}",
                          "http://localhost/v1/secrets/db-password"], capture_output=True, check=True)
    assert json.loads(out.stdout)["value"] == "hunter2-acceptance"
    r = cli("sidecar", "get", "db-password", "--socket", str(sock))
    assert r.returncode == 0 and r.stdout == b"hunter2-acceptance" and r.stderr == b""

    out = subprocess.run([*curl, "-w", "%{http_code}", "-o", "/dev/null",
                          "http://localhost/v1/secrets/db-password"], capture_output=True, check=True)
    assert out.stdout == b"401"
    # the token endpoint works from curl too, as the quick-start shows
    out = subprocess.run([*curl, "-X", "POST", "http://localhost/v1/token"], capture_output=True, check=True)
    assert json.loads(out.stdout)["role"] == "dev"
    assert proc.stop() == 0

    # the same store, served with a role that may read db-password only
    cfg_file = sock_dir / "sidecar.yaml"
    cfg_file.write_text(json.dumps({
        "listen": {"socket": str(sock)},
        "backends": {"local": {"type": "local", "path": str(store)}},
        "secrets": {"db-password": {"ref": "local:db-password"}, "other": {"ref": "local:other"}},
        "roles": {"web": {"uids": [os.getuid()], "secrets": ["db-password"]}},
        "audit": {"file": str(store / "audit.jsonl")},
    }))
    proc2 = Proc("--config", str(cfg_file))
    procs.append(proc2)
    proc2.wait_ready(sock)
    assert cli("sidecar", "get", "db-password", "--socket", str(sock)).stdout == b"hunter2-acceptance"
    r = cli("sidecar", "get", "other", "--socket", str(sock))
    assert r.returncode == 2 and b"other-value" not in r.stdout + r.stderr
    assert "not allowed" in r.stderr.decode()
    token = cli("sidecar", "token", "--socket", str(sock)).stdout.decode().strip()
    assert _get(sock, "/v1/secrets/other", token)[0] == 403
    assert _get(sock, "/v1/secrets/other")[0] == 401
    assert proc2.stop() == 0

    audit = store / "audit.jsonl"
    r = cli("audit", "verify", str(audit))
    assert r.returncode == 0, r.stdout + r.stderr
    lines = audit.read_bytes().splitlines(keepends=True)
    events = [json.loads(line)["event"] for line in lines]
    assert events.count("start") == 2 and events.count("stop") == 2 and "secret.read" in events
    assert b"hunter2" not in audit.read_bytes() and token.encode() not in audit.read_bytes()

    # edit one byte of a middle record (a read of db-password): verify names that record
    target = next(i for i, line in enumerate(lines) if b'"secret.read"' in line)
    edited = lines[target].replace(b'"role":"dev"', b'"role":"dew"')
    assert edited != lines[target] and len(edited) == len(lines[target])
    audit.write_bytes(b"".join([*lines[:target], edited, *lines[target + 1:]]))
    r = cli("audit", "verify", str(audit))
    assert r.returncode == 1
    assert f"line {target + 1} " in r.stdout.decode() + r.stderr.decode(), r.stdout
    print(f"acceptance: dev sidecar ready in {startup:.3f}s")


def test_dev_startup_is_fast(sock_dir: Path, procs: list[Proc]) -> None:
    proc = Proc("--dev", "--store", str(sock_dir / "st"))
    procs.append(proc)
    startup = proc.wait_ready(sock_dir / "st" / "sidecar.sock")
    assert startup < 3.0, f"start-up to ready took {startup:.2f}s (target 1.5s; shared CI slack)"


def test_server_object_serves_in_a_thread_and_stops(tmp_path: Path, sock_dir: Path) -> None:
    make_store(tmp_path / "store")
    cfg = write_config(tmp_path / "s.yaml", base_config(tmp_path, sock_dir / "t.sock"))
    server = SidecarServer(cfg, load=lambda: load_config(tmp_path / "s.yaml"))
    t = threading.Thread(target=server.serve, daemon=True)
    t.start()
    assert server.ready.wait(10)
    server.reload()  # from another thread: runs in a worker, no signal needed
    server.stop()
    t.join(10)
    assert not t.is_alive() and not (sock_dir / "t.sock").exists()
