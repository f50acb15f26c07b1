"""broker.audit, broker.audit_sinks and broker.audit_verify: the chain, the writer, the sinks, the verifier.

Remote sinks are tested against real local receivers (http.server in a thread, UDP and Unix datagram
sockets), stopped and restarted to simulate outages; nothing is mocked.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import random
import re
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from broker.audit import DECISIONS, GENESIS, AuditLog, Peer, encode_record, fingerprint, format_time
from broker.audit_sinks import AuditSink, DiskSpool, FileSink, HttpSink, SyslogSink
from broker.audit_verify import verify_file
from depthguard.errors import ConfigError, SourceError

SECRET = b"sup3r-s3cr3t-VALUE-do-not-log"
PEER = Peer(uid=1000, gid=1000, pid=4242, exe="/usr/bin/app")


class Clock:
    """An injectable wall clock (record times only; the heartbeat timer is real)."""

    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        self.t += 0.001
        return self.t


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def seq_reaches(log: AuditLog, seq: int) -> Callable[[], bool]:
    return lambda: log.seq >= seq


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines_of(path)]


def write_log(path: Path, events: int, *, heartbeat: float = 30.0, clock: Clock | None = None) -> None:
    log = AuditLog([FileSink(path)], heartbeat=heartbeat, now=clock or Clock(), instance="test")
    log.start()
    for i in range(events):
        log.record("secret.read", "allow", peer=PEER, role="web", secret=f"s{i}", value=SECRET)
    log.close()


@pytest.fixture()
def audit_file(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    write_log(path, 6)  # start + 6 reads + stop = 8 lines
    return path


# -- record format ---------------------------------------------------------------------------------------


def test_record_format_fields_and_file_modes(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "audit.jsonl"
    log = AuditLog([FileSink(path)], heartbeat=30, hmac_key=b"k" * 32, instance="web-1", now=Clock())
    log.start()
    log.record("secret.read", "allow", peer=PEER, role="web", secret="db-password", value=SECRET,
               backend="local", cached=True)
    log.record("access.denied", "deny", reason="out_of_scope", peer=PEER, role="web", secret="other")
    log.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    raw = lines_of(path)
    recs = [json.loads(line) for line in raw]
    assert [r["event"] for r in recs] == ["start", "secret.read", "access.denied", "stop"]
    assert [r["seq"] for r in recs] == [1, 2, 3, 4]
    assert recs[0]["prev"] == GENESIS and recs[0]["heartbeat"] == 30 and recs[0]["format"] == 1
    for line, rec in zip(raw, recs, strict=True):
        assert encode_record(rec) == line  # sorted keys, compact
    for before, after in zip(raw, recs[1:], strict=False):
        assert after["prev"] == hashlib.sha256(before).hexdigest()
    read = recs[1]
    assert {k: read[k] for k in ("uid", "gid", "pid", "exe", "role", "secret", "decision", "instance")} == {
        "uid": 1000, "gid": 1000, "pid": 4242, "exe": "/usr/bin/app", "role": "web",
        "secret": "db-password", "decision": "allow", "instance": "web-1"}
    assert read["backend"] == "local" and read["cached"] is True
    assert re.fullmatch(r"hmac-sha256:[0-9a-f]{64}", read["fingerprint"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", read["time"])
    assert recs[2]["reason"] == "out_of_scope" and recs[2]["fingerprint"] is None
    assert verify_file(path).ok


def test_secret_value_never_written(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog([FileSink(path)], heartbeat=30)
    log.start()
    for event in ("secret.read", "lease.renew", "backend.error"):
        log.record(event, "allow", secret="db", value=SECRET)
    log.close()
    data = path.read_bytes()
    forms = (SECRET, SECRET.hex().encode(), base64.b64encode(SECRET),
             hashlib.sha256(SECRET).hexdigest().encode())
    for form in forms:
        assert form not in data
    assert data.count(b"hmac-sha256:") == 3


def test_fingerprint_is_stable_under_one_key_and_differs_across_keys(tmp_path: Path) -> None:
    fps = []
    for name, key in (("a", b"1" * 32), ("b", b"1" * 32), ("c", b"2" * 32)):
        path = tmp_path / f"{name}.jsonl"
        log = AuditLog([FileSink(path)], hmac_key=key)
        log.record("secret.read", "allow", value=SECRET)
        log.close()
        fps.append(records(path)[0]["fingerprint"])
    assert fps[0] == fps[1] != fps[2]


def test_a_fingerprint_made_earlier_is_written_as_made_and_anything_else_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    log = AuditLog([FileSink(path)], hmac_key=b"1" * 32)
    fp = log.fingerprint(SECRET)
    log.record("secret.read", "allow", fingerprint=fp)
    log.record("secret.read", "allow", value=SECRET)
    for bad in (SECRET.decode(), "hmac-sha256:" + "0" * 63, "sha256:" + "0" * 69, fp + "0"):
        with pytest.raises(ValueError, match="fingerprint"):
            log.record("secret.read", "allow", fingerprint=bad)
    with pytest.raises(ValueError, match="not both"):
        log.record("secret.read", "allow", value=SECRET, fingerprint=fp)
    log.close()
    recs = records(path)
    assert [r["event"] for r in recs] == ["secret.read", "secret.read", "stop"]
    assert recs[0]["fingerprint"] == recs[1]["fingerprint"] == fp
    assert SECRET.decode() not in path.read_text()


def test_record_rejects_reserved_and_bad_fields(tmp_path: Path) -> None:
    log = AuditLog([FileSink(tmp_path / "a.jsonl")])
    with pytest.raises(ValueError, match="reserved"):
        log.record("secret.read", "allow", seq=3)
    with pytest.raises(ValueError, match="reserved"):
        log.record("secret.read", "allow", prev="x")
    with pytest.raises(ValueError, match="decision"):
        log.record("secret.read", "maybe")
    with pytest.raises(ValueError, match="finite"):
        log.record("secret.read", "allow", latency=float("nan"))
    with pytest.raises(TypeError):
        log.record("secret.read", "allow", blob=[1, 2])  # type: ignore[arg-type]
    log.close()


# -- chain, seq, concurrency --------------------------------------------------------------------------


def test_chain_continues_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 2)
    last_line = lines_of(path)[-1]
    write_log(path, 3)
    recs = records(path)
    assert [r["seq"] for r in recs] == list(range(1, 10))
    assert [r["event"] for r in recs][3:5] == ["stop", "start"]
    assert recs[4]["prev"] == hashlib.sha256(last_line).hexdigest()
    report = verify_file(path)
    assert report.ok, report.problems
    assert (report.records, report.first_seq, report.last_seq) == (9, 1, 9)


def test_reopen_after_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 2)
    data = path.read_bytes()
    path.write_bytes(data[:-20])  # a crash in the middle of writing the stop record
    write_log(path, 1)
    raw = lines_of(path)
    assert len(raw) == 7 and raw[3] == data[:-20].splitlines()[-1]
    recs = [json.loads(line) for line in raw[4:]]
    assert recs[0]["seq"] == 4  # after the last readable record (seq 3)
    assert recs[0]["prev"] == hashlib.sha256(raw[3]).hexdigest()  # the torn line stays chained
    report = verify_file(path)
    assert report.problems == ["line 4: not a JSON record"]


def test_second_writer_on_same_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    first = FileSink(path)
    with pytest.raises(ConfigError, match="in use by another process"):
        FileSink(path)
    first.close()
    FileSink(path).close()


def test_concurrent_record_from_8_threads_keeps_seq_and_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog([FileSink(path)], heartbeat=30, max_queue=100_000)
    log.start()
    per_thread = 400
    barrier = threading.Barrier(8)

    def worker(n: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            log.record("secret.read", "allow", secret=f"t{n}", i=i)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    recs = records(path)
    assert [r["seq"] for r in recs] == list(range(1, 8 * per_thread + 3))
    for n in range(8):  # each thread's own records stay in its order
        assert [r["i"] for r in recs if r["secret"] == f"t{n}"] == list(range(per_thread))
    assert log.dropped == 0
    report = verify_file(path)
    assert report.ok, report.problems


def test_record_does_not_wait_for_a_slow_sink(tmp_path: Path) -> None:
    class SlowSink(AuditSink):
        name = "slow"

        def write_batch(self, lines: Sequence[bytes]) -> None:
            time.sleep(0.5)

    log = AuditLog([SlowSink()], heartbeat=30)
    log.start()
    t0 = time.perf_counter()
    for _ in range(100):
        log.record("secret.read", "allow")
    assert time.perf_counter() - t0 < 0.2
    log.close()


def test_queue_overflow_is_counted_and_recorded(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog([FileSink(path)], heartbeat=30, max_queue=5)
    for i in range(20):  # writer not started yet: the queue fills up
        log.record("secret.read", "allow", i=i)
    assert log.dropped == 15
    log.start()
    log.close()
    recs = records(path)
    assert [r["event"] for r in recs] == ["start"] + ["secret.read"] * 5 + ["audit.dropped", "stop"]
    assert recs[6]["dropped"] == 15 and recs[6]["reason"] == "queue_full"
    assert recs[7]["dropped_total"] == 15
    assert verify_file(path).ok


def test_a_failing_sink_does_not_stop_the_others(tmp_path: Path) -> None:
    class BrokenSink(AuditSink):
        name = "broken"

        def write_batch(self, lines: Sequence[bytes]) -> None:
            raise OSError(28, "No space left on device")

    path = tmp_path / "audit.jsonl"
    log = AuditLog([BrokenSink(), FileSink(path)], heartbeat=30)
    log.start()
    log.record("secret.read", "allow")
    log.close()
    assert log.write_errors >= 1
    assert [r["event"] for r in records(path)] == ["start", "secret.read", "stop"]


def test_close_without_start_flushes_and_record_after_close_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog([FileSink(path)])
    log.record("config.reload", "info")
    log.close()
    log.record("secret.read", "allow")
    log.close()
    assert [r["event"] for r in records(path)] == ["config.reload", "stop"]


# -- batching: many records per write, one fsync per batch, wake-ups -----------------------------------


class CountingFileSink(FileSink):
    """A FileSink that counts its fsyncs and the batches (and their sizes) it was handed."""

    def __init__(self, path: Path) -> None:
        self.fsyncs = 0
        self.batches: list[int] = []
        super().__init__(path)

    def write_batch(self, lines: Sequence[bytes]) -> None:
        self.batches.append(len(lines))
        super().write_batch(lines)

    def _sync(self) -> None:
        self.fsyncs += 1
        super()._sync()


def counting_log(tmp_path: Path, **kwargs: Any) -> tuple[Path, CountingFileSink, AuditLog]:
    """A log on one ``CountingFileSink`` (heartbeat 30 s unless given), not started."""
    path = tmp_path / "audit.jsonl"
    sink = CountingFileSink(path)
    return path, sink, AuditLog([sink], **{"heartbeat": 30, **kwargs})


def test_records_arriving_within_linger_share_one_write_and_one_fsync(tmp_path: Path) -> None:
    path, sink, log = counting_log(tmp_path, linger=0.5)
    log.start()
    wait_for(lambda: log.seq == 1)  # start is written at once
    for i in range(500):
        log.record("secret.read", "allow", peer=PEER, role="web", secret="db", value=SECRET, i=i)
    wait_for(lambda: log.seq == 501)
    log.close()
    assert sink.batches == [1, 500, 1]  # start, the 500 reads, stop
    assert sink.fsyncs == len(sink.batches)
    recs = records(path)
    assert [r["seq"] for r in recs] == list(range(1, 503))
    assert [r["i"] for r in recs[1:-1]] == list(range(500))
    assert verify_file(path).ok


def test_one_fsync_per_batch_under_a_steady_trickle(tmp_path: Path) -> None:
    path, sink, log = counting_log(tmp_path, linger=0.05)
    log.start()
    t_end = time.monotonic() + 0.6
    n = 0
    while time.monotonic() < t_end:  # ~1 record per ms for 0.6 s: some 12 windows of 50 ms
        log.record("secret.read", "allow", i=n)
        n += 1
        time.sleep(0.001)
    log.close()
    assert sink.fsyncs == len(sink.batches) and sum(sink.batches) == n + 2
    assert len(sink.batches) <= 2 + 0.6 / 0.05 + 3  # about one batch per window, not one per record
    assert [r["seq"] for r in records(path)] == list(range(1, n + 3))
    assert verify_file(path).ok


def test_max_batch_bounds_each_write(tmp_path: Path) -> None:
    path, sink, log = counting_log(tmp_path, max_batch=10, linger=0.05)
    for i in range(35):  # queued before start
        log.record("secret.read", "allow", i=i)
    log.start()
    log.close()
    assert max(sink.batches) <= 10 and sum(sink.batches) == 37
    assert sink.fsyncs == len(sink.batches)
    assert verify_file(path).ok


def test_an_idle_writer_is_woken_by_the_next_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog([FileSink(path)], heartbeat=30, linger=0.01)
    log.start()
    wait_for(lambda: log.seq == 1)
    time.sleep(0.1)  # past the gathering window: the writer is parked until notified
    for k in range(3):
        t0 = time.monotonic()
        log.record("secret.read", "allow")
        wait_for(seq_reaches(log, 2 + k), timeout=5)
        assert time.monotonic() - t0 < 2  # not the 30 s heartbeat timer
        time.sleep(0.05)
    log.close()


def test_close_and_a_full_queue_do_not_wait_for_linger(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog([FileSink(path)], heartbeat=30, linger=30, max_queue=5)
    log.start()
    for i in range(20):  # the queue fills up: written at once, and the drops noted
        log.record("secret.read", "allow", i=i)
    wait_for(lambda: any(r["event"] == "audit.dropped" for r in records(path)), timeout=5)
    t0 = time.monotonic()
    log.record("secret.read", "allow", i=99)
    log.close()
    assert time.monotonic() - t0 < 5
    recs = records(path)
    assert recs[-2]["i"] == 99 and recs[-1]["event"] == "stop"
    assert sum(r.get("dropped", 0) for r in recs if r["event"] == "audit.dropped") == log.dropped > 0
    assert recs[-1]["dropped_total"] == log.dropped
    assert verify_file(path).ok


def test_linger_zero_writes_each_record_without_gathering(tmp_path: Path) -> None:
    _, sink, log = counting_log(tmp_path, linger=0)
    log.start()
    for i in range(3):
        log.record("secret.read", "allow", i=i)
        wait_for(seq_reaches(log, 2 + i))
    log.close()
    assert sink.batches == [1, 1, 1, 1, 1]


def test_bad_arguments_are_refused_at_the_call(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="linger"):
        AuditLog([], linger=-1)
    with pytest.raises(ValueError, match="heartbeat"):
        AuditLog([], heartbeat=float("inf"))
    log = AuditLog([FileSink(tmp_path / "a.jsonl")])
    with pytest.raises(TypeError, match="reason"):
        log.record("secret.read", "allow", reason=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="role"):
        log.record("secret.read", "allow", role=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="secret"):
        log.record("secret.read", "allow", secret=b"db")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="peer"):
        log.record("secret.read", "allow", peer=(1, 2, 3))  # type: ignore[arg-type]
    log.close()
    assert [r["event"] for r in records(tmp_path / "a.jsonl")] == ["stop"]


def test_a_record_that_cannot_be_formatted_is_counted_not_lost_silently(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog([FileSink(path)], heartbeat=30)
    log.start()
    log.record("secret.read", "allow", peer=Peer(uid=1, gid=1, pid=1, exe=float("nan")))  # type: ignore[arg-type]
    log.record("secret.read", "allow", secret="after")
    log.close()
    recs = records(path)
    assert [r["event"] for r in recs] == ["start", "audit.dropped", "secret.read", "stop"]
    assert recs[1]["dropped"] == 1 and recs[1]["reason"] == "unformattable" and log.dropped == 1
    assert verify_file(path).ok


@pytest.mark.parametrize("drop_cache", [True, False])
def test_file_sink_tracks_its_size_and_drops_only_written_pages(tmp_path: Path, drop_cache: bool) -> None:
    import mmap

    path = tmp_path / "audit.jsonl"
    path.write_bytes(b'{"torn":')  # a crash left half a line: terminated at open, size tracked from there
    sink = FileSink(path, drop_cache=drop_cache)
    expected = path.read_bytes()
    assert expected.endswith(b"\n")
    rng = random.Random(3)
    for n in range(60):
        lines = [b"x" * rng.randrange(1, 3000) for _ in range(rng.randrange(1, 8))]
        sink.write_batch(lines)
        expected += b"".join(line + b"\n" for line in lines)
        size = path.stat().st_size
        assert sink._size == size == len(expected), n
        if drop_cache and hasattr(os, "posix_fadvise"):
            whole = size - size % mmap.PAGESIZE  # never the page still being filled
            assert sink._dropped % mmap.PAGESIZE == 0 and whole - 16 * mmap.PAGESIZE < sink._dropped <= whole
        else:
            assert sink._dropped == 0
    assert sink._dropped > 0 if drop_cache and hasattr(os, "posix_fadvise") else sink._dropped == 0
    sink.close()
    assert path.read_bytes() == expected


# -- formatting: the writer's lines are exactly the reference encoding ---------------------------------


def _random_text(rng: random.Random) -> str:
    alphabet = "abcXYZ019 -_./:\"\\\n\t\x00\x1f\x7féü€𝄞\u2028\ud800"
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12)))


def _random_value(rng: random.Random) -> Any:
    kind = rng.randrange(8)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 7, 2**53 + 1, -(2**70), 10**30])
    if kind == 3:
        return rng.choice([0.0, -0.0, 0.1, 1e16, 1e-7, 123456.789, 5e-324, 1.7976931348623157e308, -2.5])
    if kind == 4:
        return rng.uniform(-1e6, 1e6)
    return _random_text(rng)


_FIELD_NAMES = ["backend", "cached", "dropped", "error", "format", "heartbeat", "i", "jti", "ref",
                "retries", "roles", "secrets", "sink", "version", "zzz", "A", "_x", "été", "a b", "uidx",
                "rolex", "seq_no", "time2"]


def test_lines_equal_the_reference_encoding_for_random_records(tmp_path: Path) -> None:
    rng = random.Random(6)
    path = tmp_path / "audit.jsonl"
    key = b"k" * 40
    times = [1_700_000_000.0 + rng.uniform(0, 10**6) for _ in range(400)] + [
        1_700_000_000.9999996, 1_700_000_000.9999994, 1_700_000_001.0000004, 1_700_000_001.0000005,
        1_699_999_999.5, 0.0, 1.0000005, 946_684_799.9999999, 4_102_444_800.0, 1_700_000_000]
    clock = iter([1_699_999_999.0, *times, 1_800_000_000.0])  # start, the records, stop
    log = AuditLog([FileSink(path)], heartbeat=30, hmac_key=key, instance="héllo:/run/s.sock",
                   now=lambda: next(clock), linger=0.001)
    log.start()
    peers = [None, PEER, Peer(uid=0, gid=0, pid=1), Peer(uid=2**31, gid=5, pid=9, exe="/tmp/a\nb é")]
    expected: list[dict[str, Any]] = []
    for t in times:
        peer = rng.choice(peers)
        fields = {name: _random_value(rng) for name in rng.sample(_FIELD_NAMES, rng.randrange(0, 5))}
        value = rng.choice([None, SECRET, b"", bytes(range(256))])
        kwargs: dict[str, Any] = {
            "reason": _random_text(rng), "peer": peer, "role": rng.choice([None, "web", _random_text(rng)]),
            "secret": rng.choice([None, "db", _random_text(rng)]), "value": value}
        event, decision = rng.choice(["secret.read", "x.ü", "a\"b"]), rng.choice(sorted(DECISIONS))
        log.record(event, decision, **kwargs, **fields)
        expected.append({
            "event": event, "decision": decision, "reason": kwargs["reason"],
            "uid": peer.uid if peer else None, "gid": peer.gid if peer else None,
            "pid": peer.pid if peer else None, "exe": peer.exe if peer else None,
            "role": kwargs["role"], "secret": kwargs["secret"],
            "fingerprint": fingerprint(key, value) if value is not None else None,
            "instance": "héllo:/run/s.sock", "time": format_time(t), **fields})
    log.close()
    raw = lines_of(path)
    assert len(raw) == len(times) + 2
    prev = hashlib.sha256(raw[0]).hexdigest()
    for seq, (line, rec) in enumerate(zip(raw[1:-1], expected, strict=True), start=2):
        assert line == encode_record({**rec, "seq": seq, "prev": prev}), (seq, line)
        prev = hashlib.sha256(line).hexdigest()
    assert verify_file(path, heartbeat=10**10).ok  # the times jump on purpose


@pytest.mark.parametrize("size", [0, 1, 16, 32, 63, 64, 65, 200])
def test_fingerprint_matches_stdlib_hmac_for_any_key_length(tmp_path: Path, size: int) -> None:
    key = bytes((7 * i + 3) % 256 for i in range(size))
    path = tmp_path / "audit.jsonl"
    log = AuditLog([FileSink(path)], hmac_key=key)
    values = [b"", SECRET, bytes(range(256)) * 3]
    for value in values:
        log.record("secret.read", "allow", value=value)
    log.close()
    assert [r["fingerprint"] for r in records(path)[:-1]] == [
        "hmac-sha256:" + hmac.new(key, v, hashlib.sha256).hexdigest() for v in values]


# -- heartbeat -------------------------------------------------------------------------------------------


def test_heartbeat_records_appear(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog([FileSink(path)], heartbeat=0.05):
        time.sleep(0.4)
    recs = records(path)
    beats = [r for r in recs if r["event"] == "heartbeat"]
    assert len(beats) >= 4 and all(r["heartbeat"] == 0.05 for r in beats)
    report = verify_file(path)
    assert report.ok and report.heartbeat == 0.05, report.problems


def test_heartbeat_gap_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    clock = Clock()
    log = AuditLog([FileSink(path)], heartbeat=30, now=clock)
    log.start()                                  # seq 1
    log.record("secret.read", "allow")           # seq 2
    clock.t += 95.0 - 0.001
    log.record("secret.read", "allow")           # seq 3, 95 s later
    clock.t += 20
    log.record("secret.read", "allow")           # seq 4, fine
    log.close()
    report = verify_file(path)
    assert report.problems == ["silent for 95.0 s between seq 2 and 3 (heartbeat 30 s)"]
    assert not report.ok
    # an explicit interval overrides the one the file states
    assert len(verify_file(path, heartbeat=5).problems) == 2
    assert verify_file(path, heartbeat=60).ok


def test_clean_restart_is_not_a_gap_but_a_crash_is(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    clock = Clock()
    write_log(path, 1, clock=clock)
    clock.t += 3600
    write_log(path, 1, clock=clock)
    assert verify_file(path).ok
    lines = lines_of(path)
    path.write_bytes(b"".join(line + b"\n" for line in lines[:2]))  # as if it died before "stop"
    clock.t += 3600
    write_log(path, 1, clock=clock)
    problems = verify_file(path).problems
    assert len(problems) == 1 and problems[0].startswith("silent for 7200.0 s between seq 2 and 3")


# -- verify: tampering -----------------------------------------------------------------------------------


def _variants(byte: int) -> list[int]:
    """Replacement bytes that keep the edit as plausible as possible (digit for digit, hex for hex)."""
    ch = chr(byte)
    out = [ord("x") if ch != "x" else ord("y")]
    if ch.isdigit():
        out.append(ord("7") if ch != "7" else ord("3"))
    elif ch in "abcdef":
        out.append(ord("a") if ch != "a" else ord("b"))
    return out


def test_editing_any_byte_fails_at_that_line(audit_file: Path) -> None:
    original = audit_file.read_bytes()
    lines = original.splitlines(keepends=True)
    checked = 0
    for k in range(len(lines) - 1):  # every line but the last (the documented limit)
        start = sum(len(line) for line in lines[:k])
        for pos in range(start, start + len(lines[k]) - 1):  # not the newline
            for repl in _variants(original[pos]):
                audit_file.write_bytes(original[:pos] + bytes([repl]) + original[pos + 1:])
                report = verify_file(audit_file)
                assert not report.ok, (k + 1, pos)
                assert re.match(rf"line {k + 1}[ :]", report.problems[0]), (k + 1, pos, report.problems)
                checked += 1
    assert checked > 2000


def test_edit_of_the_last_line_is_the_documented_limit(audit_file: Path) -> None:
    data = audit_file.read_bytes()
    assert data.endswith(b'"dropped_total":0,"event":"stop"' + data[data.rindex(b',"exe"'):])
    audit_file.write_bytes(data.replace(b'"dropped_total":0', b'"dropped_total":9'))
    assert verify_file(audit_file).ok  # nothing after it records its hash
    audit_file.write_bytes(data[:-3] + b"X" + data[-2:])  # but it must stay a canonical record
    assert verify_file(audit_file).problems[0].startswith("line 8: not a JSON record")


def test_deleted_line_is_reported_missing(audit_file: Path) -> None:
    lines = audit_file.read_bytes().splitlines(keepends=True)
    audit_file.write_bytes(b"".join(lines[:3] + lines[4:]))
    assert verify_file(audit_file).problems == [
        "line 4 (seq 5): missing record(s): seq 4 absent (line 3 has seq 3)"]
    audit_file.write_bytes(b"".join(lines[:3] + lines[6:]))
    assert verify_file(audit_file).problems == [
        "line 4 (seq 7): missing record(s): seq 4-6 absent (line 3 has seq 3)"]


def test_swapped_lines_are_reported_reordered(audit_file: Path) -> None:
    lines = audit_file.read_bytes().splitlines(keepends=True)
    lines[3], lines[4] = lines[4], lines[3]
    audit_file.write_bytes(b"".join(lines))
    assert verify_file(audit_file).problems == [
        "line 4 (seq 5): reordered: expected seq 4 after line 3, found at line 5"]


def test_duplicated_line_is_reported(audit_file: Path) -> None:
    lines = audit_file.read_bytes().splitlines(keepends=True)
    audit_file.write_bytes(b"".join([*lines[:4], lines[3], *lines[4:]]))
    assert verify_file(audit_file).problems == [
        "line 5 (seq 4): duplicated: seq 4 comes after seq 4 (line 4)"]


def test_inserted_forged_line_breaks_the_chain(audit_file: Path) -> None:
    lines = audit_file.read_bytes().splitlines(keepends=True)
    forged = json.loads(lines[2])
    forged["secret"] = "forged"
    audit_file.write_bytes(b"".join([*lines[:3], encode_record(forged) + b"\n", *lines[3:]]))
    problems = verify_file(audit_file).problems
    assert problems[0].startswith("line 4 (seq 3): duplicated")


def test_truncation(audit_file: Path) -> None:
    data = audit_file.read_bytes()
    lines = data.splitlines(keepends=True)
    audit_file.write_bytes(data[:-40])  # cut inside the last line
    soon = _epoch(json.loads(lines[-1])["time"]) + 1
    assert verify_file(audit_file, now=soon).problems == ["line 8: truncated: the last line is incomplete"]
    # ...and later on, the missing stop record also shows as silence
    assert len(verify_file(audit_file, now=soon + 600).problems) == 2
    audit_file.write_bytes(data[:-1])  # only the final newline missing
    assert verify_file(audit_file).problems == ["line 8 (seq 8): truncated: the last line has no newline"]
    # cut at a line boundary: the chain is intact, but the log ends without "stop" and went silent
    audit_file.write_bytes(b"".join(lines[:5]))
    last_time = json.loads(lines[4])["time"]
    report = verify_file(audit_file, now=_epoch(last_time) + 120)
    assert report.problems == ["silent for 120.0 s since seq 5 (line 5), the last record, which is not a "
                               "stop record (heartbeat 30 s)"]
    assert verify_file(audit_file, now=_epoch(last_time) + 10).ok  # a live log, recently written
    audit_file.write_bytes(b"".join(lines[3:]))  # head cut off
    assert verify_file(audit_file).problems == [
        "line 1 (seq 4): records missing before it: the file starts at seq 4"]


def test_garbage_and_empty_files(tmp_path: Path, audit_file: Path) -> None:
    lines = audit_file.read_bytes().splitlines(keepends=True)
    audit_file.write_bytes(b"".join([*lines[:2], b"hello\n", *lines[2:]]))
    assert verify_file(audit_file).problems[0] == "line 3: not a JSON record"
    audit_file.write_bytes(b"".join([*lines[:2], b"[" * 100_000 + b"\n", *lines[2:]]))
    assert verify_file(audit_file).problems[0] == "line 3: not a JSON record"
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    assert not verify_file(empty).ok


def test_unreadable_file_raises_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="cannot read"):
        verify_file(tmp_path / "missing.jsonl")
    with pytest.raises(SourceError):
        verify_file(tmp_path)


def _epoch(stamp: str) -> float:
    from datetime import UTC, datetime
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


# -- spool -----------------------------------------------------------------------------------------------


def test_disk_spool_is_bounded_drops_oldest_and_counts(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path / "spool", max_bytes=100)
    assert stat.S_IMODE((tmp_path / "spool").stat().st_mode) == 0o700
    batch = [b"x" * 19] * 2  # 40 bytes with newlines
    assert spool.append(batch) == 0
    assert spool.append(batch) == 0
    assert spool.append(batch) == 2  # 120 > 100: the oldest batch (2 records) goes
    assert spool.size == 80 and len(spool) == 2
    assert spool.append([b"y" * 200]) == 1  # can never fit: dropped itself, counted
    names = [name for name, _ in spool.oldest(10**6)]
    assert names == sorted(names) and len(names) == 2
    # survives a restart, in order, and counters continue
    again = DiskSpool(tmp_path / "spool", max_bytes=100)
    assert [name for name, _ in again.oldest(10**6)] == names and again.size == 80
    again.remove(names[:1])
    assert len(again) == 1 and again.size == 40


# -- HTTP sink -------------------------------------------------------------------------------------------


class Collector:
    """A real HTTP receiver on a fixed loopback port that can be stopped and started again."""

    def __init__(self, port: int = 0) -> None:
        self.bodies: list[bytes] = []
        self.content_types: list[str] = []
        self.port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                collector.bodies.append(body)
                collector.content_types.append(self.headers["Content-Type"])
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ingest"

    def lines(self) -> list[bytes]:
        return [line for body in list(self.bodies) for line in body.splitlines()]


@pytest.fixture()
def collector() -> Iterator[Collector]:
    c = Collector()
    c.start()
    yield c
    c.stop()


def http_sink(url: str, spool: Path, max_bytes: int = 1 << 20) -> HttpSink:
    return HttpSink(url, spool, max_bytes, timeout=2.0, retry_min=0.05, retry_max=0.2, close_timeout=5.0)


@pytest.mark.integration
def test_http_sink_delivers_ndjson(tmp_path: Path, collector: Collector) -> None:
    path = tmp_path / "audit.jsonl"
    sink = http_sink(collector.url, tmp_path / "spool")
    with AuditLog([FileSink(path), sink], heartbeat=30) as log:
        for i in range(5):
            log.record("secret.read", "allow", i=i)
    assert collector.lines() == lines_of(path)
    assert set(collector.content_types) == {"application/x-ndjson"}
    assert len(sink.spool) == 0 and sink.delivered == 7


@pytest.mark.integration
def test_http_sink_spools_while_down_and_drains_in_order(tmp_path: Path, collector: Collector) -> None:
    path = tmp_path / "audit.jsonl"
    collector.stop()  # the remote is down from the start
    sink = http_sink(collector.url, tmp_path / "spool")
    log = AuditLog([FileSink(path), sink], heartbeat=30)
    log.start()
    for i in range(5):
        log.record("secret.read", "allow", i=i)
    wait_for(lambda: sink.failures >= 2)
    for i in range(5, 10):
        log.record("secret.read", "allow", i=i)
    wait_for(lambda: sink.spool.size > 0 and log.seq == 11)
    assert collector.lines() == []
    assert list((tmp_path / "spool").glob("*.ndjson"))
    collector.start()  # back, on the same port
    wait_for(lambda: len(sink.spool) == 0)
    log.close()
    assert collector.lines() == lines_of(path)  # everything, in order, once
    assert verify_file(path).ok


@pytest.mark.integration
def test_http_spool_bound_drops_oldest_with_a_counted_record(tmp_path: Path, collector: Collector) -> None:
    path = tmp_path / "audit.jsonl"
    collector.stop()
    sink = http_sink(collector.url, tmp_path / "spool", max_bytes=3000)
    log = AuditLog([FileSink(path), sink], heartbeat=0.2)
    log.start()
    for i in range(40):
        log.record("secret.read", "allow", secret=f"s{i}")
        time.sleep(0.002)  # several batches
    wait_for(lambda: log.seq >= 41 and sink.dropped > 0)
    time.sleep(1.0)
    assert sink.spool.size <= 3000
    assert log.seq < 41 + 30  # heartbeats and a few notes, no runaway of notes evicting records
    collector.start()
    wait_for(lambda: len(sink.spool) == 0)
    log.close()
    recs = records(path)
    notes = [r for r in recs if r["event"] == "spool.dropped"]
    assert notes and sum(r["dropped"] for r in notes) == sink.dropped
    assert all(r["sink"] == sink.name and r["reason"] == "spool_full" for r in notes)
    got = [json.loads(line)["seq"] for line in collector.lines()]
    assert got == sorted(got) and len(got) == len(recs) - sink.dropped  # the oldest were dropped
    assert got[-1] == recs[-1]["seq"]
    assert verify_file(path).ok  # the local file is complete


@pytest.mark.integration
def test_http_spool_survives_a_restart(tmp_path: Path, collector: Collector) -> None:
    path = tmp_path / "audit.jsonl"
    url = collector.url
    collector.stop()
    sink = http_sink(url, tmp_path / "spool")
    sink.close_timeout = 0.2
    with AuditLog([FileSink(path), sink], heartbeat=30) as log:
        log.record("secret.read", "allow")
    assert sink.spool.size > 0
    collector.start()
    again = http_sink(url, tmp_path / "spool")  # a new process: drains what the old one left
    wait_for(lambda: len(again.spool) == 0)
    again.close()
    assert collector.lines() == lines_of(path)


def test_http_sink_rejects_a_non_http_url(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not an http"):
        HttpSink("ftp://x", tmp_path / "spool")


# -- syslog sink -----------------------------------------------------------------------------------------

RFC5424 = re.compile(rb"<(\d+)>1 (\S+) (\S+) depthguard (\d+) (\S+) - (.*)", re.S)


@pytest.mark.integration
def test_syslog_sink_delivers_rfc5424_over_udp(tmp_path: Path) -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(5)
    port = receiver.getsockname()[1]
    path = tmp_path / "audit.jsonl"
    sink = SyslogSink(f"127.0.0.1:{port}", tmp_path / "spool", hostname="host-1",
                      retry_min=0.05, retry_max=0.2)
    with AuditLog([FileSink(path), sink], heartbeat=30) as log:
        log.record("secret.read", "allow", secret="db")
        log.record("access.denied", "deny", reason="out_of_scope", secret="x")
    try:
        got = [receiver.recv(65535) for _ in range(4)]
    finally:
        receiver.close()
    file_lines = lines_of(path)
    parsed = [RFC5424.fullmatch(msg) for msg in got]
    assert all(parsed), got
    assert [m.group(6) for m in parsed if m] == file_lines
    assert [m.group(5) for m in parsed if m] == [b"start", b"secret.read", b"access.denied", b"stop"]
    pris = [int(m.group(1)) for m in parsed if m]
    assert pris == [10 * 8 + 6, 10 * 8 + 6, 10 * 8 + 4, 10 * 8 + 6]  # authpriv; deny is a warning
    first = parsed[0]
    assert first is not None and first.group(3) == b"host-1" and first.group(4) == str(os.getpid()).encode()
    assert first.group(2).decode() == json.loads(file_lines[0])["time"]


@pytest.mark.integration
def test_syslog_unix_socket_spools_while_down_and_drains(tmp_path: Path) -> None:
    sock_path = tmp_path / "log.sock"  # nothing listens yet
    path = tmp_path / "audit.jsonl"
    sink = SyslogSink(str(sock_path), tmp_path / "spool", retry_min=0.05, retry_max=0.2)
    log = AuditLog([FileSink(path), sink], heartbeat=30)
    log.start()
    for i in range(3):
        log.record("secret.read", "allow", i=i)
    wait_for(lambda: sink.failures >= 1 and log.seq == 4)
    assert sink.spool.size > 0
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(sock_path))
    receiver.settimeout(5)
    try:
        wait_for(lambda: len(sink.spool) == 0)
        log.close()
        got = [receiver.recv(65535) for _ in range(5)]
    finally:
        receiver.close()
    msgs = [RFC5424.fullmatch(m) for m in got]
    assert [m.group(6) for m in msgs if m] == lines_of(path)


def test_syslog_sink_rejects_a_bad_address(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="host:port"):
        SyslogSink("localhost", tmp_path / "spool")
