"""Single-writer metric cells add up with the locked updates in the exposition."""

from __future__ import annotations

import threading

import pytest

from sidecar.metrics import Registry


def test_counter_cells_and_inc_are_summed_per_label_set() -> None:
    reg = Registry()
    c = reg.counter("t_requests_total", "help", ("route", "status"))
    c.inc("/a", "200")
    one, two = c.cell("/a", "200"), c.cell("/a", "200")  # two writers: one cell each
    one[0] += 2
    two[0] += 3
    c.cell("/b", "404")[0] += 1
    assert c.value("/a", "200") == 6 and c.value("/b", "404") == 1 and c.value("/c", "200") == 0
    text = reg.render()
    assert 't_requests_total{route="/a",status="200"} 6\n' in text
    assert 't_requests_total{route="/b",status="404"} 1\n' in text
    with pytest.raises(ValueError, match="labels"):
        c.cell("/a")


def test_histogram_cells_merge_into_buckets_sum_and_count() -> None:
    reg = Registry()
    h = reg.histogram("t_seconds", "help", ("route",), buckets=(0.001, 0.01))
    h.observe("/a", value=0.0005)
    cell = h.cell("/a")
    for v in (0.0001, 0.005, 0.5):
        cell.observe(v)
    assert h.count("/a") == 4
    text = reg.render()
    assert 't_seconds_bucket{route="/a",le="0.001"} 2\n' in text
    assert 't_seconds_bucket{route="/a",le="0.01"} 3\n' in text
    assert 't_seconds_bucket{route="/a",le="+Inf"} 4\n' in text
    assert 't_seconds_count{route="/a"} 4\n' in text
    total = float(text.split('t_seconds_sum{route="/a"} ')[1].split()[0])
    assert total == pytest.approx(0.0005 + 0.0001 + 0.005 + 0.5)


def test_a_cell_per_thread_loses_nothing_while_another_thread_renders() -> None:
    reg = Registry()
    c = reg.counter("t_total", "help", ("k",))
    h = reg.histogram("t_h", "help", ("k",))
    n, threads = 20000, 4

    def write() -> None:
        cell, hcell = c.cell("x"), h.cell("x")
        for _ in range(n):
            cell[0] += 1
            hcell.observe(0.0002)

    workers = [threading.Thread(target=write) for _ in range(threads)]
    for w in workers:
        w.start()
    while any(w.is_alive() for w in workers):
        reg.render()  # concurrent readers see partial totals, never an error
    for w in workers:
        w.join()
    assert c.value("x") == n * threads
    assert h.count("x") == n * threads
