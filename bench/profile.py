"""Where muxproxy's CPU goes under scenario 1's mux load: a sampling profile.

    python -m bench.profile                    # C=1 K=100, 100-byte responses, 12 s, py-spy
    python -m bench.profile --profiler perf    # the compiled build, with Linux perf
    python -m bench.profile --profiler none    # CPU and req/s only, for A/B runs
    python -m bench.profile --in-flight 10 --path /10k --seconds 20

Strategy: the same servers as `python -m bench` (the benchmark's nginx
origin and muxproxy config, bench/configs/), pinned the same way.  The mux
load client warms the pool for 3 s, then runs for --seconds while the
profiler samples muxproxy; then the profile is summarised.  Before it this
prints muxproxy's CPU time per inner request from /proc, split into user
space (the interpreter and the C extensions) and kernel (system calls).

--profiler py-spy (the default; `pip install py-spy`) starts muxproxy under
`py-spy record` (250 Hz, raw stacks) and prints the share of samples per
Python function, twice:

- self: the function on top of the stack.  C code it calls (a socket write,
  httptools parsing) is counted in it, because py-spy sees only Python
  frames; the event loop's own work (epoll, reads) shows as Runner.run;
- inclusive: the function anywhere on the stack.

The compiled build's functions are C functions, not Python frames, so
py-spy folds them into their nearest interpreted caller.  Profile the
pure-Python build with it (MUXPROXY_PURE_PYTHON=1 pip install -e .), or the
compiled one with

--profiler perf (Debian's linux-perf), which attaches `perf record` to the
running muxproxy for the measured load only and prints the share of
samples by binary (the kernel, the Python runtime, the compiled modules,
httptools, ...) and by C function (mypyc names its functions
`CPyDef_<module>___<function>`; a function it inlined is counted in its
caller).  perf.data stays in the printed directory for `perf report`.

--profiler none samples nothing: the figures are then the load's own, for
comparing two builds in interleaved runs.

Like the benchmark, it installs nothing and stops what it started by PID.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.machine import Placement
from bench.peers import MuxProxy, NginxOrigin
from bench.procs import Process, cpu_times, pinned

SAMPLE_RATE = 250
WARMUP_S = 3.0
_FRAME = re.compile(r"(.*) \((.*):\d+\)$")
_LIBRARY = re.compile(r"^.*/(?:site-packages|lib/python3\.\d+)/")


def function_name(frame: str) -> str:
    """"name (path:line)" -> "name (short path)"."""
    match = _FRAME.match(frame)
    if not match:
        return frame
    name, path = match.groups()
    path = _LIBRARY.sub("", path)  # asyncio/runners.py, uvloop/__init__.py
    return f"{name} ({Path(path).name if path.startswith('/') else path})"


def summarise(raw: Path, top: int) -> str:
    """The self and inclusive shares of py-spy's raw output."""
    own: collections.Counter = collections.Counter()
    anywhere: collections.Counter = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        if not line.strip():
            continue
        stack, count = line.rsplit(" ", 1)
        samples = int(count)
        total += samples
        frames = [function_name(frame) for frame in stack.split(";")]
        own[frames[-1]] += samples
        for name in set(frames):
            anywhere[name] += samples
    if not total:
        return "no samples"
    lines = [f"{total} samples"]
    for title, counter in (("self", own), ("inclusive", anywhere)):
        lines.append(f"\n{title}:")
        lines += [f"{100 * n / total:5.1f} %  {name}" for name, n in counter.most_common(top)]
    return "\n".join(lines)


def cpu_line(user_s: float, kernel_s: float, requests: int, profiled: bool = True) -> str:
    """muxproxy's CPU per inner request, split into user space and kernel."""
    if not requests:
        return "CPU per inner request: no requests completed"
    user, kernel = user_s / requests * 1e6, kernel_s / requests * 1e6
    label = " (under the profiler)" if profiled else ""
    return (f"CPU per inner request{label}: {user + kernel:.1f} µs = "
            f"{user:.1f} user space + {kernel:.1f} kernel")


PERF_FREQUENCY = 999  # Hz: enough samples in 12 s, little overhead, not a multiple of the timer tick
_PERF_LINE = re.compile(r"^\s*([\d.]+)%\s+(.*)$")


def binary_kind(dso: str) -> str:
    """perf's binary name -> the part of the stack it is."""
    if dso.startswith("[kernel"):
        return "kernel"
    if dso.startswith("["):  # [vdso], [unknown]
        return dso
    name = Path(dso).name
    if name.startswith("libpython") or name.startswith("python"):
        return "Python runtime"
    if "mypyc" in name:
        return "muxproxy, compiled"
    # perf names a binary by its file name: httptools' are parser.* and
    # url_parser.* (muxproxy's own response_parser.* is a small shim), uvloop's loop.*.
    if name.startswith(("parser.cpython", "url_parser.cpython")):
        return "httptools (llhttp)"
    if name.startswith("loop.cpython"):
        return "uvloop (libuv)"
    if name.startswith("libc") or name.startswith("ld-linux"):
        return "libc"
    return name


