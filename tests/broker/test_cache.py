"""Tests for ``broker/cache.py``.

Time is driven by a fake clock and ``refresh_due()``; real threads are used where concurrency is the
point (single-flight) and in one small test of the background refresher. The backend is a small
in-test ``SecretBackend`` with counters, switchable failures and leases that share the fake clock.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest

from broker.backends.interface import Health, Lease, SecretBackend, SecretRef, SecretValue
from broker.cache import CachePolicy, CounterName, SecretCache
from depthguard.errors import BackendUnavailable, LeaseExpired, SecretNotFound

REF = SecretRef.parse("fake:app/db#password")
STATIC = CachePolicy(refresh=100, refresh_ahead=0.8, jitter=0.0, max_staleness=30, backoff_base=1,
                     backoff_max=8)


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class FakeBackend(SecretBackend):
    """Returns ``<path>-value-<n>`` for the n-th read; leased when ``ttl`` is set (Vault-like: renewals
    extend by ``ttl`` from now, capped at ``max_ttl`` from issue)."""

    def __init__(self, clock: Callable[[], float], *, ttl: float | None = None,
                 max_ttl: float | None = None) -> None:
        self.name = "fake"
        self.clock = clock
        self.ttl = ttl
        self.max_ttl = max_ttl
        self.reads = 0
        self.renews = 0
        self.read_times: list[float] = []
        self.revoked: list[str] = []
        self.fail: Exception | None = None
        self.renew_error: Exception | None = None
        self.gate: threading.Event | None = None
        self._lock = threading.Lock()

    def read(self, ref: SecretRef) -> SecretValue:
        with self._lock:
            self.reads += 1
            n = self.reads
            self.read_times.append(self.clock())
        if self.gate is not None:
            assert self.gate.wait(10)
        if self.fail is not None:
            raise self.fail
        now = self.clock()
        lease = None
        if self.ttl is not None:
            max_at = now + self.max_ttl if self.max_ttl is not None else None
            lease = Lease(f"lease-{n}", now, self.ttl, True, max_at)
        return SecretValue(f"{ref.path}-value-{n}".encode(), version=str(n), lease=lease)

    def renew(self, lease: Lease, increment: float | None = None) -> Lease:
        assert self.ttl is not None
        with self._lock:
            self.renews += 1
        if self.renew_error is not None:
            raise self.renew_error
        now = self.clock()
        if now >= lease.expires_at or (lease.max_expires_at is not None and now >= lease.max_expires_at):
            raise LeaseExpired(f"lease {lease.lease_id} cannot be renewed")
        new_exp = now + self.ttl
        if lease.max_expires_at is not None:
            new_exp = min(new_exp, lease.max_expires_at)
        return dataclasses.replace(lease, issued_at=now, ttl=new_exp - now)

    def revoke(self, lease: Lease) -> None:
        self.revoked.append(lease.lease_id)

    def health(self) -> Health:
        return Health(True)


class RecordingMetrics:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.stale: list[float] = []
        self._lock = threading.Lock()

    def count(self, counter: CounterName, key: str) -> None:
        with self._lock:
            self.counts[counter] += 1

    def staleness(self, key: str, seconds: float) -> None:
        self.stale.append(seconds)


def make(policy: CachePolicy = STATIC, *, ttl: float | None = None, max_ttl: float | None = None,
         rng: float = 1.0) -> tuple[SecretCache, FakeBackend, FakeClock, RecordingMetrics]:
    clock = FakeClock()
    metrics = RecordingMetrics()
    cache = SecretCache(policy, now=clock, metrics=metrics, rng=lambda: rng)
    return cache, FakeBackend(clock, ttl=ttl, max_ttl=max_ttl), clock, metrics


def wait_until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def run_threads(n: int, target: Callable[[], object]) -> tuple[list[object], list[BaseException]]:
    results: list[object] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        try:
            r = target()
        except BaseException as e:
            with lock:
                errors.append(e)
        else:
            with lock:
                results.append(r)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    return results, errors


# ---------------------------------------------------------------------------- single-flight


def test_single_flight_fifty_threads_one_read() -> None:
    cache, backend, _, metrics = make()
    backend.gate = threading.Event()
    results, errors = run_threads(50, lambda: cache.get(REF, backend).value)
    # All 50 have missed (and so joined the one flight) before the read is allowed to finish.
    wait_until(lambda: metrics.counts["misses"] == 50)
    backend.gate.set()
    wait_until(lambda: len(results) + len(errors) == 50)
    assert errors == []
    assert backend.reads == 1
    assert set(results) == {b"app/db-value-1"}
    assert metrics.counts["hits"] == 0


def test_single_flight_error_reaches_every_waiter() -> None:
    cache, backend, _, metrics = make()
    backend.gate = threading.Event()
    backend.fail = BackendUnavailable("down")
    results, errors = run_threads(50, lambda: cache.get(REF, backend))
    wait_until(lambda: metrics.counts["misses"] == 50)
    backend.gate.set()
    wait_until(lambda: len(results) + len(errors) == 50)
    assert results == []
    assert len(errors) == 50 and all(isinstance(e, BackendUnavailable) for e in errors)
    assert backend.reads == 1
    # Nothing was cached: the next get tries again.
    backend.gate, backend.fail = None, None
    assert cache.get(REF, backend).value == b"app/db-value-2"


# ---------------------------------------------------------------------------- hits, refresh-ahead


def test_hit_and_miss_metrics() -> None:
    cache, backend, clock, metrics = make()
    first = cache.get(REF, backend)
    clock.advance(50)
    second = cache.get(REF, backend)
    assert first.value == second.value == b"app/db-value-1"
    assert backend.reads == 1
    assert metrics.counts == Counter({"misses": 1, "hits": 1})


def test_peek_serves_only_fresh_entries_and_never_reads_the_backend() -> None:
    cache, backend, clock, metrics = make()
    assert cache.peek(str(REF)) is None and backend.reads == 0
    cache.get(REF, backend)
    hit = cache.peek(str(REF))
    assert hit is not None and hit.value == b"app/db-value-1"
    assert metrics.counts == Counter({"misses": 1, "hits": 1})
    clock.advance(1000)  # past expiry: a miss for peek, which leaves the re-read to get()
    assert cache.peek(str(REF)) is None and backend.reads == 1
    cache.close()
    assert cache.peek(str(REF)) is None


def test_refresh_ahead_happens_before_expiry() -> None:
    cache, backend, clock, metrics = make()  # refresh 100 s, due at 80 s, no jitter
    cache.get(REF, backend)
    clock.advance(79)
    assert cache.refresh_due() == 0
    clock.advance(1)
    assert cache.refresh_due() == 1
    assert backend.reads == 2
    clock.advance(19)  # 99 s after the first read: still fresh, and already the new value
    assert cache.get(REF, backend).value == b"app/db-value-2"
    assert metrics.counts["refreshes"] == 1
    assert metrics.counts["misses"] == 1  # only the cold one: refresh-ahead means no miss at expiry


def test_refresh_ahead_jitter_only_makes_it_earlier() -> None:
    policy = dataclasses.replace(STATIC, jitter=0.1)
    cache, backend, clock, _ = make(policy, rng=1.0)  # maximum jitter: 80 - 10 = 70 s
    cache.get(REF, backend)
    clock.advance(69.9)
    assert cache.refresh_due() == 0
    clock.advance(0.1)
    assert cache.refresh_due() == 1


def test_per_get_refresh_interval() -> None:
    cache, backend, clock, _ = make()
    cache.get(REF, backend, refresh=10)
    clock.advance(8)
    assert cache.refresh_due() == 1


# ---------------------------------------------------------------------------- leases


def test_lease_renewed_until_max_ttl_then_reissued() -> None:
    """Acceptance: a dynamic lease is renewed (not re-issued) until max TTL, then re-issued."""
    cache, backend, clock, metrics = make(CachePolicy(jitter=0.0), ttl=30, max_ttl=100)
    start = clock()
    first = cache.get(REF, backend)
    assert first.lease is not None and first.lease.lease_id == "lease-1"
    renew_times: list[float] = []
    for _ in range(93):  # t = 1 .. 93: renewals at 20, 40, 60, 80 (the last one capped at max TTL)
        clock.advance(1)
        before = backend.renews
        cache.refresh_due()
        if backend.renews != before:
            renew_times.append(clock() - start)
        got = cache.get(REF, backend)
        assert got.value == b"app/db-value-1"
        assert got.lease is not None and got.lease.expires_at > clock()
    assert renew_times == [20, 40, 60, 80]
    assert backend.reads == 1
    # The lease now reaches its max TTL (t=100); at 2/3 of its remaining 20 s (t≈93.3) it is re-issued.
    clock.advance(1)
    cache.refresh_due()
    assert backend.reads == 2 and backend.renews == 4
    got = cache.get(REF, backend)
    assert got.value == b"app/db-value-2"
    assert got.lease is not None and got.lease.lease_id == "lease-2"
    assert metrics.counts["renewals"] == 4 and metrics.counts["reissues"] == 1
    # And the new lease is renewed again, not re-read.
    clock.advance(20)
    cache.refresh_due()
    assert backend.reads == 2 and backend.renews == 5
    assert backend.revoked == []  # the old lease is left to expire, not revoked under the app


def test_lease_reissued_when_renew_says_expired() -> None:
    cache, backend, clock, metrics = make(CachePolicy(jitter=0.0), ttl=30, max_ttl=1000)
    cache.get(REF, backend)
    backend.renew_error = LeaseExpired("revoked behind our back")
    clock.advance(20)
    cache.refresh_due()
    assert backend.renews == 1 and backend.reads == 2
    assert cache.get(REF, backend).value == b"app/db-value-2"
    assert metrics.counts["reissues"] == 1 and metrics.counts["renewals"] == 0


def test_lazy_renewal_on_get_without_refresher() -> None:
    cache, backend, clock, _ = make(CachePolicy(jitter=0.0), ttl=30, max_ttl=1000)
    cache.get(REF, backend)
    clock.advance(29)
    cache.get(REF, backend)  # still fresh: no backend call
    assert backend.renews == 0
    clock.advance(2)  # expired: a lease past expiry cannot be renewed, so get re-issues
    assert cache.get(REF, backend).value == b"app/db-value-2"
    assert backend.reads == 2


# ---------------------------------------------------------------------------- errors


def test_stale_if_error_then_fail_closed() -> None:
    cache, backend, clock, metrics = make()  # fresh 100 s, max staleness 30 s
    cache.get(REF, backend)
    backend.fail = BackendUnavailable("down")
    clock.advance(110)  # 10 s past expiry
    assert cache.get(REF, backend).value == b"app/db-value-1"
    clock.advance(20)  # exactly max staleness
    assert cache.get(REF, backend).value == b"app/db-value-1"
    clock.advance(0.5)
    with pytest.raises(BackendUnavailable) as info:
        cache.get(REF, backend)
    assert "app/db-value" not in str(info.value)
    assert metrics.counts["errors"] >= 1
    assert max(metrics.stale) == pytest.approx(30)
    # Recovery: once the backoff allows another attempt, a fresh value is served again.
    backend.fail = None
    clock.advance(10)
    assert cache.get(REF, backend).value.startswith(b"app/db-value-")
    assert metrics.stale[-1] == 0.0


def test_once_the_backend_fails_stale_reads_do_not_wait_for_it() -> None:
    """After a failed refresh, an expired value within max staleness is answered at once while the
    retry runs in the background (a dead backend's timeout must not stall every request)."""
    cache, backend, clock, _ = make()  # fresh 100 s, max staleness 30 s
    cache.get(REF, backend)
    backend.fail = BackendUnavailable("down")
    clock.advance(101)
    assert cache.get(REF, backend).value == b"app/db-value-1"  # the first failure is met in-line
    clock.advance(10)  # past the backoff, still within max staleness
    backend.gate, backend.fail = threading.Event(), None  # the backend is back, but slow
    started = time.monotonic()
    assert cache.get(REF, backend).value == b"app/db-value-1"  # stale, at once
    assert time.monotonic() - started < 5
    wait_until(lambda: backend.reads == 3)  # the background retry is under way
    backend.gate.set()
    wait_until(lambda: cache.peek(str(REF)) is not None)
    assert cache.get(REF, backend).value == b"app/db-value-3"


def test_secret_not_found_is_authoritative() -> None:
    cache, backend, clock, _ = make()
    cache.get(REF, backend)
    backend.fail = SecretNotFound("gone")
    clock.advance(101)
    with pytest.raises(SecretNotFound):
        cache.get(REF, backend)
    assert len(cache) == 0


def test_backoff_spacing_grows_and_is_capped() -> None:
    cache, backend, clock, _ = make(rng=1.0)  # jitter factor 1.0: delays exactly 1, 2, 4, 8, 8...
    start = clock()
    cache.get(REF, backend)
    backend.fail = BackendUnavailable("down")
    clock.advance(80)  # refresh-ahead due
    for _ in range(200):  # 50 s in quarter-second steps
        cache.refresh_due()
        clock.advance(0.25)
    attempts = [t - start for t in backend.read_times[1:]]
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert gaps[:4] == [1, 2, 4, 8]
    assert all(g == 8 for g in gaps[4:])
    # get during a backoff window (value still fresh or stale-servable) does not call the backend
    reads = backend.reads
    cache.get(REF, backend)
    assert backend.reads == reads


def test_backoff_jitter_stays_within_half_to_full_delay() -> None:
    cache, backend, clock, _ = make(rng=0.0)  # lowest jitter: half of each delay
    cache.get(REF, backend)
    backend.fail = BackendUnavailable("down")
    clock.advance(80)
    for _ in range(100):
        cache.refresh_due()
        clock.advance(0.25)
    t = backend.read_times[1:]
    assert [b - a for a, b in itertools.pairwise(t)][:4] == [0.5, 1, 2, 4]


# ---------------------------------------------------------------------------- bounds, invalidation


def test_lru_bound() -> None:
    cache, backend, _, _ = make(dataclasses.replace(STATIC, max_entries=2))
    a, b, c = (SecretRef("fake", p) for p in ("a", "b", "c"))
    cache.get(a, backend)
    cache.get(b, backend)
    cache.get(a, backend)  # a becomes most recently used
    cache.get(c, backend)  # evicts b
    assert len(cache) == 2
    reads = backend.reads
    cache.get(a, backend)
    assert backend.reads == reads
    cache.get(b, backend)
    assert backend.reads == reads + 1


def test_invalidate_forces_reread() -> None:
    cache, backend, _, _ = make()
    assert cache.get(REF, backend).value == b"app/db-value-1"
    assert cache.invalidate(REF) is True
    assert cache.invalidate(str(REF)) is False
    assert cache.get(REF, backend).value == b"app/db-value-2"
    assert backend.reads == 2


def test_invalidate_during_flight_does_not_cache_old_read() -> None:
    cache, backend, _, metrics = make()
    backend.gate = threading.Event()
    results, errors = run_threads(1, lambda: cache.get(REF, backend).value)
    wait_until(lambda: metrics.counts["misses"] == 1)
    cache.invalidate(REF)
    backend.gate.set()
    wait_until(lambda: len(results) + len(errors) == 1)
    assert results == [b"app/db-value-1"]  # the waiter still gets its answer...
    backend.gate = None
    assert cache.get(REF, backend).value == b"app/db-value-2"  # ...but it was not cached


# ---------------------------------------------------------------------------- secrecy


def test_plaintext_not_in_entries_nor_repr() -> None:
    cache, backend, _, _ = make()
    plaintext = cache.get(REF, backend).value
    assert plaintext == b"app/db-value-1"
    entries = list(cache._entries.values())
    assert len(entries) == 1
    for entry in entries:
        for f in dataclasses.fields(entry):
            v = getattr(entry, f.name)
            if isinstance(v, bytes):
                assert plaintext not in v
            assert plaintext.decode() not in repr(v)
        assert plaintext.decode() not in repr(entry)
    assert plaintext.decode() not in repr(cache)
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(cache)


def test_ciphertext_is_bound_to_its_key() -> None:
    """The cache key is the associated data: a ciphertext moved under another key does not decrypt."""
    from cryptography.exceptions import InvalidTag

    cache, backend, _, _ = make()
    other = SecretRef("fake", "other")
    cache.get(REF, backend)
    cache.get(other, backend)
    e1, e2 = cache._entries[str(REF)], cache._entries[str(other)]
    e2.nonce, e2.ciphertext = e1.nonce, e1.ciphertext
    with pytest.raises(InvalidTag):
        cache.get(other, backend)


# ---------------------------------------------------------------------------- shutdown, threads


def test_close_revokes_leases() -> None:
    cache, backend, _, _ = make(CachePolicy(jitter=0.0), ttl=30)
    cache.get(REF, backend)
    cache.get(SecretRef("fake", "other"), backend)
    cache.close(revoke=True)
    assert sorted(backend.revoked) == ["lease-1", "lease-2"]
    with pytest.raises(BackendUnavailable):
        cache.get(REF, backend)
    cache.close(revoke=True)  # idempotent
    assert len(backend.revoked) == 2


def test_close_without_revoke() -> None:
    cache, backend, _, _ = make(CachePolicy(jitter=0.0), ttl=30)
    cache.get(REF, backend)
    cache.close(revoke=False)
    assert backend.revoked == []


def test_background_refresher_real_thread() -> None:
    backend = FakeBackend(time.time)
    cache = SecretCache(CachePolicy(refresh=0.05, jitter=0.0))
    cache.get(REF, backend)
    cache.start(interval=0.01)
    try:
        wait_until(lambda: backend.reads >= 3, timeout=5)
        assert cache._thread is not None and cache._thread.is_alive()
        thread = cache._thread
    finally:
        cache.close()
    assert not thread.is_alive()


@pytest.mark.parametrize(
    "kwargs",
    [{"refresh": 0}, {"renew_fraction": 1.0}, {"jitter": 1.0}, {"max_entries": 0},
     {"backoff_base": 10, "backoff_max": 1}, {"refresh_ahead": 0}],
)
def test_policy_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        CachePolicy(**kwargs)  # type: ignore[arg-type]
