"""A small Prometheus text-exposition registry (format 0.0.4) and the sidecar's metric set.

Why not ``prometheus_client``: the sidecar needs a handful of counters, one gauge family and one
histogram; a hundred lines avoid a dependency in a security component. Every metric is thread-safe
(the cache calls its hooks from worker threads with its own lock held, so each update is one short
critical section and never calls out). Label values are reference texts, routes, reasons and backend
names, never a secret value or a token.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Iterable, Sequence
from typing import TypeVar

from broker.cache import CounterName

__all__ = ["LATENCY_BUCKETS", "Counter", "Gauge", "Histogram", "Registry", "SidecarMetrics"]

LabelValues = tuple[str, ...]

LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _fmt(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()

    def _check(self, labels: LabelValues) -> None:
        if len(labels) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {len(labels)} values")

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def samples(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    """A monotonically increasing count per label set."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labelnames)
        self._values: dict[LabelValues, float] = {}
        self._cells: dict[LabelValues, list[list[float]]] = {}

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        self._check(labels)
        with self._lock:
            self._values[labels] = self._values.get(labels, 0.0) + amount

    def cell(self, *labels: str) -> list[float]:
        """A one-element list counted into this label set, for **one** writer thread (``cell[0] += 1``).

        Why: ``inc`` takes a lock and checks its labels on every call, which on the sidecar's read
        path cost more than the read's policy check. The event loop is a single thread, so it can
        keep its own cells and bump them without a lock; readers only load a float, which is atomic.
        Two threads adding to one cell would lose counts: give each writer its own (calls with the
        same labels return different cells, all summed on output)."""
        self._check(labels)
        cell = [0.0]
        with self._lock:
            self._cells.setdefault(labels, []).append(cell)
        return cell

    def _totals(self) -> dict[LabelValues, float]:
        """Caller holds the lock."""
        totals = dict(self._values)
        for labels, cells in self._cells.items():
            totals[labels] = totals.get(labels, 0.0) + sum(c[0] for c in cells)
        return totals

    def value(self, *labels: str) -> float:
        with self._lock:
            return self._totals().get(labels, 0.0)

    def samples(self) -> list[str]:
        with self._lock:
            items = sorted(self._totals().items())
        return [f"{self.name}{_labels(self.labelnames, k)} {_fmt(v)}" for k, v in items]


class Gauge(Counter):
    """A value that goes up and down (``set`` replaces it)."""

    kind = "gauge"

    def set(self, *labels: str, value: float) -> None:
        self._check(labels)
        with self._lock:
            self._values[labels] = value


class HistogramCell:
    """One writer thread's observations for one label set (``Histogram.cell``)."""

    __slots__ = ("buckets", "row")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.row = [0.0] * (len(buckets) + 2)  # count per bucket (last = +Inf)..., sum

    def observe(self, value: float) -> None:
        row = self.row
        row[bisect.bisect_left(self.buckets, value)] += 1
        row[-1] += value


class Histogram(_Metric):
    """Cumulative buckets plus ``_sum`` and ``_count`` per label set."""

    kind = "histogram"

    def __init__(
        self, name: str, help_text: str, labelnames: Sequence[str] = (),
        buckets: Iterable[float] = LATENCY_BUCKETS,
    ) -> None:
        super().__init__(name, help_text, labelnames)
        self.buckets = tuple(sorted(buckets))
        # per label set: [count per bucket (last = +Inf)..., sum]
        self._data: dict[LabelValues, list[float]] = {}
        self._cells: dict[LabelValues, list[HistogramCell]] = {}

    def observe(self, *labels: str, value: float) -> None:
        self._check(labels)
        i = bisect.bisect_left(self.buckets, value)
        with self._lock:
            row = self._data.get(labels)
            if row is None:
                row = self._data[labels] = [0.0] * (len(self.buckets) + 2)
            row[i] += 1
            row[-1] += value

    def cell(self, *labels: str) -> HistogramCell:
        """Observations for one label set from **one** writer thread, without the lock (see
        ``Counter.cell``); merged into this histogram's output."""
        self._check(labels)
        cell = HistogramCell(self.buckets)
        with self._lock:
            self._cells.setdefault(labels, []).append(cell)
        return cell

    def _rows(self) -> dict[LabelValues, list[float]]:
        """Caller holds the lock. A cell's row is copied first: its count and sum may then disagree
        by the observation in progress, never its buckets and count."""
        rows = {k: list(v) for k, v in self._data.items()}
        for labels, cells in self._cells.items():
            for cell in cells:
                snap = list(cell.row)
                row = rows.setdefault(labels, [0.0] * len(snap))
                for i, n in enumerate(snap):
                    row[i] += n
        return rows

    def count(self, *labels: str) -> int:
        with self._lock:
            row = self._rows().get(labels)
        return int(sum(row[:-1])) if row else 0

    def samples(self) -> list[str]:
        with self._lock:
            items = sorted(self._rows().items())
        out: list[str] = []
        for labels, row in items:
            running = 0.0
            for bound, n in zip((*self.buckets, math.inf), row[:-1], strict=True):
                running += n
                le = f'le="{_fmt(bound)}"'
                out.append(f"{self.name}_bucket{_labels(self.labelnames, labels, le)} {_fmt(running)}")
            out.append(f"{self.name}_sum{_labels(self.labelnames, labels)} {_fmt(row[-1])}")
            out.append(f"{self.name}_count{_labels(self.labelnames, labels)} {_fmt(running)}")
        return out


