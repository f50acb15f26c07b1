"""A token-bucket rate limiter per key (the sidecar keys it by peer uid).

Why it exists: token issuance costs an Ed25519 signature and an audit record, and failed
authentications are how a local attacker probes; both are limited per uid so one noisy or hostile
process cannot starve the others or flood the audit trail.

Each key has a bucket of ``burst`` tokens that refills continuously at ``rate_per_minute / 60`` tokens
per second; ``allow`` takes one token if there is one. A bucket that has refilled completely is
forgotten (it is indistinguishable from a new one), so memory stays bounded by the keys active within
the last ``burst / rate`` seconds.

The clock is injectable and defaults to ``time.monotonic``: a wall-clock step must neither open nor
close the gate. Thread-safe (one lock; each call is a few dict operations).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["RateLimiter"]

_PRUNE_EVERY = 1024
"""Forget refilled buckets after this many new buckets (amortised cleanup, no background thread)."""


class RateLimiter:
    """Token bucket per key: ``burst`` requests at once, then ``rate_per_minute`` on average."""

    def __init__(self, rate_per_minute: float, burst: int, now: Callable[[], float] = time.monotonic) -> None:
        if not rate_per_minute > 0:
            raise ValueError("rate_per_minute must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self._rate = rate_per_minute / 60.0  # tokens per second
        self._burst = float(burst)
        self._now = now
        self._lock = threading.Lock()
        # key -> (tokens left, time of that count)
        self._buckets: dict[int | str, tuple[float, float]] = {}
        self._created = 0

    def allow(self, key: int | str) -> bool:
        """Take one token from ``key``'s bucket; ``False`` (take nothing) when it is empty."""
        with self._lock:
            now = self._now()
            tokens = self._level(key, now)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                return False
            if key not in self._buckets:
                self._created += 1
                if self._created % _PRUNE_EVERY == 0:
                    self._prune(now)
            self._buckets[key] = (tokens - 1.0, now)
            return True

    def retry_after(self, key: int | str) -> float:
        """Seconds until ``allow(key)`` would succeed (0 when it would now): for a ``Retry-After`` header."""
        with self._lock:
            tokens = self._level(key, self._now())
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self._rate

    def _level(self, key: int | str, now: float) -> float:
        """Tokens in ``key``'s bucket at ``now`` (caller holds the lock)."""
        state = self._buckets.get(key)
        if state is None:
            return self._burst
        tokens, then = state
        elapsed = max(0.0, now - then)  # an injected clock may go backwards; never refill negatively
        return min(self._burst, tokens + elapsed * self._rate)

    def _prune(self, now: float) -> None:
        """Drop buckets that have refilled to ``burst`` (caller holds the lock)."""
        full = [key for key in self._buckets if self._level(key, now) >= self._burst]
        for key in full:
            del self._buckets[key]
