"""Running scenarios in interleaved rounds, and holding what they measured.

Method: a scenario is a list of cases (one configuration under one load).
Its servers are started once; then round 1 runs every case once, round 2
runs every case again, and so on, so slow drift of the machine (other
tenants, thermal state, page cache) spreads over all configurations instead
of landing on whichever ran last.  A case may name a reference case; its
figures are then also given as ratios to the reference's figures from the
same round, and the report quotes the median ratio with its min-max over the
rounds.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from bench.loads import Loads
from bench.machine import Placement
from bench.peers import Server, start_servers
from bench.stats import Spread


@dataclass(frozen=True, slots=True)
class Settings:
    """What the command line chose for this run."""

    rounds: int
    duration: float  # seconds per throughput/latency measurement
    smoke: bool
    idle_counts: tuple[int, ...]  # scenario 3


@dataclass(slots=True)
class Context:
    settings: Settings
    placement: Placement
    run_dir: Path
    loads: Loads


@dataclass(frozen=True, slots=True)
class Case:
    """One configuration under one load."""

    key: str
    label: str  # the configuration, as the table row shows it
    load: str  # the load, as the table shows it
    measure: Callable[[], dict[str, float]]
    reference: str | None = None  # key of the case this one is compared with, same round
    group: str = ""  # the table the case belongs to
    level: str = ""  # where the case sits on its plot's x axis


@dataclass(slots=True)
class Plan:
    servers: list[Server]  # started in this order, stopped in reverse
    cases: list[Case]


class Scenario(Protocol):
    number: int
    title: str

    def plan(self, ctx: Context) -> Plan: ...

    def report(self, results: "Results", ctx: Context, out_dir: Path, stem: str) -> "Section": ...


@dataclass(slots=True)
class TargetRow:
    target: str
    measured: str
    met: bool | None  # None: could not be measured


@dataclass(slots=True)
class Section:
    """A scenario's part of the results: markdown, plots, targets."""

    markdown: str
    plots: list[Path] = field(default_factory=list)
    targets: list[TargetRow] = field(default_factory=list)


class Results:
    """Figures per case and round."""

    def __init__(self, cases: list[Case]) -> None:
        self.cases = {case.key: case for case in cases}
        self.rounds: dict[str, list[dict[str, float]]] = {case.key: [] for case in cases}

    def add(self, key: str, metrics: dict[str, float]) -> None:
        self.rounds[key].append(metrics)

    def values(self, key: str, metric: str) -> list[float]:
        return [round_.get(metric, math.nan) for round_ in self.rounds[key]]

    def spread(self, key: str, metric: str) -> Spread:
        return Spread.of(self.values(key, metric))

    def ratio(self, key: str, metric: str, reference: str | None = None, *, inverse: bool = False) -> Spread:
        """metric / reference's metric in the same round (reference's / metric with `inverse`)."""
        reference = reference or self.cases[key].reference
        ratios = []
        for mine, theirs in zip(self.values(key, metric), self.values(reference, metric)):
            numerator, denominator = (theirs, mine) if inverse else (mine, theirs)
            ratios.append(numerator / denominator if denominator else math.nan)
        return Spread.of(ratios)

    def difference(self, key: str, metric: str, reference: str | None = None) -> Spread:
        """metric minus the reference's metric in the same round."""
        reference = reference or self.cases[key].reference
        return Spread.of([mine - theirs for mine, theirs in zip(self.values(key, metric), self.values(reference, metric))])

    def errors(self, key: str) -> int:
        return int(sum(value for value in self.values(key, "errors") if not math.isnan(value)))


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_scenario(scenario: Scenario, ctx: Context) -> Results:
    plan = scenario.plan(ctx)
    results = Results(plan.cases)
    with start_servers(*plan.servers):
        for round_number in range(1, ctx.settings.rounds + 1):
            log(f"scenario {scenario.number}, round {round_number}/{ctx.settings.rounds}")
            for case in plan.cases:
                metrics = case.measure()
                results.add(case.key, metrics)
                log(f"  {case.label} | {case.load}: {_brief(metrics)}")
    return results


def _brief(metrics: dict[str, float]) -> str:
    return ", ".join(f"{key}={value:.4g}" for key, value in metrics.items() if isinstance(value, (int, float)))