def summarise_perf(report_text: str, top: int) -> str:
    """The shares of `perf report --sort dso,sym` text, by binary and by function."""
    by_kind: collections.Counter = collections.Counter()
    functions: list[tuple[float, str]] = []
    for line in report_text.splitlines():
        match = _PERF_LINE.match(line)
        if not match:
            continue
        share, rest = float(match.group(1)), match.group(2).split()
        if len(rest) < 3:
            continue
        dso, symbol = rest[0], " ".join(rest[2:])  # "dso  [.]|[k]  symbol"
        by_kind[binary_kind(dso)] += share
        functions.append((share, f"{symbol}  ({Path(dso).name})"))
    if not functions:
        return "no samples"
    lines = ["by binary:"]
    lines += [f"{share:5.1f} %  {kind}" for kind, share in by_kind.most_common()]
    lines.append("\nself, by function:")
    lines += [f"{share:5.1f} %  {name}" for share, name in sorted(functions, reverse=True)[:top]]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=12.0, help="measured load, after a 3 s warm-up")
    parser.add_argument("--connections", type=int, default=1, help="outer connections (C)")
    parser.add_argument("--in-flight", type=int, default=100, help="inner requests in flight each (K)")
    parser.add_argument("--path", default="/100b", help="origin file: /100b or /10k")
    parser.add_argument("--top", type=int, default=25, help="functions listed per table")
    parser.add_argument("--profiler", choices=("py-spy", "perf", "none"), default="py-spy",
                        help="py-spy (Python frames), perf (C functions: the compiled build) or none")
    args = parser.parse_args()
    tool = {"py-spy": "py-spy", "perf": "perf", "none": None}[args.profiler]
    program = shutil.which(tool) if tool else None
    if tool and program is None:
        hint = "python3 -m pip install py-spy" if tool == "py-spy" else "apt-get install linux-perf"
        print(f"{tool} is needed: {hint}", file=sys.stderr)
        return 2

    place = Placement.for_this_machine()
    place.pin_self()
    run_dir = Path(tempfile.mkdtemp(prefix="muxproxy-profile-"))
    raw = run_dir / "pyspy.txt"
    perf_data = run_dir / "perf.data"
    origin = NginxOrigin("origin", run_dir, core=place.load_core)
    proxy = MuxProxy("muxproxy", run_dir, core=place.server_core, origin_port=0)
    started: list = []
    recorder: subprocess.Popen | None = None
    try:
        origin.start()
        started.append(origin)
        proxy.origin_port = origin.port
        argv = proxy.argv()
        if tool == "py-spy":
            argv = [program, "record", "-r", str(SAMPLE_RATE), "--format", "raw", "-o", str(raw), "--", *argv]
        served_process = Process("muxproxy", argv, core=place.server_core, log_path=run_dir / "muxproxy.log")
        served_process.start(proxy.port)
        started.append(served_process)
        load = [sys.executable, "-m", "bench.clients.muxload", "--port", str(proxy.port), "--path", args.path,
                "--connections", str(args.connections), "--in-flight", str(args.in_flight)]
        subprocess.run(pinned(load + ["--duration", str(WARMUP_S)], place.load_core), check=True, stdout=subprocess.DEVNULL)
        tree = served_process.pids()
        served = tree[1:] if tool == "py-spy" else tree  # muxproxy, without py-spy
        if tool == "perf":
            # Pinned beside the load, so that the profiler takes no time from muxproxy's core.
            with open(run_dir / "perf.log", "wb") as perf_log:
                recorder = subprocess.Popen(
                    pinned([program, "record", "-q", "-F", str(PERF_FREQUENCY), "-o", str(perf_data),
                            "-p", ",".join(map(str, served))], place.load_core),
                    stdout=subprocess.DEVNULL, stderr=perf_log)
            time.sleep(0.5)  # perf attaches before the load starts
        user_before, kernel_before = cpu_times(served)
        result = subprocess.run(pinned(load + ["--duration", str(args.seconds)], place.load_core), check=True,
                                capture_output=True, text=True)
        user_after, kernel_after = cpu_times(served)
        figures = json.loads(result.stdout)
        if recorder is not None:
            recorder.send_signal(signal.SIGINT)  # perf writes perf.data and exits
            recorder.wait(timeout=60)
            recorder = None
        if tool == "py-spy":
            # SIGINT to muxproxy (py-spy's child) only: it exits, and py-spy then
            # writes the stacks and exits by itself.
            for pid in served:
                os.kill(pid, signal.SIGINT)
            deadline = time.monotonic() + 30
            while served_process.is_running() and time.monotonic() < deadline:
                time.sleep(0.1)
    finally:
        if recorder is not None:
            recorder.kill()
            recorder.wait()
        for process in reversed(started):
            process.stop()
    print(f"load: C={args.connections} K={args.in_flight} {args.path}: "
          f"{figures['rps']:,.0f} inner requests/s over {figures['elapsed_s']:.1f} s, errors {figures['errors']}")
    print(cpu_line(user_after - user_before, kernel_after - kernel_before, figures["requests"], tool is not None))
    if tool == "py-spy":
        print(summarise(raw, args.top))
        print(f"\nraw stacks (for flamegraph.pl): {raw}")
    elif tool == "perf":
        report = subprocess.run([program, "report", "-i", str(perf_data), "--stdio", "--no-children",
                                 "--sort", "dso,sym"],
                                check=True, capture_output=True, text=True)
        print(summarise_perf(report.stdout, args.top))
        print(f"\nperf.data (for perf report): {perf_data}")
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
