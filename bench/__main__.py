"""`python -m bench`: run the benchmark and write bench/results/<date>.md
(`<date>-2.md` and so on for a later run on the same day).

    python -m bench [--scenarios 1,2,3,4,5] [--rounds 3] [--duration 5] [--smoke] [--output DIR]

Strategy: check every prerequisite first and stop with a clear message if
one is missing (nothing is installed); pin this process to the load core;
run each chosen scenario in interleaved rounds (bench/runner.py) with every
server started here and stopped by PID on the way out, also on Ctrl-C or
SIGTERM; then write the results file and one PNG per scenario.  Working
files (rendered configs, server logs) go to a temporary directory that is
removed after a successful run and kept, with its path printed, after a
failed one.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import signal
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from bench import machine, report
from bench.loads import Loads
from bench.peers import REPO
from bench.prerequisites import missing_message, missing_requirements
from bench.procs import ProcessFailed
from bench.runner import Context, Settings, log, run_scenario
from bench.scenarios import SCENARIOS

RESULTS = Path(__file__).resolve().parent / "results"
FULL = Settings(rounds=3, duration=5.0, smoke=False, idle_counts=(1000, 10000))
#: Seconds total, one round, every scenario and every case still run.
SMOKE = Settings(rounds=1, duration=0.5, smoke=True, idle_counts=(100,))
#: File descriptors a server needs beyond its idle client connections.
FD_MARGIN = 1024


def results_stem(out_dir: Path, started: datetime) -> str:
    """`<date>`, or `<date>-2`, `-3`... when that day's results are already
    there: a second run on the same day (another machine, another build)
    must not overwrite the first, which the README may quote."""
    day = f"{started:%Y-%m-%d}"
    stem, number = day, 1
    while (out_dir / f"{stem}.md").exists():
        number += 1
        stem = f"{day}-{number}"
    return stem


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark muxproxy against nginx, HAProxy and nghttpx (see bench/README.md).",
    )
    parser.add_argument("--scenarios", default="1,2,3,4,5", help="comma-separated scenario numbers (default: all)")
    parser.add_argument("--rounds", type=int, help=f"rounds of interleaved measurements (default {FULL.rounds})")
    parser.add_argument("--duration", type=float, help=f"seconds per throughput or latency measurement (default {FULL.duration:g})")
    parser.add_argument("--smoke", action="store_true", help="tiny run of every scenario: 1 round, short loads, 100 idle connections")
    parser.add_argument("--output", type=Path, help="directory for the results file and plots (default bench/results)")
    args = parser.parse_args(argv)
    try:
        args.scenarios = sorted({int(part) for part in args.scenarios.split(",")})
    except ValueError:
        parser.error(f"--scenarios: expected numbers like 1,3, got {args.scenarios!r}")
    unknown = [number for number in args.scenarios if number not in SCENARIOS]
    if unknown:
        parser.error(f"--scenarios: no scenario {unknown} (there are {sorted(SCENARIOS)})")
    return args


def settings_from(args: argparse.Namespace) -> Settings:
    base = SMOKE if args.smoke else FULL
    return Settings(
        rounds=args.rounds or base.rounds,
        duration=args.duration or base.duration,
        smoke=base.smoke,
        idle_counts=base.idle_counts,
    )


def raise_file_limit(settings: Settings, scenarios: list[int]) -> str | None:
    """Raise this process's (and so every child's) file limit to the hard limit; a problem, or None."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    needed = max(settings.idle_counts) + FD_MARGIN
    if 3 in scenarios and hard != resource.RLIM_INFINITY and hard < needed:
        return (
            f"scenario 3 opens {max(settings.idle_counts):,} connections to one server and needs a file limit of "
            f"at least {needed:,}; the hard limit is {hard:,} (raise it with `ulimit -Hn` or limits.conf)"
        )
    return None


def _stop_on_sigterm(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    missing = missing_requirements()
    if missing:
        print(missing_message(missing), file=sys.stderr)
        return 2
    settings = settings_from(args)
    problem = raise_file_limit(settings, args.scenarios)
    if problem:
        print(f"python -m bench: {problem}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    placement = machine.Placement.for_this_machine()
    placement.pin_self()
    out_dir = args.output or RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    started = datetime.now(timezone.utc)
    stem = f"smoke-{started:%Y-%m-%d-%H%M%S}" if settings.smoke else results_stem(out_dir, started)
    run_dir = Path(tempfile.mkdtemp(prefix="muxproxy-bench-"))
    ctx = Context(settings, placement, run_dir, Loads(run_dir, placement.load_core, REPO))
    # Before any measurement and before the noise count: the header's facts
    # build the compiled floor and mux load client (bench/compiled.py), some
    # seconds of compiling the first time.
    facts = machine.facts()
    noise = machine.Noise.start()
    log(f"{'smoke' if settings.smoke else 'full'} run, scenarios {args.scenarios}, {settings.rounds} round(s); {placement.describe()}")
    sections = []
    try:
        for number in args.scenarios:
            scenario = SCENARIOS[number]
            results = run_scenario(scenario, ctx)
            sections.append(scenario.report(results, ctx, out_dir, stem))
    except (ProcessFailed, KeyboardInterrupt) as exc:
        print(f"python -m bench: stopped: {exc}\nworking files kept in {run_dir}", file=sys.stderr)
        return 1
    finished = datetime.now(timezone.utc)
    method = [
        f"Rounds: {settings.rounds}, every configuration once per round, in the same order; "
        f"{settings.duration:g} s per throughput or latency measurement{' (smoke run: tiny loads, figures are not meaningful)' if settings.smoke else ''}.",
        f"Pinning: {placement.describe()}.",
        "Every peer runs one worker process or thread on its one core: nginx `worker_processes 1`, HAProxy "
        "`nbthread 1`, nghttpx `workers=1`; muxproxy is one process.  Configs: bench/configs/.",
        "Server CPU: utime + stime from /proc/PID/stat, summed over the server's process tree, read before "
        "and after each measurement; per request = that CPU time / requests completed.  Scenario 1 also "
        "gives the stime part alone (the kernel's).",
        f"Machine activity: {noise.describe((finished - started).total_seconds())}",
    ]
    path = out_dir / f"{stem}.md"
    report.write_results(path, started=started, finished=finished, facts=facts, method=method, sections=sections)
    shutil.rmtree(run_dir, ignore_errors=True)
    log(f"wrote {path}")
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
