"""A second benchmark run on one day keeps that day's earlier results."""

from datetime import datetime, timezone

from bench.__main__ import results_stem

DAY = datetime(2026, 12, 7, 5, 30, tzinfo=timezone.utc)


def test_first_run_of_the_day_is_named_by_the_date(tmp_path):
    assert results_stem(tmp_path, DAY) == "2026-12-07"


def test_later_runs_of_the_day_are_numbered(tmp_path):
    (tmp_path / "2026-12-07.md").write_text("first")
    assert results_stem(tmp_path, DAY) == "2026-12-07-2"
    (tmp_path / "2026-12-07-2.md").write_text("second")
    assert results_stem(tmp_path, DAY) == "2026-12-07-3"


def test_other_days_and_plots_do_not_count(tmp_path):
    (tmp_path / "2026-12-06.md").write_text("yesterday")
    (tmp_path / "2026-12-07-scenario1.png").write_bytes(b"")
    assert results_stem(tmp_path, DAY) == "2026-12-07"
