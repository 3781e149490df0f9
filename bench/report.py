"""The results file: header, targets table, one section per scenario.

Every figure over rounds is written "median (min–max)"; a ratio is written
"0.42× (0.40–0.44)" and is always taken against a reference measured in the
same round.  A run that saw errors is flagged in its row, never hidden.
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

from bench.runner import Section, TargetRow
from bench.stats import Spread


def number(value: float, digits: int = 0) -> str:
    if math.isnan(value):
        return "–"
    return f"{value:,.{digits}f}"


def spread(value: Spread, digits: int = 0, unit: str = "") -> str:
    if value.count == 0:
        return "–"
    text = f"{number(value.median, digits)}{unit}"
    if value.count > 1:
        text += f" ({number(value.low, digits)}–{number(value.high, digits)})"
    return text


def percent(value: Spread) -> str:
    """A fraction (0.93) as a percentage (93 %)."""
    return spread(value.scaled(100), 0, " %")


def disturbance(server_core: Spread, load_core: Spread) -> str:
    """Median % of the server core and of the load core used by other processes: "3 / 41"."""
    if server_core.count == 0:
        return "–"
    return f"{server_core.median * 100:.0f} / {load_core.median * 100:.0f}"


DISTURBANCE_NOTE = (
    "**others %** (server core / load core): how much of each core processes that are not the "
    "benchmark's used during the measurement, median over the rounds; high figures mark disturbed "
    "measurements (a busy load core slows the load generator and the origin, not the server)."
)


def ratio(value: Spread, digits: int = 2) -> str:
    return spread(value, digits, "×")


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def targets_table(rows: list[TargetRow]) -> str:
    verdict = {True: "met", False: "**missed**", None: "not measured"}
    return table(["target", "measured", "result"], [[row.target, row.measured, verdict[row.met]] for row in rows])


def write_results(
    path: Path,
    *,
    started: datetime,
    finished: datetime,
    facts: dict[str, str],
    method: list[str],
    sections: list[Section],
) -> None:
    targets = [row for section in sections for row in section.targets]
    lines = [
        f"# muxproxy benchmark, {started:%Y-%m-%d}",
        "",
        "Written by `python -m bench` (see bench/README.md for the method and how to read this file).",
        "",
        table(["", ""], [["run", f"{started:%Y-%m-%d %H:%M} – {finished:%H:%M} UTC"]] + [[k, v] for k, v in facts.items()]),
        "",
        "## Method",
        "",
        *[f"* {line}" for line in method],
        "",
        "## Targets",
        "",
        "The benchmark reports these; nothing asserts them.",
        "",
        targets_table(targets) if targets else "(no scenario with a target was run)",
        "",
    ]
    for section in sections:
        lines += [section.markdown.rstrip(), ""]
        lines += [f"![{plot.stem}]({plot.name})" for plot in section.plots]
        lines.append("")
    path.write_text("\n".join(lines))
