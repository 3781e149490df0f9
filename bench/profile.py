"""Where muxproxy's CPU goes under scenario 1's mux load: a sampling profile.

    python -m bench.profile                    # C=1 K=100, 100-byte responses, 12 s, py-spy
    python -m bench.profile --profiler perf    # the compiled build, with Linux perf
    python -m bench.profile --profiler perf --call-graph   # and charged to muxproxy's functions
    python -m bench.profile --profiler none    # CPU and req/s only, for A/B runs
    python -m bench.profile --in-flight 10 --path /10k --seconds 20
    python -m bench.profile --plain 100 --profiler perf   # the plain HTTP/1.1 proxy under wrk -c100

Strategy: the same servers as `python -m bench` (the benchmark's nginx
origin and muxproxy config, bench/configs/), pinned the same way.  The mux
load client warms the pool for 3 s, then runs for --seconds while the
profiler samples muxproxy; then the profile is summarised.  Before it this
prints muxproxy's CPU time per inner request from /proc, split into user
space (the interpreter and the C extensions) and kernel (system calls).
With --plain N, wrk drives muxproxy's plain HTTP/1.1 proxy over N
connections instead (scenario 1's "muxproxy (plain HTTP/1.1 proxy)" row),
and the figures are per request.

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

--call-graph (with --profiler perf) records call stacks too (`perf record
--call-graph dwarf`, at half the rate: each sample copies 16 KiB of stack)
and adds two tables that say which of muxproxy's own functions the time is
spent for.  Each sample is charged to the innermost compiled function on its
stack, whatever it was running at that instant (the kernel's `write`, the
allocator, llhttp): "self", split into kernel and user space; and to every
compiled function on its stack: "inclusive", the cost of a whole path such
as an origin connection's `data_received`.  Both are also given in µs per
inner request (the share times the CPU per request measured beside it).
Samples with no compiled function on the stack are the event loop's own
(epoll, uvloop's callbacks) or the pure-Python build's.

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

from bench.compiled import mux_client
from bench.loads import parse_wrk
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


def cpu_line(user_s: float, kernel_s: float, requests: int, profiled: bool = True,
             unit: str = "inner request") -> str:
    """muxproxy's CPU per (inner) request, split into user space and kernel."""
    if not requests:
        return f"CPU per {unit}: no requests completed"
    user, kernel = user_s / requests * 1e6, kernel_s / requests * 1e6
    label = " (under the profiler)" if profiled else ""
    return (f"CPU per {unit}{label}: {user + kernel:.1f} µs = "
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


#: Call-graph sampling rate: each sample copies 16 KiB of muxproxy's stack for
#: perf to unwind (DWARF: the interpreter keeps no frame pointers), so at half
#: PERF_FREQUENCY 12 s of load make about 100 MB of perf.data.
PERF_CALL_GRAPH_FREQUENCY = 499
PERF_STACK_BYTES = 16384
#: mypyc names the C function of a compiled Python function
#: CPyDef_<module>___<class>___<name> (CPyPy_ for its Python-callable wrapper,
#: the same function); its runtime helpers (CPyTagged_Add, CPyList_GetItem...)
#: have other prefixes and are not muxproxy's functions.
_COMPILED_FUNCTION = re.compile(r"^CPy(?:Def|Py)_(\w+)$")
#: One frame of `perf script -F ip,sym,dso` output: "\t  1a9e52 PyObject_IsTrue (/usr/lib/libpython3.11.so)".
_SCRIPT_FRAME = re.compile(r"^\s+[0-9a-f]+ (.+) \((.*)\)$")
NO_COMPILED_FUNCTION = "(no compiled function on the stack: the event loop's own work)"


def compiled_function_name(symbol: str) -> str | None:
    """mypyc's C name of a compiled function -> "module.Class.name"; None
    for any other symbol."""
    match = _COMPILED_FUNCTION.match(symbol)
    return ".".join(match.group(1).split("___")) if match else None


def perf_script_samples(text: str) -> list[list[tuple[str, str]]]:
    """The stacks in `perf script` output, innermost frame first, each frame
    (symbol, binary); an inlined frame takes the binary of the frame it was
    inlined into (perf prints "inlined" for it, at the same address)."""
    samples: list[list[tuple[str, str]]] = []
    frames: list[tuple[str, str]] = []
    for line in text.splitlines() + [""]:
        match = _SCRIPT_FRAME.match(line)
        if match:
            frames.append((match.group(1), match.group(2)))
            continue
        # A blank line or a sample's header line ends the stack before it.
        if frames:
            binary = ""
            for index in range(len(frames) - 1, -1, -1):  # outermost first, so inlined frames find theirs
                symbol, dso = frames[index]
                if dso == "inlined":
                    frames[index] = (symbol, binary)
                else:
                    binary = dso
            samples.append(frames)
            frames = []
    return samples


def summarise_callers(script_text: str, top: int, cpu_us_per_request: float | None) -> str:
    """Samples charged to muxproxy's compiled functions: the innermost one on
    each stack (self, split into kernel and user space) and every one on it
    (inclusive); in shares and, given the CPU per inner request, in µs."""
    own_kernel: collections.Counter = collections.Counter()
    own_user: collections.Counter = collections.Counter()
    anywhere: collections.Counter = collections.Counter()
    samples = perf_script_samples(script_text)
    for frames in samples:
        names = [name for symbol, _ in frames if (name := compiled_function_name(symbol))]
        owner = names[0] if names else NO_COMPILED_FUNCTION
        leaf_binary = frames[0][1]
        (own_kernel if binary_kind(leaf_binary) == "kernel" else own_user)[owner] += 1
        for name in set(names) or {NO_COMPILED_FUNCTION}:
            anywhere[name] += 1
    total = len(samples)
    if not total:
        return "no samples with call stacks"

    def per_request(count: int) -> str:
        return f"{count / total * cpu_us_per_request:7.2f}" if cpu_us_per_request else "      -"

    lines = [
        f"\n{total} samples with call stacks, charged to muxproxy's compiled functions "
        "(µs: per inner request, of the CPU per request above)",
        "\nself (the innermost compiled function on the stack, with what it called):",
        "  all %  kernel %  user %     µs  function",
    ]
    owners = own_kernel + own_user
    for name, count in owners.most_common(top):
        lines.append(f"{100 * count / total:7.1f}  {100 * own_kernel[name] / total:8.1f}  "
                     f"{100 * own_user[name] / total:6.1f}  {per_request(count)}  {name}")
    lines += ["\ninclusive (the function anywhere on the stack):", "  all %     µs  function"]
    for name, count in anywhere.most_common(top):
        lines.append(f"{100 * count / total:7.1f}  {per_request(count)}  {name}")
    return "\n".join(lines)


def load_command(args: argparse.Namespace, port: int):
    """duration in seconds -> the load's command line: the mux load client,
    or wrk against the plain proxy with --plain."""
    if args.plain:
        url = f"http://127.0.0.1:{port}{args.path}"
        # wrk takes whole seconds; one thread, as in the benchmark (bench/loads.py).
        return lambda seconds: [shutil.which("wrk") or "wrk", "-t1", f"-c{args.plain}",
                                f"-d{max(1, round(seconds))}s", url]
    client = mux_client().argv("--port", str(port), "--path", args.path,
                               "--connections", str(args.connections), "--in-flight", str(args.in_flight))
    return lambda seconds: client + ["--duration", str(seconds)]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=12.0, help="measured load, after a 3 s warm-up")
    parser.add_argument("--connections", type=int, default=1, help="outer connections (C)")
    parser.add_argument("--in-flight", type=int, default=100, help="inner requests in flight each (K)")
    parser.add_argument("--path", default="/100b", help="origin file: /100b or /10k")
    parser.add_argument("--plain", type=int, metavar="N", default=0,
                        help="drive the plain HTTP/1.1 proxy with wrk over N connections instead of the mux stream")
    parser.add_argument("--top", type=int, default=25, help="functions listed per table")
    parser.add_argument("--profiler", choices=("py-spy", "perf", "none"), default="py-spy",
                        help="py-spy (Python frames), perf (C functions: the compiled build) or none")
    parser.add_argument("--call-graph", action="store_true",
                        help="with --profiler perf: call stacks too, and the time charged to muxproxy's functions")
    args = parser.parse_args()
    if args.call_graph and args.profiler != "perf":
        parser.error("--call-graph needs --profiler perf")
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
        load = load_command(args, proxy.port)
        subprocess.run(pinned(load(WARMUP_S), place.load_core), check=True, stdout=subprocess.DEVNULL)
        tree = served_process.pids()
        served = tree[1:] if tool == "py-spy" else tree  # muxproxy, without py-spy
        if tool == "perf":
            # Pinned beside the load, so that the profiler takes no time from muxproxy's core.
            with open(run_dir / "perf.log", "wb") as perf_log:
                sampling = (["--call-graph", f"dwarf,{PERF_STACK_BYTES}", "-F", str(PERF_CALL_GRAPH_FREQUENCY)]
                            if args.call_graph else ["-F", str(PERF_FREQUENCY)])
                recorder = subprocess.Popen(
                    pinned([program, "record", "-q", *sampling, "-o", str(perf_data),
                            "-p", ",".join(map(str, served))], place.load_core),
                    stdout=subprocess.DEVNULL, stderr=perf_log)
            time.sleep(0.5)  # perf attaches before the load starts
        user_before, kernel_before = cpu_times(served)
        result = subprocess.run(pinned(load(args.seconds), place.load_core), check=True,
                                capture_output=True, text=True)
        user_after, kernel_after = cpu_times(served)
        figures = parse_wrk(result.stdout) if args.plain else json.loads(result.stdout)
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
    load_name = f"wrk -c{args.plain}" if args.plain else f"C={args.connections} K={args.in_flight}"
    print(f"load: {load_name} {args.path}: "
          f"{figures['rps']:,.0f} {'' if args.plain else 'inner '}requests/s over {figures['elapsed_s']:.1f} s, "
          f"errors {figures['errors']}")
    user_s, kernel_s = user_after - user_before, kernel_after - kernel_before
    print(cpu_line(user_s, kernel_s, figures["requests"], tool is not None,
                   unit="request" if args.plain else "inner request"))
    cpu_us_per_request = (user_s + kernel_s) / figures["requests"] * 1e6 if figures["requests"] else None
    if tool == "py-spy":
        print(summarise(raw, args.top))
        print(f"\nraw stacks (for flamegraph.pl): {raw}")
    elif tool == "perf":
        report = subprocess.run([program, "report", "-i", str(perf_data), "--stdio", "--no-children",
                                 "--sort", "dso,sym", *(["-g", "none"] if args.call_graph else [])],
                                check=True, capture_output=True, text=True)
        print(summarise_perf(report.stdout, args.top))
        if args.call_graph:
            script = subprocess.run([program, "script", "-i", str(perf_data), "-F", "ip,sym,dso"],
                                    check=True, capture_output=True, text=True)
            print(summarise_callers(script.stdout, args.top, cpu_us_per_request))
        print(f"\nperf.data (for perf report): {perf_data}")
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
