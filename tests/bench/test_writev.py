"""bench/writev.py: the joined-or-writev measurement runs and reports every size."""

from __future__ import annotations

from bench import writev


def test_writev_measurement_reports_each_size_both_ways():
    results = writev.measure([100, 9000], responses=4, writes=3, rounds=1)
    assert [size for size, _, _ in results] == [100, 9000]
    assert all(joined > 0 and vectored > 0 for _, joined, vectored in results)
    table = writev.render(results, 4)
    assert "| 9,000 |" in table and "writev / joined" in table
