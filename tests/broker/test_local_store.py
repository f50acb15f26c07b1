"""``broker/backends/local.py``: the encrypted record store and the ``local`` backend."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from broker.backends import local
from broker.backends.interface import BackendAuthError, BackendError, Health, SecretNotFound, SecretRef
from broker.backends.local import (
    ENV_KEY,
    KEY_FILE_NAME,
    InvalidSecretName,
    LocalBackend,
    LocalStore,
    RecordAuthError,
    RecordFormatError,
    StoreKeyError,
    resolve_key,
)

VALUE = b"hunter2-\x00\xff-not-in-messages"
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


@pytest.fixture()
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store", KEY)


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_round_trip_binary_and_file_modes(store: LocalStore) -> None:
    assert store.put("db-password", VALUE) == 1
    got = store.get("db-password")
    assert got.value == VALUE and got.version == "1"
    assert mode(store.path) == 0o700
    assert mode(store.path / "db-password.dgs") == 0o600
    raw = (store.path / "db-password.dgs").read_bytes()
    assert raw.startswith(b"DGLS\x01") and VALUE not in raw and b"hunter2" not in raw


def test_versions_increase_and_old_ones_can_be_pinned(tmp_path: Path) -> None:
    s = LocalStore(tmp_path, KEY, max_versions=3)
    for i in range(1, 6):
        assert s.put("x", f"v{i}".encode()) == i
    assert s.get("x").value == b"v5" and s.get("x").version == "5"
    assert s.get("x", 3).value == b"v3"
    with pytest.raises(SecretNotFound, match="no longer kept"):
        s.get("x", 2)
    with pytest.raises(SecretNotFound, match="no version 9"):
        s.get("x", 9)
    (entry,) = s.entries()
    assert (entry.name, entry.version, entry.kept) == ("x", 5, (3, 4, 5))


def test_rm_removes_and_restarts_counter(store: LocalStore) -> None:
    store.put("a", b"1")
    store.put("a", b"2")
    store.delete("a")
    with pytest.raises(SecretNotFound):
        store.get("a")
    with pytest.raises(SecretNotFound):
        store.delete("a")
    assert store.put("a", b"3") == 1


def test_wrong_key_fails_closed_and_put_does_not_clobber(store: LocalStore) -> None:
    store.put("a", VALUE)
    bad = LocalStore(store.path, OTHER_KEY)
    with pytest.raises(RecordAuthError, match="failed authentication") as ei:
        bad.get("a")
    assert isinstance(ei.value, BackendAuthError) and isinstance(ei.value, BackendError)
    assert "hunter2" not in str(ei.value)
    with pytest.raises(RecordAuthError):
        bad.put("a", b"overwrite")
    with pytest.raises(RecordAuthError):
        bad.entries()
    assert store.get("a").value == VALUE


def test_tampered_ciphertext_fails(store: LocalStore) -> None:
    store.put("a", VALUE)
    f = store.path / "a.dgs"
    raw = bytearray(f.read_bytes())
    raw[-20] ^= 0x01
    f.write_bytes(bytes(raw))
    with pytest.raises(RecordAuthError, match="failed authentication"):
        store.get("a")


def test_tampered_format_byte_fails(store: LocalStore) -> None:
    store.put("a", VALUE)
    f = store.path / "a.dgs"
    raw = bytearray(f.read_bytes())
    raw[4] = 0  # an older "format" is still bound by the associated data
    f.write_bytes(bytes(raw))
    with pytest.raises(RecordAuthError):
        store.get("a")


def test_swapped_records_fail_thanks_to_associated_data(store: LocalStore) -> None:
    store.put("a", b"value-a")
    store.put("b", b"value-b")
    a, b = store.path / "a.dgs", store.path / "b.dgs"
    ra, rb = a.read_bytes(), b.read_bytes()
    a.write_bytes(rb)
    b.write_bytes(ra)
    for name in ("a", "b"):
        with pytest.raises(RecordAuthError, match="another name"):
            store.get(name)


def test_not_a_record_and_truncated(store: LocalStore) -> None:
    store.path.mkdir()
    (store.path / "junk.dgs").write_bytes(b"hello world, this is not a record at all")
    (store.path / "short.dgs").write_bytes(b"DGLS\x01")
    with pytest.raises(RecordFormatError, match="not a depthguard store record"):
        store.get("junk")
    with pytest.raises(RecordFormatError, match="truncated"):
        store.get("short")


@pytest.mark.parametrize("name", ["a/b", "../x", "..", "x..y", ".key", ".hidden", "a\\b", "", "a b", "a@1"])
def test_bad_names_refused(store: LocalStore, name: str) -> None:
    with pytest.raises(InvalidSecretName):
        store.put(name, b"v")
    with pytest.raises(InvalidSecretName):
        store.get(name)
    assert not (store.path.parent / "x.dgs").exists()


def test_atomic_write_leaves_no_temp_files(store: LocalStore, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(3):
        store.put("a", str(i).encode())
    assert sorted(p.name for p in store.path.iterdir()) == [".lock", "a.dgs"]

    def boom(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        store.put("a", b"never")
    monkeypatch.undo()
    assert sorted(p.name for p in store.path.iterdir()) == [".lock", "a.dgs"]
    assert store.get("a").value == b"2"


def test_values_never_in_repr(store: LocalStore) -> None:
    store.put("a", VALUE)
    got = store.get("a")
    key = resolve_key(store.path, environ={ENV_KEY: base64.b64encode(KEY).decode()})
    for obj in (got, store, key, LocalBackend("local", store)):
        assert "hunter2" not in repr(obj) and repr(VALUE) not in repr(obj)
    assert repr(KEY) not in repr(key)


def test_format_upgrade_hook(store: LocalStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.put("a", b"v")
    calls: list[int] = []

    def up(payload: local.Payload) -> local.Payload:
        calls.append(1)
        return {**payload, "upgraded": True}

    monkeypatch.setattr(local, "FORMAT_VERSION", 2)
    monkeypatch.setitem(local._UPGRADES, 1, up)
    assert store.get("a").value == b"v" and calls == [1]
    assert local.upgrade_payload(1, {"name": "a"})["upgraded"] is True
    with pytest.raises(RecordFormatError, match="newer"):
        local.upgrade_payload(3, {})


# -- keys ----------------------------------------------------------------------------------------


def test_key_file_permissions_checked(tmp_path: Path) -> None:
    kf = tmp_path / "store.key"
    kf.write_bytes(base64.b64encode(KEY) + b"\n")
    for loose in (0o644, 0o640, 0o604, 0o660):
        os.chmod(kf, loose)
        with pytest.raises(StoreKeyError, match="must be 0600 or stricter"):
            resolve_key(tmp_path / "s", kf, environ={})
    os.chmod(kf, 0o600)
    assert resolve_key(tmp_path / "s", kf, environ={}).key == KEY
    os.chmod(kf, 0o400)
    assert resolve_key(tmp_path / "s", kf, environ={}).key == KEY
    raw = tmp_path / "raw.key"
    raw.write_bytes(KEY)
    os.chmod(raw, 0o600)
    assert resolve_key(tmp_path / "s", raw, environ={}).key == KEY


def test_bad_keys_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreKeyError, match="no such key file"):
        resolve_key(tmp_path, tmp_path / "missing", environ={})
    with pytest.raises(StoreKeyError, match="32 bytes"):
        resolve_key(tmp_path, environ={ENV_KEY: base64.b64encode(b"short").decode()})
    with pytest.raises(StoreKeyError, match="base64"):
        resolve_key(tmp_path, environ={ENV_KEY: "not base64 !!"})
    with pytest.raises(StoreKeyError, match="no store key"):
        resolve_key(tmp_path / "none", environ={})


def test_key_precedence_file_then_env_then_store(tmp_path: Path) -> None:
    kf = tmp_path / "k"
    kf.write_bytes(KEY)
    os.chmod(kf, 0o600)
    env = {ENV_KEY: base64.b64encode(OTHER_KEY).decode()}
    assert resolve_key(tmp_path / "s", kf, environ=env).key == KEY
    assert resolve_key(tmp_path / "s", environ=env).origin == f"env:{ENV_KEY}"


def test_first_use_creates_0600_dev_key(tmp_path: Path) -> None:
    d = tmp_path / "new-store"
    k1 = resolve_key(d, environ={}, create=True)
    assert k1.created and len(k1.key) == 32
    assert mode(d / KEY_FILE_NAME) == 0o600 and mode(d) == 0o700
    k2 = resolve_key(d, environ={}, create=True)
    assert not k2.created and k2.key == k1.key
    # the key file is never listed as a secret
    s = LocalStore(d, k1.key)
    s.put("a", b"v")
    assert s.names() == ["a"]


# -- backend -------------------------------------------------------------------------------------


@pytest.fixture()
def backend(store: LocalStore) -> LocalBackend:
    store.put("db", b'{"user": "app", "password": "s3cr3t-pw", "port": 5432}')
    store.put("db", b'{"user": "app", "password": "n3w-pw", "port": 5432}')
    store.put("plain", b"not json s3cr3t")
    return LocalBackend("local", store)


def test_backend_read_key_and_version(backend: LocalBackend) -> None:
    got = backend.read(SecretRef.parse("local:db#password"))
    assert got.value == b"n3w-pw" and got.version == "2" and got.lease is None
    assert backend.read(SecretRef.parse("local:db#password@1")).value == b"s3cr3t-pw"
    assert backend.read(SecretRef.parse("local:db#port")).value == b"5432"
    assert backend.read(SecretRef.parse("local:db@1")).version == "1"


@pytest.mark.parametrize(
    ("ref", "match"),
    [
        ("local:db#nope", "no field 'nope'"),
        ("local:plain#password", "not a JSON object"),
        ("local:missing", "no secret named"),
        ("local:db@latest", "positive integers"),
        ("local:db@0", "positive integers"),
        ("local:../etc/passwd", "invalid secret name"),
    ],
)
def test_backend_errors_name_no_values(backend: LocalBackend, ref: str, match: str) -> None:
    with pytest.raises(SecretNotFound, match=match) as ei:
        backend.read(SecretRef.parse(ref))
    text = str(ei.value)
    assert "s3cr3t" not in text and "n3w-pw" not in text
    assert ei.value.__cause__ is None or "s3cr3t" not in repr(ei.value.__cause__)


def test_backend_health_and_open(tmp_path: Path) -> None:
    d = tmp_path / "s"
    b = LocalBackend.open("local", d, environ={}, create_key=True)
    assert b.health() == Health(True, "0 secrets")  # empty but present: healthy
    b.store.put("a", b"v")
    assert b.health().ok
    wrong = LocalBackend("local", LocalStore(d, OTHER_KEY))
    h = wrong.health()
    assert not h.ok and "key" in h.detail
    assert not LocalBackend("local", LocalStore(tmp_path / "absent", KEY)).health().ok


def test_concurrent_puts_lose_no_versions(store: LocalStore) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        got = sorted(pool.map(lambda i: store.put("c", str(i).encode()), range(20)))
    assert got == list(range(1, 21)) and store.get("c").version == "20"