_M = TypeVar("_M", bound=_Metric)


class Registry:
    """Holds metrics in registration order and renders them as one exposition document."""

    def __init__(self) -> None:
        self._metrics: list[_Metric] = []

    def counter(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> Counter:
        return self._add(Counter(name, help_text, labelnames))

    def gauge(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> Gauge:
        return self._add(Gauge(name, help_text, labelnames))

    def histogram(
        self, name: str, help_text: str, labelnames: Sequence[str] = (),
        buckets: Iterable[float] = LATENCY_BUCKETS,
    ) -> Histogram:
        return self._add(Histogram(name, help_text, labelnames, buckets))

    def _add(self, metric: _M) -> _M:
        if any(m.name == metric.name for m in self._metrics):
            raise ValueError(f"metric {metric.name} registered twice")
        self._metrics.append(metric)
        return metric

    def render(self) -> str:
        lines: list[str] = []
        for metric in self._metrics:
            lines.extend(metric.header())
            lines.extend(metric.samples())
        return "\n".join(lines) + "\n"


class SidecarMetrics:
    """The sidecar's metrics; also implements ``broker.cache.Metrics`` (``count``/``staleness``)."""

    def __init__(self, prefix: str = "depthguard_sidecar") -> None:
        r = self.registry = Registry()
        self.requests = r.counter(f"{prefix}_requests_total", "HTTP requests by route, method and status.",
                                  ("route", "method", "status"))
        self.latency = r.histogram(f"{prefix}_request_duration_seconds",
                                   "Time from request start to response end, by route.", ("route",))
        self.cache = r.counter(f"{prefix}_cache_events_total",
                               "Secret cache events (hits, misses, refreshes, renewals, reissues, errors).",
                               ("event", "ref"))
        self.staleness_seconds = r.gauge(f"{prefix}_cache_staleness_seconds",
                                         "How far past expiry the last value served for a reference was.",
                                         ("ref",))
        self.backend_errors = r.counter(f"{prefix}_backend_errors_total", "Failed backend calls.",
                                        ("backend", "error"))
        self.token_denials = r.counter(f"{prefix}_token_denials_total",
                                       "Refused tokens and token requests, by reason.", ("reason",))
        self.access_denials = r.counter(f"{prefix}_access_denials_total",
                                        "Refused secret reads by reason (out of scope, not found...).",
                                        ("reason",))
        self.tokens_issued = r.counter(f"{prefix}_tokens_issued_total", "Tokens issued, by role.", ("role",))
        self.rate_limited = r.counter(f"{prefix}_rate_limited_total",
                                      "Requests refused by a rate limit, by limit.", ("limit",))
        self.reloads = r.counter(f"{prefix}_config_reloads_total", "Config reloads, by result.", ("result",))
        self.rejected = r.counter(f"{prefix}_protocol_rejections_total",
                                  "Requests refused before routing (oversized headers or body).", ("status",))

    # broker.cache.Metrics protocol
    def count(self, counter: CounterName, key: str) -> None:
        self.cache.inc(counter, key)

    def staleness(self, key: str, seconds: float) -> None:
        self.staleness_seconds.set(key, value=seconds)

    def render(self) -> str:
        return self.registry.render()
