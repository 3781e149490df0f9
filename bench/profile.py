"""Where muxproxy's CPU goes under scenario 1's mux load: a py-spy profile.

    python -m bench.profile                    # C=1 K=100, 100-byte responses, 12 s
    python -m bench.profile --in-flight 10 --path /10k --seconds 20

Strategy: the same servers as `python -m bench` (the benchmark's nginx
origin and muxproxy config, bench/configs/), pinned the same way, with
muxproxy started under `py-spy record` (sampling at 250 Hz, raw stacks).
The mux load client warms the pool for 3 s, then runs for --seconds; then
muxproxy gets SIGINT, py-spy writes its stacks, and this prints the share
of samples per function, twice:

- self: the function on top of the stack.  C code it calls (a socket write,
  httptools parsing) is counted in it, because py-spy sees only Python
  frames; the event loop's own work (epoll, reads) shows as Runner.run;
- inclusive: the function anywhere on the stack.

Before them it prints muxproxy's CPU time per inner request from /proc,
split into user space (the interpreter and the C extensions) and kernel
(system calls): py-spy cannot tell the two apart within a function.

It needs py-spy (`pip install py-spy`); like the benchmark, it installs
nothing and stops what it started by PID.

The compiled build's functions are C functions, not Python frames, so
py-spy folds them into their nearest interpreted caller.  Profile the
pure-Python build with it (MUXPROXY_PURE_PYTHON=1 pip install -e .), or the
compiled one with Linux perf against the muxproxy PID
(`perf record --call-graph dwarf -p PID`; mypyc names its functions
`CPyDef_<module>___<function>`), as README.md's profile of 2026-12-06 did.
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


def cpu_line(user_s: float, kernel_s: float, requests: int) -> str:
    """muxproxy's CPU per inner request, split into user space and kernel."""
    if not requests:
        return "CPU per inner request: no requests completed"
    user, kernel = user_s / requests * 1e6, kernel_s / requests * 1e6
    return (f"CPU per inner request (under the profiler): {user + kernel:.1f} µs = "
            f"{user:.1f} user space + {kernel:.1f} kernel")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=12.0, help="measured load, after a 3 s warm-up")
    parser.add_argument("--connections", type=int, default=1, help="outer connections (C)")
    parser.add_argument("--in-flight", type=int, default=100, help="inner requests in flight each (K)")
    parser.add_argument("--path", default="/100b", help="origin file: /100b or /10k")
    parser.add_argument("--top", type=int, default=25, help="functions listed per table")
    args = parser.parse_args()
    pyspy = shutil.which("py-spy")
    if pyspy is None:
        print("py-spy is needed: python3 -m pip install py-spy", file=sys.stderr)
        return 2

    place = Placement.for_this_machine()
    place.pin_self()
    run_dir = Path(tempfile.mkdtemp(prefix="muxproxy-profile-"))
    raw = run_dir / "pyspy.txt"
    origin = NginxOrigin("origin", run_dir, core=place.load_core)
    proxy = MuxProxy("muxproxy", run_dir, core=place.server_core, origin_port=0)
    started: list = []
    try:
        origin.start()
        started.append(origin)
        proxy.origin_port = origin.port
        argv = [pyspy, "record", "-r", str(SAMPLE_RATE), "--format", "raw", "-o", str(raw), "--", *proxy.argv()]
        profiled = Process("muxproxy under py-spy", argv, core=place.server_core, log_path=run_dir / "pyspy.log")
        profiled.start(proxy.port)
        started.append(profiled)
        load = [sys.executable, "-m", "bench.clients.muxload", "--port", str(proxy.port), "--path", args.path,
                "--connections", str(args.connections), "--in-flight", str(args.in_flight)]
        subprocess.run(pinned(load + ["--duration", str(WARMUP_S)], place.load_core), check=True, stdout=subprocess.DEVNULL)
        served = profiled.pids()[1:]  # muxproxy, without py-spy
        user_before, kernel_before = cpu_times(served)
        result = subprocess.run(pinned(load + ["--duration", str(args.seconds)], place.load_core), check=True,
                                capture_output=True, text=True)
        user_after, kernel_after = cpu_times(served)
        figures = json.loads(result.stdout)
        # SIGINT to muxproxy (py-spy's child) only: it exits, and py-spy then
        # writes the stacks and exits by itself.
        for pid in profiled.pids()[1:]:
            os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + 30
        while profiled.is_running() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        for process in reversed(started):
            process.stop()
    print(f"load: C={args.connections} K={args.in_flight} {args.path}: "
          f"{figures['rps']:,.0f} inner requests/s over {figures['elapsed_s']:.1f} s, errors {figures['errors']}")
    print(cpu_line(user_after - user_before, kernel_after - kernel_before, figures["requests"]))
    print(summarise(raw, args.top))
    print(f"\nraw stacks (for flamegraph.pl): {raw}")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
