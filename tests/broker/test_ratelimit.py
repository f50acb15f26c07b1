"""Tests for ``broker/ratelimit.py``: burst, refill and isolation with an injected clock."""

from __future__ import annotations

import threading

import pytest

from broker.ratelimit import RateLimiter


class FakeClock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_burst_then_refill() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_minute=60, burst=5, now=clock)  # one token per second
    assert [limiter.allow(1000) for _ in range(6)] == [True] * 5 + [False]
    assert not limiter.allow(1000)  # a refused request takes nothing, and gives nothing back
    clock.t += 0.5
    assert not limiter.allow(1000)  # half a token is not a token
    clock.t += 0.5
    assert limiter.allow(1000)
    assert not limiter.allow(1000)
    clock.t += 3
    assert [limiter.allow(1000) for _ in range(4)] == [True, True, True, False]


def test_refill_caps_at_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_minute=600, burst=3, now=clock)
    assert all(limiter.allow("k") for _ in range(3))
    clock.t += 3600  # an hour idle refills to burst, not to 36,000
    assert [limiter.allow("k") for _ in range(4)] == [True, True, True, False]


def test_keys_are_independent() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_minute=1, burst=1, now=clock)
    assert limiter.allow(1)
    assert not limiter.allow(1)
    assert limiter.allow(2)
    assert limiter.allow("1")  # str and int keys differ


def test_retry_after() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_minute=30, burst=1, now=clock)  # one token per 2 s
    assert limiter.retry_after(7) == 0.0
    assert limiter.allow(7)
    assert limiter.retry_after(7) == pytest.approx(2.0)
    clock.t += 1.5
    assert limiter.retry_after(7) == pytest.approx(0.5)
    clock.t += 0.5
    assert limiter.allow(7)


def test_clock_going_backwards_does_not_refill() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_minute=60, burst=1, now=clock)
    assert limiter.allow(1)
    clock.t -= 50
    assert not limiter.allow(1)


def test_thread_safe_exactly_burst() -> None:
    clock = FakeClock()  # frozen: no refill while the threads run
    limiter = RateLimiter(rate_per_minute=60, burst=50, now=clock)
    results: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        mine = [limiter.allow("shared") for _ in range(100)]
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(results) == 50


def test_refilled_buckets_are_forgotten() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_minute=60, burst=2, now=clock)
    for key in range(1024):
        limiter.allow(key)
    clock.t += 10  # every bucket is full again
    for key in range(2000, 2000 + 1024):  # the 1024th new bucket triggers a prune
        limiter.allow(key)
    assert len(limiter._buckets) <= 1024
    assert limiter.allow(0)  # a forgotten bucket behaves as a full one


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (60, 0)])
def test_invalid_settings(rate: float, burst: int) -> None:
    with pytest.raises(ValueError):
        RateLimiter(rate_per_minute=rate, burst=burst)
