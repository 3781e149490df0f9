"""One PNG per scenario: grouped bars, the median with a min–max whisker,
one panel per table.

matplotlib with the Agg backend (no display needed); imported only when
plots are drawn, so the load clients never pay for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from bench.stats import Spread


@dataclass(frozen=True, slots=True)
class Panel:
    """One chart: bars for each series in each group; a `None` value leaves a gap."""

    title: str
    ylabel: str
    groups: list[str]
    series: dict[str, list[Spread | None]]
    reference_line: float | None = None


def bar_panels(path: Path, title: str, panels: list[Panel]) -> Path:
    """Draw `panels` side by side into one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5.0), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        _draw(ax, panel)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _draw(ax, panel: Panel) -> None:
    count = max(1, len(panel.series))
    width = 0.8 / count
    for index, (name, values) in enumerate(panel.series.items()):
        xs, heights, low, high = [], [], [], []
        for group_index, value in enumerate(values):
            if value is None or value.count == 0 or math.isnan(value.median):
                continue
            xs.append(group_index + (index - (count - 1) / 2) * width)
            heights.append(value.median)
            low.append(value.median - value.low)
            high.append(value.high - value.median)
        ax.bar(xs, heights, width * 0.95, yerr=[low, high], capsize=2, label=name)
    if panel.reference_line is not None:
        ax.axhline(panel.reference_line, color="black", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(panel.groups)))
    ax.set_xticklabels(panel.groups, fontsize=8)
    ax.set_ylabel(panel.ylabel)
    ax.set_title(panel.title, fontsize=10)
    ax.legend(fontsize=7, loc="best")
    ax.grid(axis="y", alpha=0.3)
