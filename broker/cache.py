"""The broker's lease-aware, encrypted, in-memory secret cache.

Why it exists: the sidecar must keep answering when a backend blips, must not hammer a backend with N
identical reads, and must keep dynamic (leased) credentials alive by *renewing* them rather than minting
new ones on every expiry. It must also keep plaintext out of long-lived memory structures.

What it does
------------
* ``SecretCache.get(ref, backend)`` answers from the cache or reads the backend. Entries are keyed by
  ``str(ref)`` (``BACKEND:PATH[#KEY][@VERSION]``); the caller maps ``ref.backend`` to the backend
  instance and passes both, so the cache holds no configuration of its own.
* **Encryption at rest in memory**: every value is stored as AES-256-GCM ciphertext under a key made
  with ``os.urandom(32)`` when the cache is built, a fresh 96-bit nonce per encryption, and the cache
  key as associated data (so a ciphertext moved to another key fails to decrypt). Plaintext exists only
  inside ``get`` and in the ``SecretValue`` it returns.
* **Refresh-ahead**: a static value is fresh for ``policy.refresh`` seconds (or the per-``get``
  ``refresh`` override); it becomes due for refresh at ``refresh_ahead`` of that interval, minus a
  random jitter so a fleet of sidecars does not refresh in lock-step. ``refresh_due()`` (called by the
  optional background thread from ``start()``, or by tests with a fake clock) performs due refreshes.
  Without the thread, values are refreshed lazily, synchronously, when ``get`` finds them expired.
* **Leases**: a leased value is due at ``renew_fraction`` (default 2/3) of its lease TTL. It is
  *renewed* through ``backend.renew`` while the lease can still be extended; it is *re-issued* (read
  again) only when renewal is impossible: the lease is not renewable, already reaches its
  ``max_expires_at``, has expired, or ``renew`` raises ``LeaseExpired``. The old lease is not revoked on
  re-issue (applications may still hold the old credential; it expires by itself).
* **Single-flight**: concurrent ``get``s for a missing or expired key share one backend call; if it
  fails, every waiter gets that error (or a stale value, see below).
* **Stale-if-error, then fail closed**: once a value has expired and refreshing it fails, the old value
  is served while ``now - expires_at <= max_staleness``; after that ``get`` raises
  ``BackendUnavailable``. ``SecretNotFound`` is authoritative: the entry is dropped and the error raised.
* **Backoff**: a failed refresh is retried after ``min(backoff_max, backoff_base * 2**(n-1))`` seconds,
  scaled by a random factor in [0.5, 1] ("equal jitter"); in between, ``get`` serves stale (or fails
  closed) without calling the backend.
* **Bounded**: at most ``max_entries`` entries, least recently used evicted first.
* ``invalidate(ref)`` drops an entry (and detaches an in-flight read), forcing the next ``get`` to read.
* ``close(revoke=...)`` stops the refresher and optionally revokes every held lease.

What the encryption does and does not protect against
------------------------------------------------------
It stops plaintext from leaking through accidental logging, ``repr``, pickling or debugging dumps of
the cache's structures, and keeps each plaintext's lifetime short (one ``get`` answer). It does **not**
protect against an attacker who can read this process's memory: the key sits in the same heap, and a
heap dump that finds it decrypts everything. Python cannot reliably wipe ``bytes`` either, so returned
values live until garbage-collected. Defence against a memory-reading attacker is the OS's job (separate
uid, no ptrace, no core dumps), not this module's.

Times
-----
The clock is injectable (``now``) and defaults to ``time.time``: lease times are wall-clock epoch seconds
(see ``Lease``), so the cache must compare them against the same clock.

This module never logs, formats or raises with a secret value; logs name the cache key and the error
class only.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broker.backends.interface import (
    BackendUnavailable,
    Lease,
    LeaseExpired,
    SecretBackend,
    SecretNotFound,
    SecretRef,
    SecretValue,
)

__all__ = ["CachePolicy", "CounterName", "Metrics", "NoopMetrics", "SecretCache"]

log = logging.getLogger(__name__)

CounterName = Literal["hits", "misses", "refreshes", "renewals", "reissues", "errors"]


class Metrics(Protocol):
    """Hooks for a metrics backend (Prometheus in the sidecar). ``key`` is the reference text, never a
    value. Implementations must be cheap and thread-safe; they are called with the cache lock held."""

    def count(self, counter: CounterName, key: str) -> None:
        """Increment ``counter`` for ``key``.

        ``hits``: answered from a fresh entry. ``misses``: the entry was absent or expired.
        ``refreshes``: an existing entry was brought up to date (any way); ``renewals`` and
        ``reissues`` break that down for leased values. ``errors``: a backend call failed.
        """

    def staleness(self, key: str, seconds: float) -> None:
        """Gauge: how far past expiry the value just served is (0 once refreshed)."""


class NoopMetrics:
    """The default: metrics cost nothing when nobody collects them."""

    def count(self, counter: CounterName, key: str) -> None:
        pass

    def staleness(self, key: str, seconds: float) -> None:
        pass


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """Tuning knobs; every duration is in seconds."""

    refresh: float = 300.0
    """How long a static (unleased) value counts as fresh (the config's per-secret ``refresh``)."""
    refresh_ahead: float = 0.8
    """Fraction of ``refresh`` after which a static value is due for a background refresh."""
    jitter: float = 0.1
    """Up to this fraction of the interval is taken off each due time, at random, so many sidecars do
    not refresh (or renew) at the same instant."""
    max_staleness: float = 300.0
    """How long past expiry a value may still be served while the backend fails; then fail closed."""
    max_entries: int = 1024
    """Bound on cached entries (least recently used evicted first)."""
    backoff_base: float = 1.0
    """First retry delay after a failed refresh; doubles per consecutive failure."""
    backoff_max: float = 60.0
    """Cap on the retry delay."""
    renew_fraction: float = 2 / 3
    """Fraction of a lease's TTL after which it is renewed (or re-issued when it cannot be)."""
    revoke_on_close: bool = True
    """Default for ``close()``: give leases back at shutdown rather than let them linger to expiry."""

    def __post_init__(self) -> None:
        if self.refresh <= 0:
            raise ValueError("refresh must be > 0")
        if not 0 < self.refresh_ahead <= 1:
            raise ValueError("refresh_ahead must be in (0, 1]")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        if self.max_staleness < 0:
            raise ValueError("max_staleness must be >= 0")
        if self.max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        if self.backoff_base <= 0 or self.backoff_max < self.backoff_base:
            raise ValueError("need 0 < backoff_base <= backoff_max")
        if not 0 < self.renew_fraction < 1:
            raise ValueError("renew_fraction must be in (0, 1)")


@dataclass(slots=True)
class _Entry:
    """One cached value, ciphertext only. Replaced (not mutated) when its value or lease changes, so a
    reader holding the lock always sees a consistent entry; only the failure bookkeeping is mutated."""

    ref: SecretRef
    backend: SecretBackend = field(repr=False)
    nonce: bytes = field(repr=False)
    ciphertext: bytes = field(repr=False)
    version: str | None
    lease: Lease | None
    interval: float
    """Freshness interval for static values (policy default or the ``get`` override)."""
    fetched_at: float
    refresh_at: float
    """When the refresher should renew / re-read (refresh-ahead, renew_fraction, minus jitter)."""
    expires_at: float
    """After this the value is stale: served only on backend error, for up to ``max_staleness``."""
    failures: int = 0
    next_attempt_at: float = 0.0
    """Backoff: no backend call for this entry before this time."""


@dataclass(slots=True)
class _Flight:
    """One in-progress backend call that concurrent callers for the same key wait on."""

    done: threading.Event = field(default_factory=threading.Event)
    entry: _Entry | None = None
    error: Exception | None = None
    detached: bool = False
    """Set by ``invalidate``/``close``: the result is handed to waiters but not cached."""


class SecretCache:
    """Thread-safe cache in front of ``SecretBackend``s. See the module docstring for the contract."""

    def __init__(
        self,
        policy: CachePolicy | None = None,
        *,
        now: Callable[[], float] | None = None,
        metrics: Metrics | None = None,
        rng: Callable[[], float] | None = None,
    ) -> None:
        """``now`` is the clock (wall-clock epoch seconds by default); ``rng`` returns floats in [0, 1]
        for jitter (tests pin it to make due times exact)."""
        self.policy = policy or CachePolicy()
        self._now: Callable[[], float] = now or time.time
        self._metrics: Metrics = metrics or NoopMetrics()
        self._rng: Callable[[], float] = rng or random.random
        # Security-relevant: a per-process key that never leaves memory and is never persisted.
        self._aead = AESGCM(os.urandom(32))
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._flights: dict[str, _Flight] = {}
        self._closed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"SecretCache(entries={len(self._entries)}, policy={self.policy!r})"

    def __reduce__(self) -> str | tuple[object, ...]:
        # A cache is process-local by design (its key is); refuse to be pickled rather than leak.
        raise TypeError("SecretCache cannot be pickled")

    def __len__(self) -> int:
        return len(self._entries)

    # ------------------------------------------------------------------ public API

    def get(self, ref: SecretRef, backend: SecretBackend, *, refresh: float | None = None) -> SecretValue:
        """Return the value for ``ref``, reading ``backend`` on a miss or an expired entry.

        ``refresh`` overrides ``policy.refresh`` for a static value when it is first cached. Raises what
        the backend raised on a cold miss; ``BackendUnavailable`` once a stale value is past
        ``max_staleness``; ``SecretNotFound`` when the backend says the secret is gone.
        """
        key = str(ref)
        with self._lock:
            if self._closed:
                raise BackendUnavailable("secret cache is closed")
            now = self._now()
            entry = self._entries.get(key)
            if entry is not None and now < entry.expires_at:
                self._entries.move_to_end(key)
                self._metrics.count("hits", key)
                return self._decrypt(key, entry)
            self._metrics.count("misses", key)
            if entry is not None and now < entry.next_attempt_at:
                # Backing off: do not call a failing backend on every get.
                return self._stale_or_fail(key, entry, now, None)
            flight = self._flights.get(key)
            leader = flight is None
            if (
                entry is not None
                and entry.failures
                and now - entry.expires_at <= self.policy.max_staleness
            ):
                # The backend has been failing: answer from the cache now and retry behind the
                # caller's back, rather than make every request wait out a dead backend's timeout.
                if leader:
                    flight = self._flights[key] = _Flight()
                    threading.Thread(
                        target=self._run_flight, args=(key, flight, ref, backend, entry, refresh),
                        name=f"refresh {key}", daemon=True,
                    ).start()
                return self._stale_or_fail(key, entry, now, None)
            if flight is None:
                flight = self._flights[key] = _Flight()
        if leader:
            self._run_flight(key, flight, ref, backend, entry, refresh)
        else:
            flight.done.wait()
        with self._lock:
            if flight.entry is not None:
                return self._decrypt(key, flight.entry)
            err = flight.error
            assert err is not None  # a finished flight has an entry or an error
            current = self._entries.get(key)
            if current is None or isinstance(err, SecretNotFound):
                raise err
            return self._stale_or_fail(key, current, self._now(), err)

    def peek(self, key: str) -> SecretValue | None:
        """The value for ``key`` (``str(ref)``) if a fresh entry exists, else ``None``; never calls a
        backend, so an async server can answer a hit on its event loop without a thread hop."""
        with self._lock:
            if self._closed:
                return None
            entry = self._entries.get(key)
            if entry is None or self._now() >= entry.expires_at:
                return None
            self._entries.move_to_end(key)
            self._metrics.count("hits", key)
            return self._decrypt(key, entry)

    def servable(self, key: str) -> bool:
        """Whether ``get`` could answer ``key`` from the cache right now (fresh, or expired within
        ``max_staleness``) even if its backend is down: what readiness means for a warm cache."""
        with self._lock:
            entry = self._entries.get(key)
            return entry is not None and self._now() - entry.expires_at <= self.policy.max_staleness

    def invalidate(self, ref: SecretRef | str) -> bool:
        """Drop the entry for ``ref`` so the next ``get`` reads the backend. An in-flight read is
        detached: its waiters still get its answer but it is not cached. The lease (if any) is not
        revoked: callers may still be using the credential. Returns whether anything was cached."""
        key = str(ref)
        with self._lock:
            flight = self._flights.pop(key, None)
            if flight is not None:
                flight.detached = True
            return self._entries.pop(key, None) is not None

    def refresh_due(self) -> int:
        """Refresh (renew, re-issue or re-read) every entry whose due time has come and that is not
        backing off. Errors are recorded (metrics, backoff), never raised. Returns how many were tried.
        Called by the background thread; tests call it directly with a fake clock."""
        with self._lock:
            if self._closed:
                return 0
            now = self._now()
            due: list[tuple[str, _Flight, _Entry]] = []
            for key, entry in self._entries.items():
                if now >= entry.refresh_at and now >= entry.next_attempt_at and key not in self._flights:
                    flight = self._flights[key] = _Flight()
                    due.append((key, flight, entry))
        for key, flight, entry in due:
            self._run_flight(key, flight, entry.ref, entry.backend, entry, None)
        return len(due)

    def start(self, interval: float = 1.0) -> None:
        """Start the single background refresher thread (a daemon), calling ``refresh_due`` every
        ``interval`` seconds until ``close``."""
        with self._lock:
            if self._closed:
                raise RuntimeError("secret cache is closed")
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._loop, args=(interval,), name="depthguard-cache-refresher", daemon=True
            )
            self._thread.start()

    def close(self, revoke: bool | None = None) -> None:
        """Stop the refresher, revoke held leases if ``revoke`` (default ``policy.revoke_on_close``),
        and drop every entry. Idempotent. Revocation failures are logged (key and error class only)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread, self._thread = self._thread, None
            entries = list(self._entries.items())
            self._entries.clear()
            for flight in self._flights.values():
                flight.detached = True
            self._flights.clear()
        self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        if revoke if revoke is not None else self.policy.revoke_on_close:
            for key, entry in entries:
                if entry.lease is None:
                    continue
                try:
                    entry.backend.revoke(entry.lease)
                except Exception as err:  # shutdown must go on: one bad backend cannot block the rest
                    log.warning("could not revoke the lease of %s: %s", key, type(err).__name__)

    # ------------------------------------------------------------------ internals

    def _loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.refresh_due()
            except Exception:  # the refresher must survive anything; refresh_due records backend errors
                log.exception("secret cache refresher failed")

    def _encrypt(self, key: str, plaintext: bytes) -> tuple[bytes, bytes]:
        nonce = os.urandom(12)  # random 96-bit nonce per encryption; far below GCM's collision bound
        return nonce, self._aead.encrypt(nonce, plaintext, key.encode())

    def _decrypt(self, key: str, entry: _Entry) -> SecretValue:
        plaintext = self._aead.decrypt(entry.nonce, entry.ciphertext, key.encode())
        # The entry's nonce is random per encryption (one per fetch): a fine identity for the value.
        return SecretValue(plaintext, version=entry.version, lease=entry.lease, fetched_at=entry.fetched_at,
                           origin=entry.nonce)

    def _stale_or_fail(self, key: str, entry: _Entry, now: float, err: Exception | None) -> SecretValue:
        """Serve an expired value within ``max_staleness``; otherwise fail closed. Caller holds the lock."""
        stale_for = now - entry.expires_at
        if stale_for <= self.policy.max_staleness:
            self._metrics.staleness(key, max(stale_for, 0.0))
            return self._decrypt(key, entry)
        raise BackendUnavailable(
            f"{key}: backend unavailable and the cached value is {stale_for:.1f}s past expiry"
            f" (max staleness {self.policy.max_staleness:.0f}s)"
        ) from err

    def _can_renew(self, lease: Lease, now: float) -> bool:
        if not lease.renewable or now >= lease.expires_at:
            return False
        # A lease already reaching its max TTL cannot be extended: re-issue instead of renewing.
        return lease.max_expires_at is None or (
            now < lease.max_expires_at and lease.expires_at < lease.max_expires_at
        )

    def _schedule(self, lease: Lease | None, interval: float, now: float) -> tuple[float, float]:
        """(refresh_at, expires_at) for a value fetched or renewed at ``now``."""
        if lease is not None:
            span = max(lease.expires_at - now, 0.0)
            expires_at = lease.expires_at
            fraction = self.policy.renew_fraction
        else:
            span = interval
            expires_at = now + interval
            fraction = self.policy.refresh_ahead
        refresh_at = now + span * fraction - span * self.policy.jitter * self._rng()
        return refresh_at, expires_at

    def _fetch(
        self, key: str, ref: SecretRef, backend: SecretBackend, old: _Entry | None, refresh: float | None
    ) -> tuple[_Entry, CounterName | None]:
        """Renew or read, without the lock held. Returns the new entry and the lease counter to bump."""
        now = self._now()
        if old is not None and old.lease is not None and self._can_renew(old.lease, now):
            try:
                lease = backend.renew(old.lease)
            except LeaseExpired:
                pass  # cannot be extended any more: fall through to re-issue
            else:
                refresh_at, expires_at = self._schedule(lease, old.interval, now)
                renewed = dataclasses.replace(
                    old, lease=lease, refresh_at=refresh_at, expires_at=expires_at, failures=0,
                    next_attempt_at=0.0,
                )
                return renewed, "renewals"
        value = backend.read(ref)
        now = self._now()
        interval = old.interval if old is not None else (refresh or self.policy.refresh)
        nonce, ciphertext = self._encrypt(key, value.value)
        refresh_at, expires_at = self._schedule(value.lease, interval, now)
        entry = _Entry(
            ref=ref, backend=backend, nonce=nonce, ciphertext=ciphertext, version=value.version,
            lease=value.lease, interval=interval, fetched_at=now, refresh_at=refresh_at,
            expires_at=expires_at,
        )
        return entry, ("reissues" if old is not None and old.lease is not None else None)

    def _run_flight(
        self,
        key: str,
        flight: _Flight,
        ref: SecretRef,
        backend: SecretBackend,
        old: _Entry | None,
        refresh: float | None,
    ) -> None:
        """Do the one backend call for ``flight`` and publish its outcome; always wakes the waiters."""
        try:
            try:
                entry, lease_counter = self._fetch(key, ref, backend, old, refresh)
            except Exception as err:
                with self._lock:
                    flight.error = err
                    self._metrics.count("errors", key)
                    log.warning("refreshing %s failed: %s", key, type(err).__name__)
                    current = self._entries.get(key)
                    if not flight.detached and current is not None:
                        if isinstance(err, SecretNotFound):
                            del self._entries[key]  # authoritative: the secret is gone
                        else:
                            current.failures += 1
                            delay = min(
                                self.policy.backoff_max,
                                self.policy.backoff_base * 2 ** (current.failures - 1),
                            )
                            current.next_attempt_at = self._now() + delay * (0.5 + 0.5 * self._rng())
                return
            with self._lock:
                flight.entry = entry
                if old is not None:
                    self._metrics.count("refreshes", key)
                    self._metrics.staleness(key, 0.0)
                if lease_counter is not None:
                    self._metrics.count(lease_counter, key)
                if not flight.detached and not self._closed:
                    self._entries[key] = entry
                    self._entries.move_to_end(key)
                    while len(self._entries) > self.policy.max_entries:
                        self._entries.popitem(last=False)
        finally:
            with self._lock:
                if flight.entry is None and flight.error is None:
                    # Interrupted by a BaseException: waiters must not hang, nor see a bogus answer.
                    flight.error = BackendUnavailable(f"{key}: refresh was interrupted")
                if self._flights.get(key) is flight:
                    del self._flights[key]
            flight.done.set()
