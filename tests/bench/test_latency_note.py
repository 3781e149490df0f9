"""Scenario 5 flags measurements whose load client fell behind its schedule."""

import math

from bench.scenarios.latency import LAG_LIMIT_MS, disturbed_note


def test_a_run_whose_client_kept_its_schedule_gets_no_warning():
    assert disturbed_note([2.8, 3.4, 8.2, LAG_LIMIT_MS, math.nan]) is None
    assert disturbed_note([]) is None


def test_late_measurements_are_counted_and_the_worst_is_named():
    note = disturbed_note([2.8, 44.4, 3.0, 54.9, math.nan])
    assert note is not None
    assert note.startswith("**Disturbed**: in 2 of 5 measurements")
    assert "up to 54.9 ms" in note
